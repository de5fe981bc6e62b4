# Shape / texture bias (docs/evaluations.md §5) on the cue-conflict stimuli: 16-class decisions
# from the cached ImageNet-1k logits. Its record: beyond_imagenet/evaluations/shape_bias.py.


rule compute_shape_bias:
    input:
        **table_inputs("shape_bias"),
    output:
        f"{RESULTS}/metrics/shape_bias.csv",
        comparisons=comparisons_output("shape_bias"),
    params:
        **table_params("shape_bias"),
    log:
        f"{RESULTS}/logs/compute_shape_bias.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/compute_table.py"


if plot_items("shape_bias"):

    # Every figure of the evaluation in one job (rules/common.smk: plot_items).
    rule plot_shape_bias:
        input:
            plot_inputs("shape_bias"),
        output:
            plot_outputs("shape_bias"),
        params:
            figures=plot_params("shape_bias"),
        log:
            f"{RESULTS}/logs/plot_shape_bias.log",
        conda:
            "../envs/analysis.yaml"
        script:
            "../scripts/plot_figure.py"


register_evaluation("shape_bias")

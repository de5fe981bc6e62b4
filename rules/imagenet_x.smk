# Types of mistakes (docs/evaluations.md §2): ImageNet-X error ratios per factor, from the
# ImageNet val outputs joined with the imagenet-x package's annotations (no extraction of its own).
# Its record: beyond_imagenet/evaluations/imagenet_x.py.


rule compute_imagenet_x:
    input:
        **table_inputs("imagenet_x"),
    output:
        f"{RESULTS}/metrics/imagenet_x.csv",
        comparisons=comparisons_output("imagenet_x"),
    params:
        **table_params("imagenet_x"),
    log:
        f"{RESULTS}/logs/compute_imagenet_x.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/compute_table.py"


if plot_items("imagenet_x"):

    # Every figure of the evaluation in one job (rules/common.smk: plot_items).
    rule plot_imagenet_x:
        input:
            plot_inputs("imagenet_x"),
        output:
            plot_outputs("imagenet_x"),
        params:
            figures=plot_params("imagenet_x"),
        log:
            f"{RESULTS}/logs/plot_imagenet_x.log",
        conda:
            "../envs/analysis.yaml"
        script:
            "../scripts/plot_figure.py"


register_evaluation("imagenet_x")

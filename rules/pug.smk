# Synthetic data (docs/evaluations.md §3): PUG-ImageNet accuracy per factor subset, from the cached
# ImageNet-1k logits and the dataset's class_to_imagenet_idx.json. Its record:
# beyond_imagenet/evaluations/pug.py.


rule compute_pug:
    input:
        **table_inputs("pug"),
    output:
        f"{RESULTS}/metrics/pug.csv",
        comparisons=comparisons_output("pug"),
    params:
        **table_params("pug"),
    log:
        f"{RESULTS}/logs/compute_pug.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/compute_table.py"


if plot_items("pug"):

    # Every figure of the evaluation in one job (rules/common.smk: plot_items).
    rule plot_pug:
        input:
            plot_inputs("pug"),
        output:
            plot_outputs("pug"),
        params:
            figures=plot_params("pug"),
        log:
            f"{RESULTS}/logs/plot_pug.log",
        conda:
            "../envs/analysis.yaml"
        script:
            "../scripts/plot_figure.py"


register_evaluation("pug")

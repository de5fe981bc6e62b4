# Robustness (docs/evaluations.md §6): top-1 on ImageNet and the shifted sets from the cached
# ImageNet-1k logits (ImageNet-ReaL re-scores the ImageNet val outputs: no extraction of its own).
# Its record, scorers and figure: beyond_imagenet/evaluations/robustness.py.


rule compute_robustness:
    input:
        **table_inputs("robustness"),
    output:
        f"{RESULTS}/metrics/robustness.csv",
        comparisons=comparisons_output("robustness"),
    params:
        **table_params("robustness"),
    log:
        f"{RESULTS}/logs/compute_robustness.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/compute_table.py"


if plot_items("robustness"):

    # Every figure of the evaluation in one job (rules/common.smk: plot_items).
    rule plot_robustness:
        input:
            plot_inputs("robustness"),
        output:
            plot_outputs("robustness"),
        params:
            figures=plot_params("robustness"),
        log:
            f"{RESULTS}/logs/plot_robustness.log",
        conda:
            "../envs/analysis.yaml"
        script:
            "../scripts/plot_figure.py"


register_evaluation("robustness")

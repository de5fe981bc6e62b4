# Calibration (docs/evaluations.md §4): ECE, MCE and reliability bins from the cached logits
# (ImageNet-R/A masked to their 200 classes before the softmax). Its record, table and figures:
# beyond_imagenet/evaluations/calibration.py.


rule compute_calibration:
    input:
        **table_inputs("calibration"),
    output:
        f"{RESULTS}/metrics/calibration.csv",
        comparisons=comparisons_output("calibration"),
    params:
        **table_params("calibration"),
    log:
        f"{RESULTS}/logs/compute_calibration.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/compute_table.py"


if plot_items("calibration"):

    # Every figure of the evaluation in one job (rules/common.smk: plot_items).
    rule plot_calibration:
        input:
            plot_inputs("calibration"),
        output:
            plot_outputs("calibration"),
        params:
            figures=plot_params("calibration"),
        log:
            f"{RESULTS}/logs/plot_calibration.log",
        conda:
            "../envs/analysis.yaml"
        script:
            "../scripts/plot_figure.py"


register_evaluation("calibration")

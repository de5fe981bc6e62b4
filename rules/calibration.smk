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


rule plot_reliability:
    input:
        figure_input("calibration", "reliability"),
    output:
        **figure_files("calibration", "reliability"),
    params:
        **figure_params("calibration", "reliability"),
    log:
        figure_log("calibration", "reliability"),
    wildcard_constraints:
        **figure_wildcards("calibration", "reliability"),
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/plot_figure.py"


rule plot_confidence:
    input:
        figure_input("calibration", "confidence"),
    output:
        **figure_files("calibration", "confidence"),
    params:
        **figure_params("calibration", "confidence"),
    log:
        figure_log("calibration", "confidence"),
    wildcard_constraints:
        **figure_wildcards("calibration", "confidence"),
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/plot_figure.py"


register_evaluation("calibration")

# Clean ImageNet accuracy and calibration (spec/evaluations.md sections 1 and 4).
# Each evaluation lives in its own rules/<evaluation>.smk: metric rules, figure rules, targets.


rule compute_accuracy:
    input:
        outputs=outputs_for("accuracy"),
        manifests=manifests_for("accuracy"),
    output:
        f"{RESULTS}/metrics/accuracy.csv",
    params:
        models=MODEL_COLUMNS,
    log:
        f"{RESULTS}/logs/compute_accuracy.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/compute_accuracy.py"


rule compute_calibration:
    input:
        outputs=outputs_for("calibration"),
        manifests=manifests_for("calibration"),
    output:
        f"{RESULTS}/metrics/calibration.csv",
    params:
        models=MODEL_COLUMNS,
        n_bins=config["evaluations"].get("calibration", {}).get("n_bins", 15),
    log:
        f"{RESULTS}/logs/compute_calibration.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/compute_calibration.py"


rule plot_reliability:
    input:
        f"{RESULTS}/metrics/calibration.csv",
    output:
        png=report(f"{RESULTS}/figures/reliability_{{dataset}}.png", category="Calibration",
                   caption="../report/reliability.rst"),
        pdf=f"{RESULTS}/figures/reliability_{{dataset}}.pdf",
    log:
        f"{RESULTS}/logs/plot_reliability/{{dataset}}.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/plot_calibration.py"


rule plot_confidence:
    input:
        f"{RESULTS}/metrics/calibration.csv",
    output:
        png=report(f"{RESULTS}/figures/confidence_{{dataset}}.png", category="Calibration",
                   caption="../report/confidence.rst"),
        pdf=f"{RESULTS}/figures/confidence_{{dataset}}.pdf",
    log:
        f"{RESULTS}/logs/plot_confidence/{{dataset}}.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/plot_calibration.py"


if "accuracy" in STUDY.evaluations:
    register_targets(STUDY.metric("accuracy"))
if "calibration" in STUDY.evaluations:
    register_targets(STUDY.metric("calibration"), *calibration_figures())

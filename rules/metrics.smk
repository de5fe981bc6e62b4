# Metrics: pure functions over cached outputs -> tidy tables in results/metrics/.


rule compute_accuracy:
    input:
        outputs=outputs_for("accuracy"),
        manifests=manifests_for("accuracy"),
    output:
        f"{RESULTS}/metrics/accuracy.csv",
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
        n_bins=config["evaluations"].get("calibration", {}).get("n_bins", 15),
    log:
        f"{RESULTS}/logs/compute_calibration.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/compute_calibration.py"

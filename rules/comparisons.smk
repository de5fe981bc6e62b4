# Model against model (docs/evaluations.md §11): every compute job writes the paired differences of
# its headlines (results/metrics/comparisons/<evaluation>.csv); one table and one figure of all.
COMPARISON_TABLES = {e: comparisons_output(e) for e in comparison_evaluations()}


rule compute_comparisons:
    input:
        **COMPARISON_TABLES,
    output:
        report(f"{RESULTS}/metrics/comparisons.csv", category="Model profile", caption="../report/comparisons.rst"),
    log:
        f"{RESULTS}/logs/compute_comparisons.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/compute_comparisons.py"


rule plot_comparisons:
    input:
        f"{RESULTS}/metrics/comparisons.csv",
    output:
        png=report(f"{RESULTS}/figures/comparisons.png", category="Model profile", caption="../report/comparisons.rst"),
        pdf=f"{RESULTS}/figures/comparisons.pdf",
    params:
        title=f"Model against model: study {config['study']}",
    log:
        f"{RESULTS}/logs/plot_comparisons.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/plot_comparisons.py"


if COMPARISON_TABLES:
    register_targets(STUDY.metric("comparisons"), STUDY.figure("comparisons", "png"),
                     STUDY.figure("comparisons", "pdf"))

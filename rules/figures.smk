# Figures: one rule per figure kind, each figure its own target, drawn from the metric tables.


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

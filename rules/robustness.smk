# Robustness (spec/evaluations.md section 6): top-1 on ImageNet and the shifted sets from the cached
# ImageNet-1k logits (ImageNet-ReaL re-scores the ImageNet val outputs: no extraction of its own).


rule compute_robustness:
    input:
        outputs=outputs_for("robustness"),
        manifests=manifests_for("robustness"),
    output:
        f"{RESULTS}/metrics/robustness.csv",
    params:
        models=MODEL_COLUMNS,
        settings=config["evaluations"].get("robustness", {}),
    log:
        f"{RESULTS}/logs/compute_robustness.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/compute_robustness.py"


rule plot_robustness:
    input:
        f"{RESULTS}/metrics/robustness.csv",
    output:
        png=report(f"{RESULTS}/figures/robustness.png", category="Robustness",
                   caption="../report/robustness.rst"),
        pdf=f"{RESULTS}/figures/robustness.pdf",
    log:
        f"{RESULTS}/logs/plot_robustness.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/plot_imagenet_evals.py"


if "robustness" in STUDY.evaluations:
    register_targets(STUDY.metric("robustness"), STUDY.figure("robustness", "png"), STUDY.figure("robustness", "pdf"))

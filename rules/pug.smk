# Synthetic data (spec/evaluations.md section 3): PUG-ImageNet accuracy per factor subset, from the
# cached ImageNet-1k logits and the dataset's class_to_imagenet_idx.json.


rule compute_pug:
    input:
        outputs=outputs_for("pug"),
        manifests=manifests_for("pug"),
    output:
        f"{RESULTS}/metrics/pug.csv",
    params:
        models=MODEL_COLUMNS,
        settings=config["evaluations"].get("pug", {}),
    log:
        f"{RESULTS}/logs/compute_pug.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/compute_pug.py"


rule plot_pug:
    input:
        f"{RESULTS}/metrics/pug.csv",
    output:
        png=report(f"{RESULTS}/figures/pug_{{dataset}}.png", category="PUG-ImageNet",
                   caption="../report/pug.rst"),
        pdf=f"{RESULTS}/figures/pug_{{dataset}}.pdf",
    log:
        f"{RESULTS}/logs/plot_pug/{{dataset}}.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/plot_imagenet_evals.py"


if "pug" in STUDY.evaluations:
    register_targets(STUDY.metric("pug"), *per_dataset_figures("pug", "pug"))

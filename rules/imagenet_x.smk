# Types of mistakes (spec/evaluations.md section 2): ImageNet-X error ratios per factor, from the
# ImageNet val outputs joined with the imagenet-x package's annotations (no extraction of its own).


rule compute_imagenet_x:
    input:
        outputs=outputs_for("imagenet_x"),
        manifests=manifests_for("imagenet_x"),
    output:
        f"{RESULTS}/metrics/imagenet_x.csv",
    params:
        models=MODEL_COLUMNS,
    log:
        f"{RESULTS}/logs/compute_imagenet_x.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/compute_imagenet_x.py"


rule plot_imagenet_x:
    input:
        f"{RESULTS}/metrics/imagenet_x.csv",
    output:
        png=report(f"{RESULTS}/figures/imagenet_x_{{dataset}}.png", category="Types of mistakes (ImageNet-X)",
                   caption="../report/imagenet_x.rst"),
        pdf=f"{RESULTS}/figures/imagenet_x_{{dataset}}.pdf",
    log:
        f"{RESULTS}/logs/plot_imagenet_x/{{dataset}}.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/plot_imagenet_evals.py"


if "imagenet_x" in STUDY.evaluations:
    register_targets(STUDY.metric("imagenet_x"), *per_dataset_figures("imagenet_x", "imagenet_x"))

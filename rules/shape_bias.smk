# Shape / texture bias (spec/evaluations.md section 5) on the cue-conflict stimuli: 16-class
# decisions from the cached ImageNet-1k logits.


rule compute_shape_bias:
    input:
        outputs=outputs_for("shape_bias"),
        manifests=manifests_for("shape_bias"),
    output:
        f"{RESULTS}/metrics/shape_bias.csv",
    params:
        models=MODEL_COLUMNS,
    log:
        f"{RESULTS}/logs/compute_shape_bias.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/compute_shape_bias.py"


rule plot_shape_bias:
    input:
        f"{RESULTS}/metrics/shape_bias.csv",
    output:
        png=report(f"{RESULTS}/figures/shape_bias_{{dataset}}.png", category="Shape bias",
                   caption="../report/shape_bias.rst"),
        pdf=f"{RESULTS}/figures/shape_bias_{{dataset}}.pdf",
    log:
        f"{RESULTS}/logs/plot_shape_bias/{{dataset}}.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/plot_imagenet_evals.py"


if "shape_bias" in STUDY.evaluations:
    register_targets(STUDY.metric("shape_bias"), *per_dataset_figures("shape_bias", "shape_bias"))

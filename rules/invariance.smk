# Transformation invariance (spec/evaluations.md section 8): every variant is an extraction
# (outputs/{model}/{dataset}@{variant}.h5, rule extract_variant_outputs in extract.smk); the
# variant equal to the standard evaluation is read from the standard outputs, so no job exists for it.


rule compute_invariance:
    input:
        outputs=STUDY.invariance_inputs(),
        manifests=manifests_for("invariance"),
    output:
        f"{RESULTS}/metrics/invariance.csv",
    params:
        models=MODEL_COLUMNS,
        section=config["evaluations"].get("invariance", {}),
    log:
        f"{RESULTS}/logs/compute_invariance.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/compute_invariance.py"


rule plot_invariance:
    input:
        f"{RESULTS}/metrics/invariance.csv",
    output:
        png=report(f"{RESULTS}/figures/invariance_{{metric}}_{{dataset}}.png", category="Invariance",
                   caption="../report/invariance.rst"),
        pdf=f"{RESULTS}/figures/invariance_{{metric}}_{{dataset}}.pdf",
    log:
        f"{RESULTS}/logs/plot_invariance/{{metric}}_{{dataset}}.log",
    wildcard_constraints:
        metric="top1|true_class_prob",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/plot_invariance.py"


if "invariance" in STUDY.evaluations:
    register_targets(
        STUDY.metric("invariance"),
        *(
            STUDY.figure(f"invariance_{metric}_{d}", ext)
            for d in STUDY.evaluation_datasets("invariance")
            for metric in ("top1", "true_class_prob")
            for ext in ("png", "pdf")
        ),
    )

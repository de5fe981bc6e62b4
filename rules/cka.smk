# Representation similarity (spec/evaluations.md section 9): minibatch linear CKA with the
# unbiased HSIC, online with forward hooks, all models in one job on the same images.


rule compute_cka:
    input:
        manifest=f"{RESULTS}/manifests/{{dataset}}.json",
        heads=[STUDY.head(m) for m, spec in STUDY.models.items() if spec.needs_zero_shot_head],
        weights=[str(spec.checkpoint_path) for spec in STUDY.models.values() if spec.checkpoint],
    output:
        f"{RESULTS}/metrics/cka_{{dataset}}.h5",
    params:
        section=config["evaluations"].get("cka", {}),
        models={m: STUDY.model_identity(m) for m in STUDY.models},
    log:
        f"{RESULTS}/logs/compute_cka/{{dataset}}.log",
    conda:
        "../envs/torch.yaml"
    resources:
        gpu=GPU_SLOTS,
    script:
        "../scripts/compute_cka.py"


rule compute_cka_summary:
    input:
        [f"{RESULTS}/metrics/cka_{d}.h5" for d in STUDY.evaluation_datasets("cka")],
    output:
        report(f"{RESULTS}/metrics/cka.csv", category="Representation similarity",
               caption="../report/cka_summary.rst"),
    params:
        models=MODEL_COLUMNS,
    log:
        f"{RESULTS}/logs/compute_cka_summary.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/compute_cka_summary.py"


rule plot_cka:
    input:
        f"{RESULTS}/metrics/cka_{{dataset}}.h5",
    output:
        png=report(f"{RESULTS}/figures/cka_{{kind}}_{{dataset}}.png", category="Representation similarity",
                   caption="../report/cka.rst"),
        pdf=f"{RESULTS}/figures/cka_{{kind}}_{{dataset}}.pdf",
    log:
        f"{RESULTS}/logs/plot_cka/{{kind}}_{{dataset}}.log",
    wildcard_constraints:
        kind="within|cross",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/plot_cka.py"


if "cka" in STUDY.evaluations:
    register_targets(
        STUDY.metric("cka"),
        *(f"{RESULTS}/metrics/cka_{d}.h5" for d in STUDY.evaluation_datasets("cka")),
        *(
            STUDY.figure(f"cka_{kind}_{d}", ext)
            for d in STUDY.evaluation_datasets("cka")
            for kind in STUDY.cka_figure_kinds()
            for ext in ("png", "pdf")
        ),
    )

# Representation similarity (spec/evaluations.md section 9): minibatch linear CKA with the
# unbiased HSIC, online with forward hooks, all models in one job on the same images.


from beyond_imagenet.cka import model_pairs


def cka_kinds():
    """Which heatmap figures the study's pairs give: within and/or cross."""
    section = config["evaluations"].get("cka", {})
    models = {m: {"family": s.family, "paradigm": s.paradigm} for m, s in STUDY.models.items()}
    pairs = model_pairs(models, section.get("pairs", "both"), section.get("cross_pairs", "contrast"))
    return [kind for kind in ("within", "cross") if any((a == b) == (kind == "within") for a, b in pairs)]


def cka_figures():
    return [
        STUDY.figure(f"cka_{kind}_{d}", ext)
        for d in STUDY.evaluation_datasets("cka")
        for kind in cka_kinds()
        for ext in ("png", "pdf")
    ]


def cka_heads(wildcards):
    return [STUDY.head(m) for m, spec in STUDY.models.items() if spec.needs_zero_shot_head]


rule compute_cka:
    input:
        manifest=f"{RESULTS}/manifests/{{dataset}}.json",
        heads=cka_heads,
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
        gpu=1,
    script:
        "../scripts/compute_cka.py"


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
    register_targets(*(f"{RESULTS}/metrics/cka_{d}.h5" for d in STUDY.evaluation_datasets("cka")), *cka_figures())

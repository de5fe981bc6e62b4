# Representation similarity (docs/evaluations.md §9): minibatch linear CKA with the unbiased HSIC.
# One pass job per (model, dataset) runs the model over the seeded CKA batches (the same in every
# model's job) and stores each selected layer's Gram matrix per batch; one CPU job per dataset forms
# every pair from those files, building no model. Adding a model runs its pass and the pairs job;
# every other model's pass file is reused. Its record: beyond_imagenet/evaluations/cka/.
from beyond_imagenet.evaluations import cka as cka_evaluation

CKA_MODELS = {m: STUDY.models[m] for m in STUDY.evaluation_models("cka")}
CKA_PAIRS = cka_evaluation.pairs(STUDY) if "cka" in STUDY.evaluations else []
# The models some pair names, in study order: only their passes are needed.
CKA_USED = [m for m in CKA_MODELS if any(m in pair for pair in CKA_PAIRS)]


rule compute_cka_pass:
    input:
        manifest=f"{RESULTS}/manifests/{{dataset}}.json",
        weights=checkpoint_input,
    output:
        cka_evaluation.pass_file(STUDY, "{model}", "{dataset}"),
    params:
        settings=cka_settings(),
        model=lambda w: STUDY.model_entry(cka_model(w)),
        identity=lambda w: STUDY.model_identity(w.model),
        head_identity=head_params,
        head=head_file,  # built here if no job of the model has yet (beyond_imagenet/heads.py)
        templates=head_templates,
        protocol=config["preprocessing"],
        logit_scale=config["zero_shot"]["logit_scale"],
        on_bad_image=config["extraction"]["on_bad_image"],
    log:
        f"{RESULTS}/logs/compute_cka_pass/{{model}}/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/compute_cka_pass/{{model}}/{{dataset}}.tsv"
    threads: MODEL_JOB_THREADS
    conda:
        "../envs/torch.yaml"
    resources:
        **EXECUTION,
    script:
        "../scripts/compute_cka_pass.py"


rule compute_cka:
    input:
        manifest=f"{RESULTS}/manifests/{{dataset}}.json",
        passes=lambda w: [cka_evaluation.pass_file(STUDY, m, w.dataset) for m in CKA_USED],
    output:
        cka_evaluation.matrix_file(STUDY, "{dataset}"),
    params:
        settings=cka_settings(),
        pairs=CKA_PAIRS,
        # What each pass file must record (a stale one is refused); in the order of input.passes.
        identities={m: STUDY.model_identity(m) for m in CKA_USED},
    log:
        f"{RESULTS}/logs/compute_cka/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/compute_cka/{{dataset}}.tsv"
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/compute_cka.py"


rule compute_cka_summary:
    input:
        **{d: cka_evaluation.matrix_file(STUDY, d) for d in STUDY.evaluation_datasets("cka")},
    output:
        report(f"{RESULTS}/metrics/cka.csv", category="Representation similarity",
               caption="../report/cka_summary.rst"),
        comparisons=comparisons_output("cka"),
    params:
        evaluation="cka",
        models=evaluation_columns("cka"),
        **uncertainty_params("cka"),
    log:
        f"{RESULTS}/logs/compute_cka_summary.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/compute_table.py"


if plot_items("cka"):

    # Every figure of the evaluation in one job (rules/common.smk: plot_items).
    rule plot_cka:
        input:
            plot_inputs("cka"),
        output:
            plot_outputs("cka"),
        params:
            figures=plot_params("cka"),
        log:
            f"{RESULTS}/logs/plot_cka.log",
        conda:
            "../envs/analysis.yaml"
        script:
            "../scripts/plot_figure.py"


register_evaluation("cka", *(cka_evaluation.matrix_file(STUDY, d) for d in STUDY.evaluation_datasets("cka")))

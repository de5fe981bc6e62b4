# Representation similarity (docs/evaluations.md §9): minibatch linear CKA with the unbiased HSIC.
# Each model's extraction job (rules/extract.smk, Study.pass_plan) runs its model over the seeded CKA
# batches (the same for every model) and stores each selected layer's Gram matrix per batch; one CPU
# job per dataset forms every pair from those files, building no model. Adding a model runs its
# extraction job and the pairs job; every other model's pass file is reused. Its record:
# beyond_imagenet/evaluations/cka/.
from beyond_imagenet.evaluations import cka as cka_evaluation

CKA_PAIRS = cka_evaluation.pairs(STUDY) if "cka" in STUDY.evaluations else []
# The models some pair names, in study order: only their passes are needed.
CKA_USED = cka_evaluation.pass_models(STUDY) if "cka" in STUDY.evaluations else []


rule compute_cka:
    input:
        manifest=f"{RESULTS}/manifests/{{dataset}}.json",
        # the markers of the extraction jobs that wrote the pass files
        passes=lambda w: sorted({STUDY.pass_marker(m, "cka", w.dataset) for m in CKA_USED}),
    output:
        cka_evaluation.matrix_file(STUDY, "{dataset}"),
    params:
        settings=cka_evaluation.pass_settings(STUDY),  # not its datasets: adding one reruns no pass
        pairs=CKA_PAIRS,
        files=lambda w: {m: STUDY.pass_output(m, "cka", w.dataset) for m in CKA_USED},
        # What each pass file must record (a stale one is refused).
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

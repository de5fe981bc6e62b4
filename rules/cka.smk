# Representation similarity (docs/evaluations.md §9): minibatch linear CKA with the unbiased HSIC,
# online with forward hooks, all models in one job on the same images (its own pass: no cached
# outputs). Its record: beyond_imagenet/evaluations/cka/.
from beyond_imagenet.evaluations import cka as cka_evaluation

CKA_MODELS = {m: STUDY.models[m] for m in STUDY.evaluation_models("cka")}


rule compute_cka:
    input:
        manifest=f"{RESULTS}/manifests/{{dataset}}.json",
        heads=[STUDY.head(m) for m, spec in CKA_MODELS.items() if spec.needs_zero_shot_head],
        weights=[str(spec.checkpoint_path) for spec in CKA_MODELS.values() if spec.checkpoint],
    output:
        f"{RESULTS}/metrics/cka_{{dataset}}.h5",
    params:
        # The pass's own settings only (not its list of datasets: adding one reruns no pass).
        settings={k: config["evaluations"].get("cka", {}).get(k) for k in cka_evaluation.PASS_SETTINGS},
        pairs=cka_evaluation.pairs(STUDY) if "cka" in STUDY.evaluations else [],
        models={m: STUDY.model_entry(m) for m in CKA_MODELS},
        identities={m: STUDY.model_identity(m) for m in CKA_MODELS},
        head_identities={m: STUDY.head_identity(m) for m in CKA_MODELS},
        heads={m: STUDY.head(m) for m, spec in CKA_MODELS.items() if spec.needs_zero_shot_head},
        protocol=config["preprocessing"],
        logit_scale=config["zero_shot"]["logit_scale"],
        on_bad_image=config["extraction"]["on_bad_image"],
    log:
        f"{RESULTS}/logs/compute_cka/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/compute_cka/{{dataset}}.tsv"
    threads: MODEL_JOB_THREADS
    conda:
        "../envs/torch.yaml"
    resources:
        **EXECUTION,
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


rule plot_cka:
    input:
        figure_input("cka", "cka"),
    output:
        **figure_files("cka", "cka"),
    params:
        **figure_params("cka", "cka"),
    log:
        figure_log("cka", "cka"),
    wildcard_constraints:
        **figure_wildcards("cka", "cka"),
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/plot_figure.py"


register_evaluation("cka", *(cka_evaluation.matrix_file(STUDY, d) for d in STUDY.evaluation_datasets("cka")))

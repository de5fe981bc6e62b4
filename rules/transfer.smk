# Transferability: VTAB-1k linear probes on cached features (spec/evaluations.md section 7).
# A `kind: vtab` dataset stands for one dataset per (task, split), <name>-<task>-<split>, each
# extracted by the one extract_outputs rule; train800val200 is not extracted (it is train800 +
# val200, checked on the data when the train800 manifest is built): see datasets/vtab.py.
# Helpers (vtab_folder, probe_inputs, ...) live in rules/common.smk.


rule build_vtab_manifest:
    input:
        vtab_folder,
    output:
        f"{RESULTS}/manifests/{{dataset}}.json",
    params:
        entry=vtab_split_params,
        listing=lambda w: manual_folder_signature(VTAB_SPLITS[w.dataset].parent, VTAB_SPLITS[w.dataset].task_dir),
    log:
        f"{RESULTS}/logs/build_manifest/{{dataset}}.log",
    wildcard_constraints:
        dataset="|".join(re.escape(n) for n in VTAB_SPLITS) or "(?!)",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/build_vtab_manifest.py"


# A task split's manifest also checks the VTAB layout (and, for train800, the train800val200 union).
ruleorder: build_vtab_manifest > build_manifest


rule probe_transfer:
    input:
        unpack(probe_inputs),
    output:
        f"{RESULTS}/probes/{{model}}/{{dataset}}/{{task}}.json",
    params:
        probe=TRANSFER.get("probe", {}),
    log:
        f"{RESULTS}/logs/probe_transfer/{{model}}/{{dataset}}/{{task}}.log",
    wildcard_constraints:
        task="|".join(TASKS),
    threads: 1
    conda:
        "../envs/torch.yaml"
    resources:
        # A GPU slot unless the study pins the probes to the CPU (then they run beside extraction).
        gpu=0 if TRANSFER.get("probe", {}).get("device") == "cpu" else 1,
    script:
        "../scripts/probe_transfer.py"


rule compute_transfer:
    input:
        transfer_probes(),
    output:
        f"{RESULTS}/metrics/transfer.csv",
    params:
        models=MODEL_COLUMNS,
    log:
        f"{RESULTS}/logs/compute_transfer.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/compute_transfer.py"


rule plot_transfer:
    input:
        f"{RESULTS}/metrics/transfer.csv",
    output:
        png=report(f"{RESULTS}/figures/transfer_{{dataset}}.png", category="Transferability",
                   caption="../report/transfer.rst"),
        pdf=f"{RESULTS}/figures/transfer_{{dataset}}.pdf",
    log:
        f"{RESULTS}/logs/plot_transfer/{{dataset}}.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/plot_transfer.py"


if "transfer" in STUDY.evaluations:
    register_targets(STUDY.metric("transfer"), *transfer_figures())

# Transferability: VTAB-1k linear probes on cached features (docs/evaluations.md §7); on a labelled
# folder of your own classes, one probe (+ k-shot probes and CLIP zero-shot) per (model, dataset). A `kind: vtab`
# dataset stands for one dataset per (task, split), <name>-<task>-<split>, each extracted by the one
# extract_outputs rule; train800val200 is not extracted (it is train800 + val200, checked on the
# data when the train800 manifest is built): see datasets/vtab.py. Its record:
# beyond_imagenet/evaluations/transfer.py; the probe math: beyond_imagenet/metrics/transfer.py.
from types import SimpleNamespace

from beyond_imagenet.datasets.vtab import TASKS, VtabSplitSpec
from beyond_imagenet.evaluations import transfer as transfer_evaluation

VTAB_SPLITS = {n: s for n, s in STUDY.datasets.items() if isinstance(s, VtabSplitSpec)}
PROBE = config["evaluations"].get("transfer", {}).get("probe", {})


# One job writes every (task, split) manifest of the study's VTAB datasets (57 for VTAB-1k): each
# is a few seconds of listing, and every job that reads one reads all of its dataset's (the
# extraction group of a VTAB dataset, its probes), so splitting them into jobs would rerun nothing
# less. Every manifest stays its own output: a job depends on the manifests it reads, and an
# extraction rerun after a changed task recomputes only that task (its manifest fingerprint).
VTAB_PARENTS = list(dict.fromkeys(s.parent for s in VTAB_SPLITS.values()))


if VTAB_SPLITS:

    rule build_vtab_manifest:
        input:
            # the folders it lists: generated, or unpacked from a manual archive (a `source: download`
            # copy is fetched by the job itself, a manual folder is in its params)
            lambda w: [f for p in VTAB_PARENTS for f in [dataset_folder(SimpleNamespace(dataset=p))] if f],
        output:
            [STUDY.manifest(n) for n in VTAB_SPLITS],
        params:
            # In the order of output: one dataset_entry per split.
            datasets=[STUDY.dataset_entry(n) for n in VTAB_SPLITS],
            # A `source: download` parent to fetch first (datasets.smk: fetch_dataset).
            fetch=[STUDY.dataset_entry(p) for p in VTAB_PARENTS if STUDY.datasets[p].source == "download"],
            # per split of a manual folder, its task folder's listing digest: a changed task rebuilds them
            listing=lambda w: {n: manual_folder_signature(s.parent, s.task_dir) for n, s in VTAB_SPLITS.items()},
        log:
            f"{RESULTS}/logs/build_vtab_manifest.log",
        conda:
            "../envs/analysis.yaml"
        script:
            "../scripts/build_vtab_manifest.py"


# A labelled folder's splits (given, or drawn by its `splits:`) and k-shot subsets, apart from its
# manifest: new splits rerun the probes, never the extraction (datasets/labelled.py).
rule draw_splits:
    input:
        f"{RESULTS}/manifests/{{dataset}}.json",
    output:
        f"{RESULTS}/splits/{{dataset}}.json",
    params:
        splits=lambda w: config["datasets"][w.dataset].get("splits", {}),
    log:
        f"{RESULTS}/logs/draw_splits/{{dataset}}.log",
    wildcard_constraints:
        dataset="|".join(re.escape(d) for d in STUDY.evaluation_datasets("transfer")
                         if transfer_evaluation.is_own_dataset(STUDY, d)) or "(?!)",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/draw_splits.py"


# A task split's manifest also checks the VTAB layout (and, for train800, the train800val200 union).
if VTAB_SPLITS:

    ruleorder: build_vtab_manifest > build_manifest


# One probe job per (model, VTAB dataset) fits every task of it in one process (one Python + torch
# start-up, one device lease for up to 19 small fits; each fit re-seeds, so the results are those of
# one job per task). Per dataset, not per model: the probes of a dataset start as soon as its
# extraction group is done, and a changed dataset reruns only its own probes.
rule probe_transfer:
    input:
        unpack(lambda w: transfer_evaluation.probe_inputs(STUDY, w)),
    output:
        f"{RESULTS}/probes/{{model}}/{{dataset}}.json",
    params:
        probe=PROBE,
        cached=lambda w: transfer_evaluation.probe_items(STUDY, w),
        # A CLIP model on a labelled folder: its zero-shot classifier from the class names.
        zero_shot=lambda w: transfer_evaluation.zero_shot_params(STUDY, w),
    log:
        f"{RESULTS}/logs/probe_transfer/{{model}}/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/probe_transfer/{{model}}/{{dataset}}.tsv"
    wildcard_constraints:
        dataset="|".join(re.escape(d) for d in STUDY.evaluation_datasets("transfer")) or "(?!)",
    threads: 1
    conda:
        "../envs/torch.yaml"
    resources:
        # A GPU slot unless the study pins the probes to the CPU (then they run beside extraction).
        gpu=0 if PROBE.get("device") == "cpu" else 1,
        lock_dir=config["extraction"]["lock_dir"] or "",
    script:
        "../scripts/probe_transfer.py"


rule compute_transfer:
    input:
        transfer_evaluation.probe_files(STUDY),
    output:
        f"{RESULTS}/metrics/transfer.csv",
        comparisons=comparisons_output("transfer"),
    params:
        evaluation="transfer",
        models=evaluation_columns("transfer"),
        **uncertainty_params("transfer"),
    log:
        f"{RESULTS}/logs/compute_transfer.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/compute_table.py"


if plot_items("transfer"):

    # Every figure of the evaluation in one job (rules/common.smk: plot_items).
    rule plot_transfer:
        input:
            plot_inputs("transfer"),
        output:
            plot_outputs("transfer"),
        params:
            figures=plot_params("transfer"),
        log:
            f"{RESULTS}/logs/plot_transfer.log",
        conda:
            "../envs/analysis.yaml"
        script:
            "../scripts/plot_figure.py"


register_evaluation("transfer")

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


rule build_vtab_manifest:
    input:
        lambda w: dataset_folder(SimpleNamespace(dataset=VTAB_SPLITS[w.dataset].parent)),
    output:
        f"{RESULTS}/manifests/{{dataset}}.json",
    params:
        dataset=dataset_entry,
        listing=lambda w: manual_folder_signature(VTAB_SPLITS[w.dataset].parent, VTAB_SPLITS[w.dataset].task_dir),
    log:
        f"{RESULTS}/logs/build_manifest/{{dataset}}.log",
    wildcard_constraints:
        dataset="|".join(re.escape(n) for n in VTAB_SPLITS) or "(?!)",
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


rule plot_transfer:
    input:
        figure_input("transfer", "transfer"),
    output:
        **figure_files("transfer", "transfer"),
    params:
        **figure_params("transfer", "transfer"),
    log:
        figure_log("transfer", "transfer"),
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/plot_figure.py"


register_evaluation("transfer")

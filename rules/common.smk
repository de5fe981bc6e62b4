# Helpers only: input functions and target lists, all derived from STUDY.

# GPU slots a model-running job takes. A study pinned to the CPU takes none, so its jobs are not
# serialised behind the profile's `gpu` resource; `auto`/`cuda` take one (leased inside the job).
GPU_SLOTS = 0 if config["extraction"]["device"] == "cpu" else 1


def check_manual_datasets():
    """Before any job runs: manual datasets must be where the config says (else: what to do)."""
    problems = []
    for name, spec in STUDY.datasets.items():
        if spec.source != "manual":
            continue
        if spec.archive:
            if not Path(spec.archive).is_file():
                problems.append(f"datasets.{name}.archive: {spec.archive} does not exist.\n{spec.instructions()}")
        elif not spec.root.is_dir():
            problems.append(f"datasets.{name}: folder {spec.root} does not exist.\n{spec.instructions()}")
    if problems:
        raise WorkflowError("missing manual dataset(s); no job was started:\n\n" + "\n\n".join(problems))


def check_slurm_jobs():
    """Under the SLURM executor, before any job is submitted: every job fits a node of its partition."""
    from beyond_imagenet.slurm import check_workflow

    try:
        check_workflow(workflow)
    except RuntimeError as err:
        raise WorkflowError(str(err))


def dataset_folder(wildcards):
    """What the manifest of a dataset depends on: the generated or unpacked folder (none if manual)."""
    spec = STUDY.datasets[wildcards.dataset]
    if spec.source == "generate":
        return f"{RESOURCES}/generated/{spec.name}"
    if spec.unpacked:
        return f"{RESOURCES}/datasets/{spec.name}"
    return []


def manual_folder_signature(dataset, folder=None):
    """For a manual folder (no workflow input tracks it), its listing digest: a changed folder
    rebuilds the manifest. ``folder``: the part of it the manifest reads (a VTAB task)."""
    from beyond_imagenet.datasets.manifest import folder_signature

    spec = STUDY.datasets[dataset]
    return folder_signature(folder or spec.root) if spec.source == "manual" and not spec.archive else ""


def dataset_archive(wildcards):
    """The downloaded (or manual) files a dataset folder is unpacked from; several for e.g. ImageNet-C."""
    return [str(p) for p in STUDY.datasets[wildcards.dataset].archive_paths]


def head_input(wildcards):
    if STUDY.models[wildcards.model].needs_zero_shot_head:
        return STUDY.head(wildcards.model)
    return []


def model_params(wildcards):
    """Everything that changes a model's outputs (source, architecture, weights incl. a checkpoint's
    sha256, protocol, zero-shot settings): a change reruns its extraction jobs, a new label does not."""
    return STUDY.model_identity(wildcards.model)


def head_params(wildcards):
    return STUDY.head_identity(wildcards.model)


def _group_items(wildcards):
    plan = STUDY.extraction_plan(wildcards.model)
    if wildcards.group not in plan:
        raise WorkflowError(f"model {wildcards.model} has no extraction group {wildcards.group!r}; "
                            f"its groups: {', '.join(sorted(plan))}")
    return plan[wildcards.group]


def group_manifests(wildcards):
    """The manifests of every dataset an extraction group reads."""
    return sorted({STUDY.manifest(d) for d, _ in _group_items(wildcards)})


def group_item_params(wildcards):
    """What changes each output of a group besides the model: the dataset's input transform, and
    for a variant the paradigm (R = 256 supervised, 224 CLIP) and the image subset."""
    paradigm = STUDY.models[wildcards.model].paradigm
    max_images = config["evaluations"].get("invariance", {}).get("max_images")
    return {
        (f"{d}@{v}" if v else d): ({"paradigm": paradigm, "max_images": max_images} if v
                                   else {"input_transform": STUDY.input_transform(d)})
        for d, v in _group_items(wildcards)
    }


def split_item(item):
    """``<dataset>`` or ``<dataset>@<variant>`` -> (dataset, variant or None)."""
    dataset, _, variant = item.partition("@")
    return dataset, variant or None


def group_marker_of_output(wildcards):
    """The marker of the extraction job that writes outputs/<model>/<item>.h5."""
    if wildcards.model not in STUDY.models:
        raise WorkflowError(f"{wildcards.model} is not a model of this study ({', '.join(STUDY.models)})")
    dataset, variant = split_item(wildcards.item)
    group = STUDY.group_of(wildcards.model, dataset, variant)
    if group is None:
        hint = (f"; it is the standard evaluation: read {STUDY.output(wildcards.model, dataset)}"
                if variant and dataset in STUDY.datasets and STUDY.is_standard_variant(wildcards.model, variant, dataset)
                else "")
        raise WorkflowError(f"no extraction of this study writes {wildcards.item} for {wildcards.model}{hint}")
    return STUDY.group_marker(wildcards.model, group)


def checkpoint_input(wildcards):
    """A local checkpoint is an input of every job that loads the model: replacing it reruns them."""
    path = STUDY.models[wildcards.model].checkpoint_path
    return [str(path)] if path else []


# What every metric table carries per model (label, family, paradigm, paper_key) and its row
# order: a params of each compute rule, so relabelling a model redraws tables and figures only.
MODEL_COLUMNS = {m: STUDY.model_columns(m) for m in STUDY.models}


def outputs_for(evaluation):
    return [STUDY.output(m, d) for d in STUDY.evaluation_datasets(evaluation) for m in STUDY.models]


def manifests_for(evaluation):
    return [STUDY.manifest(d) for d in STUDY.evaluation_datasets(evaluation)]


def calibration_figures():
    return [
        STUDY.figure(f"{kind}_{d}", ext)
        for d in STUDY.evaluation_datasets("calibration")
        for kind in ("reliability", "confidence")
        for ext in ("png", "pdf")
    ]


def per_dataset_figures(evaluation, prefix):
    """The png and pdf of figure ``<prefix>_<dataset>`` for each dataset of an evaluation."""
    return [STUDY.figure(f"{prefix}_{d}", ext) for d in STUDY.evaluation_datasets(evaluation) for ext in ("png", "pdf")]


# What the default target builds: each rules/<evaluation>.smk registers its metric tables and figures.
TARGETS = []


def register_targets(*paths):
    TARGETS.extend(str(p) for p in paths)


# ---- transfer (VTAB): a `kind: vtab` dataset expands to one dataset per (task, split).
import re
from types import SimpleNamespace

from beyond_imagenet.datasets.vtab import EXTRACTED_SPLITS, TASKS, VtabSplitSpec, split_dataset_name

VTAB_SPLITS = {n: s for n, s in STUDY.datasets.items() if isinstance(s, VtabSplitSpec)}
TRANSFER = config["evaluations"].get("transfer", {})


def vtab_folder(wildcards):
    """What a task split's manifest depends on: its vtab dataset's generated or unpacked folder."""
    return dataset_folder(SimpleNamespace(dataset=VTAB_SPLITS[wildcards.dataset].parent))


def vtab_split_params(wildcards):
    """The parts of the vtab entry that change this split's files (not, e.g., the other tasks)."""
    spec = VTAB_SPLITS[wildcards.dataset]
    entry = {k: v for k, v in config["datasets"][spec.parent].items() if k != "tasks"}
    return {**entry, "task": spec.task, "split": spec.split}


def probe_inputs(wildcards):
    names = {s: split_dataset_name(wildcards.dataset, wildcards.task, s) for s in EXTRACTED_SPLITS}
    return {**{s: STUDY.output(wildcards.model, n) for s, n in names.items()},
            **{f"{s}_manifest": STUDY.manifest(n) for s, n in names.items()}}


def transfer_probes():
    return [
        f"{RESULTS}/probes/{m}/{d}/{t}.json"
        for d in STUDY.evaluation_datasets("transfer")
        for t in STUDY.datasets[d].tasks
        for m in STUDY.models
    ]


def transfer_figures():
    return [STUDY.figure(f"transfer_{d}", ext) for d in STUDY.evaluation_datasets("transfer") for ext in ("png", "pdf")]

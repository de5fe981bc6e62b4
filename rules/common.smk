# Helpers only: input functions, params and target lists, all derived from STUDY and the
# evaluation registry (beyond_imagenet/evaluations). A script reads only its job's input, params
# and output (beyond_imagenet.workflow.Job), so every setting a job uses is a param here.
import re

from snakemake.logging import logger

from beyond_imagenet.evaluations import EVALUATIONS, chance_levels, figure_chance, layout
from beyond_imagenet.extraction_jobs import group_damage, part_needs_rerun
from beyond_imagenet.study import split_group

# GPU slots a model-running job takes. A study pinned to the CPU takes none, so its jobs are not
# serialised behind the profile's `gpu` resource; `auto`/`cuda` take one (leased inside the job).
GPU_SLOTS = 0 if config["extraction"]["device"] == "cpu" else 1
# How a model-running job runs, not what it computes: resources, not params, so moving a study
# onto a GPU (or another lock folder, more loader workers) reruns nothing. Override per rule with
# --set-resources extract_outputs:num_workers=8.
EXECUTION = {"gpu": GPU_SLOTS, "device": config["extraction"]["device"],
             "lock_dir": config["extraction"]["lock_dir"] or "", "num_workers": config["extraction"]["num_workers"]}
# A model job's threads: its main process plus its image-loader workers, so --cores is honest; the
# forward pass gets threads - num_workers intra-op threads (extraction_jobs.forward_threads), so
# --set-threads extract_outputs=8 gives torch more.
MODEL_JOB_THREADS = 1 + config["extraction"]["num_workers"]


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


def check_checkpoint_times():
    """While the workflow is read (before any job, dry runs too): no checkpoint dated in the future."""
    from beyond_imagenet.checkpoints import future_mtime_problem

    problems = [problem for name, spec in STUDY.models.items() if spec.checkpoint
                for problem in [future_mtime_problem(spec.checkpoint_path, f"models.{name}.checkpoint")] if problem]
    if problems:
        raise WorkflowError("checkpoint(s) dated in the future; no job was started:\n\n" + "\n\n".join(problems))


check_checkpoint_times()


def check_disk_space():
    """Before any job runs: print the study's disk estimate (beyond_imagenet/diskspace.py) and stop
    when the free disk under results_dir is smaller than what the run still writes."""
    import sys

    from beyond_imagenet.diskspace import DiskSpaceError, check_free_space

    try:
        check_free_space(STUDY, echo=lambda text: print(text, file=sys.stderr))
    except DiskSpaceError as err:
        raise WorkflowError(str(err))


def check_slurm_jobs():
    """Under the SLURM executor, before any job is submitted: every job fits a node of its partition."""
    from beyond_imagenet.slurm import check_workflow

    try:
        check_workflow(workflow)
    except RuntimeError as err:
        raise WorkflowError(str(err))


def check_study_ready():
    """Before any job runs: the doctor's table (python -m beyond_imagenet.doctor, no network); a
    FAIL row (a GPU torch cannot use, weights not cached under HF_HUB_OFFLINE=1, a missing package)
    stops the run here instead of in a job hours later. Its disk row is left to check_disk_space,
    which onstart runs next (the estimate, made once, with its table)."""
    from snakemake.logging import logger

    from beyond_imagenet.doctor import check

    preflight = check(config, disk=False)  # (not `report`: a Snakemake keyword)
    logger.info(f"pre-flight check (python -m beyond_imagenet.doctor):\n{preflight.table()}")
    if not preflight.ready:
        raise WorkflowError("the pre-flight check found problems that would stop the run; no job was "
                            "started:\n" + "\n".join(f"{r.check} {r.item}: {r.detail}" for r in preflight.failed))


# The `source: download` datasets whose manifest fetch_dataset writes after downloading and
# unpacking them (a VTAB dataset's is fetched by build_vtab_manifest, which lists its task splits).
FETCHED = [n for n, s in STUDY.datasets.items() if s.source == "download" and s.kind != "vtab"]


def dataset_folder(wildcards):
    """What the manifest of a dataset depends on: the generated folder, or the one unpacked from a
    manual archive (none if manual, or downloaded: the manifest's job fetches it)."""
    spec = STUDY.datasets[wildcards.dataset]
    if spec.source == "generate":
        return f"{RESOURCES}/generated/{spec.name}"
    if spec.source == "manual" and spec.archive:
        return f"{RESOURCES}/datasets/{spec.name}"
    return []


def manual_folder_signature(dataset, folder=None):
    """For a manual folder (no workflow input tracks it), its listing digest: a changed folder
    rebuilds the manifest. ``folder``: the part of it the manifest reads (a VTAB task)."""
    from beyond_imagenet.datasets.manifest import folder_signature

    spec = STUDY.datasets[dataset]
    if spec.source != "manual" or spec.archive:
        return ""
    signature = folder_signature(folder or spec.root)
    if getattr(spec, "labels", None):  # a labelled folder's CSV of labels (it may live elsewhere)
        try:
            st = os.stat(spec.labels)
            return f"{signature}:{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            return f"{signature}:missing"
    return signature


def dataset_archive(wildcards):
    """The manual archive a dataset folder is unpacked from."""
    return [str(p) for p in STUDY.datasets[wildcards.dataset].archive_paths]


def head_file(wildcards):
    """Where a CLIP model's zero-shot head is cached (built by the model's jobs themselves, no job
    of its own: beyond_imagenet/heads.py); "" for a model without one."""
    if STUDY.models[wildcards.model].needs_zero_shot_head:
        return STUDY.head(wildcards.model)
    return ""


def head_templates(wildcards):
    """The zero-shot templates of a CLIP model's head; "" for a model without one (whose jobs a
    new template count does not rerun)."""
    if STUDY.models[wildcards.model].needs_zero_shot_head:
        return config["zero_shot"]["templates"]
    return ""


def model_entry(wildcards):
    """How to build the model (ModelSpec fields but the label): a new label reruns no model job."""
    return STUDY.model_entry(wildcards.model)


def head_params(wildcards):
    return STUDY.head_identity(wildcards.model)


def dataset_entry(wildcards):
    return STUDY.dataset_entry(wildcards.dataset)


def _group_items(wildcards):
    plan = STUDY.extraction_plan(wildcards.model)
    part = split_group(wildcards.group)
    if part:  # a part job of a split dataset (extraction.split): its dataset's standard file
        dataset, _, parts = part
        if STUDY.split_parts(wildcards.model, dataset) != parts:
            raise WorkflowError(f"model {wildcards.model} has no extraction part group {wildcards.group!r}; "
                                f"extraction.split: {config['extraction']['split']}")
        return plan[dataset]
    if wildcards.group not in plan:
        groups = STUDY.job_groups(wildcards.model)
        if wildcards.group in groups:  # a group that only runs passes (group_passes)
            return []
        raise WorkflowError(f"model {wildcards.model} has no extraction group {wildcards.group!r}; "
                            f"its groups: {', '.join(sorted(groups))}")
    return plan[wildcards.group]


def group_manifests(wildcards):
    """The manifests of every dataset an extraction group reads. Also where a finished group whose
    files were deleted or replaced since (as the error messages say to do) has its job forced: the
    files are no Snakemake outputs, and a missing input of a finished table does not rerun anything
    (it could be a deleted temp() file). The job recomputes those files and reuses the others
    (extraction_jobs), and every job that reads the group reruns after it."""
    marker = STUDY.group_marker(wildcards.model, wildcards.group)
    damage = group_damage(marker)
    if damage:
        logger.warning(f"{marker}: " + "; ".join(damage) + ": the group's job reruns and recomputes them")
        workflow.dag.forcefiles.add(marker)
    passes = STUDY.pass_plan(wildcards.model).get(wildcards.group, [])
    return sorted({STUDY.manifest(d) for d, _ in _group_items(wildcards)} | {STUDY.manifest(d) for _, d in passes})


def group_items(wildcards):
    """Each output one extraction job writes: dataset, variant, where, from which manifest, what
    it must record (for a variant also the evaluation that asked for it, whose ``variants`` hook
    builds it, and what its identity adds, e.g. its image subset)."""
    # Sorted: the order of the study's datasets does not change what the job computes, so it is not
    # part of its params (a study with its datasets reordered reruns nothing).
    items = []
    for d, v in sorted(_group_items(wildcards), key=lambda item: (item[0], item[1] or "")):
        item = {"dataset": d, "variant": v or "", "manifest": STUDY.manifest(d),
                "extracted": STUDY.output(wildcards.model, d, v),
                "expect": STUDY.output_identity(wildcards.model, d, v)}
        if v:
            item["evaluation"] = STUDY.variant_owner(wildcards.model, d, v)
        part = split_group(wildcards.group)
        if part:  # part k of K: its slice of the dataset (beyond_imagenet.extract.part_shards)
            item.update(part=part[1], parts=part[2])
        items.append(item)
    return items


def group_passes(wildcards):
    """Each pass of an evaluation over a dataset's images (its registry ``model_pass`` hook: CKA's Gram
    matrices) the extraction job runs with the network it builds: which, over which manifest, the
    file it writes and what that file must record (a change reruns the job, which reuses its files)."""
    out = []
    for ev, d in sorted(STUDY.pass_plan(wildcards.model).get(wildcards.group, [])):
        out.append({"evaluation": ev, "dataset": d, "manifest": STUDY.manifest(d),
                    "output": STUDY.pass_output(wildcards.model, ev, d),
                    "expect": EVALUATIONS[ev].model_pass.expect(STUDY, wildcards.model, d)})
    return out


# extraction.split: a split dataset's file is written by K part jobs (extract_outputs jobs of the
# groups <dataset>@part-<k>-of-<K>, each leasing its own GPU) and one merge job (merge_extraction_parts,
# no GPU) whose output is the dataset's group marker, which readers take as usual.
SPLIT_DATASETS = sorted(config["extraction"]["split"])


def split_part_markers(wildcards):
    """The part markers a merge job reads. A finished merge whose file was deleted or replaced since
    is forced (as group_manifests does for a group), and so is every part whose shards are gone
    (removed by the merge that wrote the file): its part job then computes its slice again."""
    import json

    if STUDY.split_parts(wildcards.model, wildcards.dataset) is None:
        raise WorkflowError(f"{wildcards.dataset} is not split for model {wildcards.model} (extraction.split)")
    marker = STUDY.group_marker(wildcards.model, wildcards.dataset)
    markers = [STUDY.group_marker(wildcards.model, g) for g in STUDY.part_groups(wildcards.model, wildcards.dataset)]
    damage = group_damage(marker)
    if damage:
        logger.warning(f"{marker}: " + "; ".join(damage) + ": its parts and merge rerun and recompute it")
        workflow.dag.forcefiles.add(marker)
    if damage or not Path(marker).exists():
        for part in markers:
            try:
                record = json.loads(Path(part).read_text())["part"]
            except (OSError, ValueError, KeyError):
                continue  # missing: its job runs anyway; unreadable: the merge names it
            if part_needs_rerun(record):
                workflow.dag.forcefiles.add(part)
    return markers


def split_item(wildcards):
    """The file a merge job writes, from which manifest, and what it must record (as group_items)."""
    d = wildcards.dataset
    return {"manifest": STUDY.manifest(d), "extracted": STUDY.output(wildcards.model, d),
            "expect": STUDY.output_identity(wildcards.model, d)}


def split_manifest(wildcards):
    return STUDY.manifest(wildcards.dataset)


def checkpoint_input(wildcards):
    """A local checkpoint is an input of every job that loads the model: replacing it reruns them."""
    path = STUDY.models[wildcards.model].checkpoint_path
    return [str(path)] if path else []


# What every metric table carries per model (label, family, paradigm, paper_key) and its row
# order: a params of each compute rule, so relabelling a model redraws tables and figures only.
MODEL_COLUMNS = {m: STUDY.model_columns(m) for m in STUDY.models}


def evaluation_columns(evaluation):
    """MODEL_COLUMNS of the models an evaluation runs on (STUDY.evaluation_models: a features-only
    model is in no logit evaluation's table), so relabelling one redraws only its own tables."""
    return {m: MODEL_COLUMNS[m] for m in STUDY.evaluation_models(evaluation)}


# ---- an evaluation's jobs, from its registry record (beyond_imagenet/evaluations/<name>.py)
def evaluation_items(evaluation):
    """Every standard output an evaluation reads, as Study.item records: datasets in config
    order, models in config order within each (the models it runs on: STUDY.evaluation_models; the
    pairs whose label spaces agree: STUDY.evaluation_pairs)."""
    return [STUDY.item(m, d) for m, d in STUDY.evaluation_pairs(evaluation)]


def evaluation_settings(evaluation):
    """The settings of evaluations.<name> its table uses (its record's ``settings``), nothing else:
    adding a dataset, or changing a setting another job uses, does not rerun its table."""
    section = config["evaluations"].get(evaluation, {})
    return {key: section.get(key) for key in EVALUATIONS[evaluation].settings}


def item_inputs(items):
    """What a job reading cached outputs (Study.item records, its params) depends on: the marker
    of each extraction group that writes them (a rerun of the group reruns the job) and their
    manifests. The files themselves are found through the params."""
    return {"groups": STUDY.output_markers(items), "manifests": sorted({i["manifest"] for i in items})}


def table_inputs(evaluation):
    """The inputs of a standard compute_<evaluation> job: item_inputs of its items."""
    return item_inputs(evaluation_items(evaluation))


def table_params(evaluation, items=None):
    """The params of a compute_<evaluation> job (scripts/compute_table.py)."""
    params = {"evaluation": evaluation, "models": evaluation_columns(evaluation),
              "cached": evaluation_items(evaluation) if items is None else items}
    if EVALUATIONS[evaluation].settings:
        params["settings"] = evaluation_settings(evaluation)
    params.update(uncertainty_params(evaluation))
    return params


# The bootstrap of every table (docs/evaluations.md §11): a param of the compute jobs whose record
# resamples its images (its `samples`), so changing it reruns those jobs and their aggregates only.
UNCERTAINTY = config["uncertainty"]


def uncertainty_params(evaluation):
    return {"uncertainty": UNCERTAINTY} if EVALUATIONS[evaluation].samples else {}


def comparisons_output(evaluation):
    """The second output of a compute job: its model-against-model paired differences."""
    return f"{RESULTS}/metrics/comparisons/{evaluation}.csv"


def comparison_evaluations():
    """The study's evaluations with comparisons (a record with `samples`), in registry order."""
    return [e for e in EVALUATIONS if e in STUDY.evaluations and EVALUATIONS[e].samples]


# Chance top-1 per dataset (and VTAB task), from the label spaces: the profile greys out a model
# whose accuracy interval reaches it (each figure gets its own datasets' levels: figure_chance).
CHANCE_LEVELS = chance_levels(STUDY)


# ---- an evaluation's figures: one plot job draws them all (scripts/plot_figure.py). Each figure
# file stays an output of its own, so `snakemake results/figures/<file>.png` draws it (with its
# evaluation's other figures: a second or so each), and a changed table, setting or published
# number redraws only its evaluation's figures.
_PLOT_ITEMS = {}


def plot_items(evaluation):
    """One record per figure (png + pdf) of an evaluation in this study: which figure, its
    wildcards (dataset, variant), what it is drawn from and with (chance levels, layout, data)."""
    if evaluation not in _PLOT_ITEMS:
        _PLOT_ITEMS[evaluation] = _plot_items(evaluation) if evaluation in STUDY.evaluations else []
    return _PLOT_ITEMS[evaluation]


def _plot_items(evaluation):
    from types import SimpleNamespace

    items = []
    for figure in EVALUATIONS[evaluation].figures:
        datasets = STUDY.evaluation_datasets(evaluation) if figure.per_dataset else [None]
        variants = figure.variants(STUDY) if figure.variants else [None]
        for d in datasets:
            for v in variants:
                wildcards = {**({"dataset": d} if d else {}), **({figure.variant_wildcard: v} if v else {})}
                w = SimpleNamespace(**wildcards)
                stem = figure.stem(d, v)
                if figure.source:
                    inputs = [figure.source(STUDY, w)]
                elif figure.paired and layout(STUDY, evaluation) == "paired":  # the margins' intervals
                    inputs = [STUDY.metric(evaluation), comparisons_output(evaluation)]
                else:
                    inputs = [STUDY.metric(evaluation)]
                item = {"figure": f"{evaluation}/{figure.name}", "name": figure.name, "wildcards": wildcards,
                        "input": inputs,
                        "png": STUDY.figure(stem, "png"), "pdf": STUDY.figure(stem, "pdf"),
                        "caption": figure.caption}
                if figure.chance:
                    item["chance"] = figure_chance(STUDY, evaluation, figure, w)
                if figure.paired:
                    item["layout"] = layout(STUDY, evaluation)
                if figure.data:
                    item["data"] = figure.data(STUDY, w)
                items.append(item)
    return items


def plot_inputs(evaluation):
    return sorted({f for item in plot_items(evaluation) for f in item["input"]})


def plot_outputs(evaluation):
    """Every figure file of an evaluation: the png in the report (labelled with its figure and
    wildcards), the pdf beside it."""
    title = EVALUATIONS[evaluation].title
    out = []
    for item in plot_items(evaluation):
        labels = {"figure": item["name"], **item["wildcards"]}
        out += [report(item["png"], category=title, caption=f"../report/{item['caption']}.rst", labels=labels),
                item["pdf"]]
    return out


def plot_params(evaluation):
    """The plot job's params: its figures' records, without what the job need not see."""
    return [{k: v for k, v in item.items() if k not in ("caption", "name")} for item in plot_items(evaluation)]


def evaluation_figures(evaluation):
    """Every figure file of an evaluation in this study (png and pdf)."""
    out = []
    for figure in EVALUATIONS[evaluation].figures:
        datasets = STUDY.evaluation_datasets(evaluation) if figure.per_dataset else [None]
        variants = figure.variants(STUDY) if figure.variants else [None]
        out += [STUDY.figure(figure.stem(d, v), ext) for d in datasets for v in variants for ext in ("png", "pdf")]
    return out


# What the default target builds: each rules/<evaluation>.smk registers its metric tables and figures.
TARGETS = []


def register_targets(*paths):
    TARGETS.extend(str(p) for p in paths)


def register_evaluation(evaluation, *extra):
    """The default targets of an evaluation the study runs: its table, its figures, ``extra``."""
    if evaluation in STUDY.evaluations:
        register_targets(STUDY.metric(evaluation), *extra, *evaluation_figures(evaluation))

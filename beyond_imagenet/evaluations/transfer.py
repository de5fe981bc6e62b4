"""Transferability (docs/evaluations.md §7): VTAB-1k linear probes on cached features; on a labelled
folder of your own classes (kind ``labelled_folder``) the same probe on its splits, k-shot probes and
the CLIP models' zero-shot top-1 from its class names (:func:`probe_own_dataset`).

One probe per (model, task) with the CLIP_benchmark protocol of :mod:`beyond_imagenet.metrics.transfer`;
then per-task, per-group and overall means in a tidy table. Usable without Snakemake::

    result = probe_vtab_task(train, val, test, n_classes=47, config=ProbeConfig())
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from beyond_imagenet.datasets.vtab import GROUPS, TASKS
from beyond_imagenet.evaluations import Evaluation, Figure, Sample, register
from beyond_imagenet.profile import Headline
from beyond_imagenet.style import (
    CHANCE_ALPHA,
    CHANCE_HATCH,
    CHANCE_TEXT,
    at_chance,
    chance_note,
    chance_of,
    draw_intervals,
    empty_note,
    legend_outside,
    n_text,
    interval_lookup,
    model_styles,
    plt,
    save_figure,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from beyond_imagenet.metrics.transfer import ProbeConfig, Split

log = logging.getLogger(__name__)

#: Metrics of one probe, as written per task in transfer.csv.
TASK_METRICS = ("test_top1", "val_top1", "weight_decay", "n_train", "n_val", "n_test", "n_skipped")


def probe_config(settings: Mapping[str, Any]) -> ProbeConfig:
    """The ``evaluations.transfer.probe`` config section (schema defaults filled) as a ProbeConfig."""
    from beyond_imagenet.metrics.transfer import ProbeConfig

    grid = settings.get("weight_decays", {})
    weight_decays = np.logspace(grid.get("log10_min", -6), grid.get("log10_max", 2), grid.get("num", 97))
    return ProbeConfig(lr=float(settings.get("lr", 0.1)), epochs=int(settings.get("epochs", 10)),
                       batch_size=int(settings.get("batch_size", 64)), seed=int(settings.get("seed", 0)),
                       weight_decays=tuple(float(w) for w in weight_decays))


def probe_vtab_task(train: Split, val: Split, test: Split, n_classes: int, config: ProbeConfig,
                    device: str | torch.device = "cpu") -> dict[str, Any]:
    """The §7 protocol for one task from the train800, val200 and test features.

    train800val200 is train800 followed by val200 (checked on the data when the train800 manifest
    is built, :func:`beyond_imagenet.datasets.vtab.check_trainval_union`), so its features are the
    concatenation of theirs: every image goes through the model once.
    """
    from beyond_imagenet.metrics.transfer import select_and_evaluate

    trainval = (np.concatenate([train[0], val[0]]), np.concatenate([train[1], val[1]]))
    result = select_and_evaluate(train, val, trainval, test, n_classes, config, device)
    return {
        "test_top1": result["test_top1"],
        "test_correct": result["test_correct"],
        "val_top1": result["val_top1_best"],
        "weight_decay": result["weight_decay"],
        "val_top1_per_wd": result["val_top1_per_wd"],
        "refit_diverged": result["refit_diverged"],
        "weight_decays": [float(w) for w in config.weight_decays],
        "n_train": int(len(train[1])),
        "n_val": int(len(val[1])),
        "n_test": int(len(test[1])),
        "n_classes": int(n_classes),
        "feature_dim": int(train[0].shape[1]),
    }


# ------------------------------------------------------------- a labelled folder of your own
#: The rows of a labelled folder (kind labelled_folder): its linear probe, the CLIP zero-shot
#: classifier from its class names, and the k-shot probes (task ``k_shot_<k>``); group ``own``.
OWN_GROUP = "own"
LINEAR_PROBE, ZERO_SHOT = "linear_probe", "zero_shot"
DEFAULT_TEMPLATES = ("a photo of a {}.",)


def own_task_label(task: str) -> str:
    if task == LINEAR_PROBE:
        return "linear probe"
    if task == ZERO_SHOT:
        return "zero-shot (class names)"
    return f"{task.rsplit('_', 1)[-1]}-shot probe"


def is_own_dataset(study, dataset: str) -> bool:
    from beyond_imagenet.datasets.labelled import CLASS_SPACE

    return study.datasets[dataset].class_space == CLASS_SPACE


def probe_own_dataset(manifest: Mapping[str, Any], splits: Mapping[str, Any], features: np.ndarray,
                      labels: np.ndarray, ids: list[str], config: ProbeConfig, device: str | torch.device = "cpu",
                      zero_shot_head: np.ndarray | None = None) -> list[dict[str, Any]]:
    """The §7 protocol on a labelled folder: the probe on its train / val / test splits (weight
    decay chosen on val, refit on train + val, test top-1), a probe per k-shot subset of train
    (same val and test), and, with ``zero_shot_head`` (D, classes: the class names' text
    embeddings), the zero-shot top-1 on the same test images. One result dict per task."""
    from beyond_imagenet.datasets.labelled import manifest_splits

    rows = manifest_splits(manifest, splits, ids)
    n_classes = len(manifest["class_names"])
    labels = np.asarray(labels)

    def split(index):
        return features[index], labels[index]

    test_ids = [ids[i] for i in rows["test"]]
    common = {"n_classes": n_classes, "class_names": list(manifest["class_names"]), "test_ids": test_ids,
              "n_test": int(len(rows["test"])), "split_source": splits.get("split_source", "")}
    results = []
    trains = [(LINEAR_PROBE, rows["train"])] + [(f"k_shot_{k}", rows[f"k{k}"])
                                                for k in sorted(splits.get("k_shot", {}), key=int)]
    for task, train_rows in trains:
        result = probe_vtab_task(split(train_rows), split(rows["val"]), split(rows["test"]), n_classes, config, device)
        result.update(common, task=task)
        results.append(result)
    if zero_shot_head is not None:
        from beyond_imagenet.metrics.transfer import l2_normalize

        scores = l2_normalize(features[rows["test"]]) @ np.asarray(zero_shot_head, dtype=np.float32)
        correct = (scores.argmax(1) == labels[rows["test"]]).astype(int)
        results.append({**common, "task": ZERO_SHOT, "test_top1": float(correct.mean()),
                        "test_correct": correct.tolist(), "n_train": 0, "n_val": 0,
                        "feature_dim": int(features.shape[1])})
    return results


def transfer_rows(results: Iterable[Mapping[str, Any]], model_columns: Mapping[str, Mapping[str, str]]) -> list[dict]:
    """Tidy rows from probe results (dicts with ``model``, ``dataset``, ``task`` and the metrics).

    Per task: :data:`TASK_METRICS`. Per (model, dataset) and group (``natural``, ``specialized``,
    ``structured``, ``all``): ``test_top1`` = the mean over the group's tasks present (``all`` is
    the mean over tasks, the paper's "average of 19" when all 19 are there) and ``n_tasks``; these
    rows have ``task`` = ``mean``.
    """
    rows: list[dict] = []
    by_key: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for result in results:
        by_key.setdefault((result["model"], result["dataset"]), []).append(result)
    for (model, dataset), group_results in by_key.items():
        base = {**model_columns[model], "dataset": dataset}
        if group_results[0]["task"] not in TASKS:  # a labelled folder of your own
            for r in group_results:
                for metric in (*TASK_METRICS, "n_classes"):
                    if metric in r or metric == "n_skipped":
                        rows.append({**base, "task": r["task"], "task_label": own_task_label(r["task"]),
                                     "group": OWN_GROUP, "metric": metric, "value": r.get(metric, 0)})
            continue
        ordered = sorted(group_results, key=lambda r: list(TASKS).index(r["task"]))
        for r in ordered:
            task = TASKS[r["task"]]
            for metric in TASK_METRICS:
                rows.append({**base, "task": task.folder, "task_label": task.label, "group": task.group,
                             "metric": metric, "value": r.get(metric, 0) if metric == "n_skipped" else r[metric]})
        for group in (*GROUPS, "all"):
            members = [r for r in ordered if group == "all" or TASKS[r["task"]].group == group]
            if not members:
                continue
            common = {**base, "task": "mean", "task_label": "mean" if group == "all" else f"{group} mean",
                      "group": group}
            rows.append({**common, "metric": "test_top1", "value": float(np.mean([r["test_top1"] for r in members]))})
            rows.append({**common, "metric": "n_tasks", "value": len(members)})
    return rows


def paper_means(paper_top1: Mapping[str, float], tasks: Iterable[str]) -> dict[str, float]:
    """The paper's per-group and overall means (percent) over the given study tasks only."""
    tasks = list(tasks)
    out = {}
    for group in (*GROUPS, "all"):
        values = [paper_top1[TASKS[t].paper_key] for t in tasks if group == "all" or TASKS[t].group == group]
        if values:
            out[group] = float(np.mean(values))
    return out


# ------------------------------------------------------------------------------------ figures
GROUP_LABELS = {"natural": "Natural", "specialized": "Specialized", "structured": "Structured", "all": "Mean"}


def _models(data: pd.DataFrame, table: pd.DataFrame) -> list[dict]:
    """The models of ``data`` in table order; styles from the whole ``table`` (the study's models)."""
    styles = model_styles(table)
    models = []
    for _, row in data.drop_duplicates("model").iterrows():
        style = styles[str(row["model"])]
        key = row["paper_key"] if isinstance(row["paper_key"], str) else ""
        models.append({"model": row["model"], "label": row["label"], "color": style.color, "hatch": style.hatch,
                       "paper_key": key})
    return models


def _bars(ax, positions, values, paper, models, width, intervals=None, levels=None):
    """One bar per model at each position; the paper's value (if any) as a black tick on the bar;
    ``intervals[j]``: model j's (low, high) per position (or None), an error bar on the bar;
    ``levels``: the chance top-1 (%) per position: a bar whose interval reaches it is faded."""
    for j, model in enumerate(models):
        x = positions + (j - (len(models) - 1) / 2) * width
        bars = ax.bar(x, values[j], width=width, color=model["color"], hatch=model["hatch"], edgecolor="black",
                      linewidth=0.4, label=model["label"])
        for k, patch in enumerate(bars):
            bounds = intervals[j][k] if intervals is not None else None
            if levels is not None and at_chance(values[j][k], bounds, levels[k]):
                patch.set_alpha(CHANCE_ALPHA)
                patch.set_hatch(CHANCE_HATCH)
                ax.text(x[k], values[j][k], CHANCE_TEXT, rotation=90, ha="center", va="bottom", fontsize=5,
                        color="0.35", label="_chance")
        if intervals is not None:
            draw_intervals(ax, x, intervals[j], at=values[j], label=f"_ci:{model['model']}")
        if paper[j] is not None:
            ax.scatter(x, paper[j], marker="_", s=40, color="black", linewidths=1.8, zorder=3)


def plot_transfer(table: pd.DataFrame, dataset: str, paths, paper_top1: Mapping[str, Mapping[str, float]] | None = None,
                  chance: Mapping[str, float] | None = None):
    """Top-1 (%) per task, grouped natural / specialized / structured, and the group means.

    ``paper_top1``: the paper's per-task top-1 (percent) by paper model key and paper task key; drawn
    beside ours for models that declare a ``paper_key`` (group means over the same tasks). The
    rows' ci_low / ci_high (if any), x 100, as error bars on the bars. ``chance``
    (``<dataset>/<task>`` -> 1 / the task's classes): bars at chance faded (a group mean against the
    mean of its tasks' chance levels); n test images under each task. Returns the saved (closed)
    figure.
    """
    data = table[(table["dataset"] == dataset) & (table["metric"] == "test_top1")]
    if data.empty:
        raise ValueError(f"no transfer rows for dataset {dataset!r}")
    models = _models(data, table)
    per_task = data[data["task"] != "mean"]
    tasks = [t for t in TASKS if t in set(per_task["task"])]
    groups = [g for g in (*GROUPS, "all") if g in set(data.loc[data["task"] == "mean", "group"])]
    task_interval = interval_lookup(per_task, ["model", "task"], scale=100)
    mean_interval = interval_lookup(data[data["task"] == "mean"], ["model", "group"], scale=100)

    def ours(model: str, task: str, group: str | None = None) -> float:
        rows = data[(data["model"] == model) & (data["task"] == task)]
        if group is not None:
            rows = rows[rows["group"] == group]
        return 100 * float(rows["value"].iloc[0]) if len(rows) else np.nan

    def theirs(model: dict) -> dict | None:
        if not paper_top1 or model["paper_key"] not in paper_top1:
            return None
        return paper_top1[model["paper_key"]]

    # Tasks of a group sit together, with a gap between groups.
    positions, x, previous = [], 0.0, None
    for task in tasks:
        if previous is not None and TASKS[task].group != previous:
            x += 0.6
        positions.append(x)
        previous = TASKS[task].group
        x += 1.0
    positions = np.asarray(positions)
    width = 0.8 / max(1, len(models))

    fig, (ax_tasks, ax_groups) = plt.subplots(
        1, 2, figsize=(min(16.0, max(7.0, 0.16 * len(tasks) * max(1, len(models)) + 4)), 4.5),
        gridspec_kw={"width_ratios": [max(len(tasks), 2), max(len(groups), 1) + 0.5]}, squeeze=True)
    values = [[ours(m["model"], t) for t in tasks] for m in models]
    paper = [None if theirs(m) is None else [theirs(m)[TASKS[t].paper_key] for t in tasks] for m in models]
    intervals = None if task_interval is None else [[task_interval(m["model"], t) for t in tasks] for m in models]
    task_levels = [chance_of(chance, dataset, t) for t in tasks]
    levels = None if all(v is None for v in task_levels) else [None if v is None else 100 * v for v in task_levels]
    _bars(ax_tasks, positions, values, paper, models, width, intervals, levels)
    tests = table[(table["dataset"] == dataset) & (table["metric"] == "n_test")]
    n_of = {t: n_text(tests.loc[tests["task"] == t, "value"].astype(float)) for t in tasks}
    ax_tasks.set_xticks(positions, [TASKS[t].label + (f"\n{n_of[t]}" if n_of[t] else "") for t in tasks],
                        rotation=45, ha="right", fontsize=7)
    ax_tasks.set_ylabel("linear-probe top-1 (%)")
    ax_tasks.set_ylim(0, 100)
    for group in GROUPS:
        members = [p for p, t in zip(positions, tasks) if TASKS[t].group == group]
        if members:
            # A group of one task has one bar group's width: its name is shortened to fit.
            name = GROUP_LABELS[group] if len(members) > 1 else GROUP_LABELS[group][:4] + "."
            ax_tasks.text(np.mean(members), 101, name, ha="center", va="bottom", fontsize=7)
            if members[0] > positions[0]:
                ax_tasks.axvline(members[0] - 0.8, color="gray", linewidth=0.6, linestyle=":")

    gpos = np.arange(len(groups), dtype=float)
    gvalues = [[ours(m["model"], "mean", g) for g in groups] for m in models]
    gpaper = []
    for m in models:
        top1 = theirs(m)
        means = paper_means(top1, tasks) if top1 is not None else None
        gpaper.append(None if means is None else [means.get(g, np.nan) for g in groups])
    gintervals = None if mean_interval is None else [[mean_interval(m["model"], g) for g in groups] for m in models]
    glevels = None
    if levels is not None:
        glevels = []
        for g in groups:
            members = [v for t, v in zip(tasks, levels) if v is not None and (g == "all" or TASKS[t].group == g)]
            glevels.append(float(np.mean(members)) if members else None)
    _bars(ax_groups, gpos, gvalues, gpaper, models, width, gintervals, glevels)
    n_all = len(tasks)
    ax_groups.set_xticks(gpos, [GROUP_LABELS[g] if g != "all" else f"Mean of {n_all}" for g in groups],
                         rotation=45, ha="right", fontsize=8)
    ax_groups.set_ylim(0, 100)
    ax_groups.set_yticklabels([])

    handles, labels = ax_tasks.get_legend_handles_labels()
    if any(p is not None for p in paper):
        handles.append(plt.Line2D([], [], color="black", marker="_", linestyle="none", markersize=12, markeredgewidth=2))
        labels.append("paper (published)")
    empty_note(ax_tasks, [v for row in values for v in row], "every probe scores 0")
    fig.suptitle(f"VTAB-1k linear probes: {dataset} ({len(tasks)} task{'s' if len(tasks) != 1 else ''})")
    # Beside the group means, not under the whole figure (a figure-wide legend sets the width).
    legend_outside(ax_groups, handles, labels)
    fig.tight_layout()
    if levels is not None and any(a.get_label() == "_chance" for a in [*ax_tasks.texts, *ax_groups.texts]):
        chance_note(fig)
    save_figure(fig, paths)
    return fig


# ------------------------------------------------------------------- what its rules are given
def probe_items(study, wildcards) -> dict[str, dict[str, dict]]:
    """The three extracted splits of every task of one (model, VTAB dataset) as Study.item
    records: task -> split -> item, tasks in the dataset's order (one probe job fits them all).
    A labelled folder: ``{"own": {"all": item}}`` (one output; its manifest says the splits)."""
    from beyond_imagenet.datasets.vtab import EXTRACTED_SPLITS, split_dataset_name

    if is_own_dataset(study, wildcards.dataset):
        return {OWN_GROUP: {"all": study.item(wildcards.model, wildcards.dataset)}}

    return {t: {s: study.item(wildcards.model, split_dataset_name(wildcards.dataset, t, s)) for s in EXTRACTED_SPLITS}
            for t in study.datasets[wildcards.dataset].tasks}


def probe_inputs(study, wildcards) -> dict[str, list[str]]:
    """The markers of the extraction groups that write the splits of one (model, VTAB dataset),
    and their manifests."""
    items = [i for splits in probe_items(study, wildcards).values() for i in splits.values()]
    inputs = {"groups": study.output_markers(items), "manifests": sorted({i["manifest"] for i in items})}
    if is_own_dataset(study, wildcards.dataset):
        inputs["splits"] = [study.splits_file(wildcards.dataset)]
    return inputs


def zero_shot_params(study, wildcards) -> dict[str, Any]:
    """What a probe job of (model, labelled folder) needs to build the CLIP zero-shot classifier from
    the class names: the model (``Study.model_entry``), what its checkpoint must hash to (the
    ``checkpoint_sha256`` of its identity: a file replaced since is refused) and the templates;
    empty for a VTAB dataset or a model that is not a CLIP model (``source: open_clip``)."""
    if not is_own_dataset(study, wildcards.dataset) or study.models[wildcards.model].source != "open_clip":
        return {}
    settings = study.evaluations.get("transfer", {}).get("zero_shot", {})
    identity = study.head_identity(wildcards.model)
    return {"model": study.model_entry(wildcards.model),
            "identity": {k: identity[k] for k in ("checkpoint_sha256",) if k in identity},
            "templates": list(settings.get("templates") or DEFAULT_TEMPLATES)}


def probe_files(study) -> list[str]:
    """Every probe result of the study: results/probes/<model>/<dataset>.json (its tasks' results)."""
    return [str(study.results / "probes" / m / f"{d}.json")
            for d in study.evaluation_datasets("transfer") for m in study.evaluation_models("transfer")]


def probe_results(paths: Iterable[str]) -> list[dict]:
    """The per-task results of probe files, ordered by dataset, then task, then model (the order of
    one file per task that the table and its resamples have always been built in)."""
    import json

    loaded = []
    for path in paths:
        with open(path) as f:
            loaded.append((path, json.load(f)["results"]))
    datasets = list(dict.fromkeys(r["dataset"] for _, results in loaded for r in results))
    flat = [(datasets.index(r["dataset"]), t, n, path, r)
            for n, (path, results) in enumerate(loaded) for t, r in enumerate(results)]
    return [(path, r) for *_, path, r in sorted(flat, key=lambda x: x[:3])]


# ------------------------------------------------------------------------------ the evaluation
def table(job) -> list[dict]:
    """transfer.csv from the probe results of every (model, dataset, task)."""
    return transfer_rows([r for _, r in probe_results(job.input)], job.params.models)


def samples(job) -> list[Sample]:
    """One sample per probe: its per-image test correctness (the fitted probe is not refitted). A
    model with a probe file that lacks ``test_correct`` (an older version) gets no sample: its
    rows keep empty intervals, with a warning naming the rerun."""
    results, stale = [], set()
    for path, result in probe_results(job.input):
        results.append(result)
        if "test_correct" not in result:
            stale.add(result["model"])
            log.warning("%s has no per-image test correctness (made by an older version): the transfer rows "
                        "of %s get no interval; rerun with --forcerun probe_transfer", path, result["model"])
    out_samples = []
    for r in results:
        if r["model"] in stale:
            continue
        if r["task"] in TASKS:
            task = TASKS[r["task"]]
            head = {"dataset": r["dataset"], "task": task.folder, "task_label": task.label, "group": task.group}
        else:  # a labelled folder's probe, k-shot probe or zero-shot classifier
            head = {"dataset": r["dataset"], "task": r["task"], "task_label": own_task_label(r["task"]),
                    "group": OWN_GROUP}
        ids = np.asarray(r.get("test_ids") or [str(i) for i in range(len(r["test_correct"]))], dtype=object)
        out_samples.append(Sample(r["model"], f"{r['dataset']}/{r['task']}", ids,
                                  {"correct": np.asarray(r["test_correct"], dtype=float)},
                                  lambda d, head=head: [{**head, "metric": "test_top1", "value": float(d["correct"].mean())}],
                                  correct={"test_top1": "correct"}))
    return out_samples


def combine(rows: list[dict]) -> list[dict]:
    """The group and overall means of a model's tasks (as :func:`transfer_rows`), from its task rows."""
    out = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        tasks = [r for r in rows if r["dataset"] == dataset and r["task"] != "mean" and r["metric"] == "test_top1"
                 and r["group"] in GROUPS]  # VTAB tasks (a labelled folder has no means)
        for group in (*GROUPS, "all"):
            members = [r["value"] for r in tasks if group == "all" or r["group"] == group]
            if members:
                out.append({"dataset": dataset, "task": "mean", "group": group, "metric": "test_top1",
                            "task_label": "mean" if group == "all" else f"{group} mean",
                            "value": float(np.mean(members))})
    return out


def published(study, wildcards) -> dict:
    """The paper's per-task top-1 (%), drawn beside models that declare a paper_key; a labelled
    folder has none (``own``: drawn by :func:`plot_own_transfer`)."""
    from beyond_imagenet.paper_results import load_paper_results

    if is_own_dataset(study, wildcards.dataset):
        return {"own": True}
    return {"paper_top1": load_paper_results()["vtab"]["top1"]}


def plot_transfer_paired(table: pd.DataFrame, dataset: str, paths, comparisons: pd.DataFrame | None = None):
    """``layout: paired``: per paradigm, ViT vs ConvNet probe top-1 (%) per task and the mean over
    tasks, with the winner and its margin; the mean's margin with its paired-bootstrap interval."""
    from beyond_imagenet.style import margin_lookup, plot_paired, styled_models

    data = table[(table["dataset"] == dataset) & (table["metric"] == "test_top1")]
    if data.empty:
        raise ValueError(f"no transfer rows for dataset {dataset!r}")
    tasks = [t for t in TASKS if t in set(data["task"])]
    per_task = data[data["task"] != "mean"].set_index(["model", "task"])["value"]
    means = data[(data["task"] == "mean") & (data["group"] == "all")].set_index("model")["value"]

    def value(model, group):
        return means.get(model, np.nan) if group == "mean" else per_task.get((model, group), np.nan)

    models = styled_models(data.assign(paper_key=data["paper_key"].fillna("")), table)
    return plot_paired([*tasks, "mean"], [*(TASKS[t].label for t in tasks), f"Mean of {len(tasks)}"], models, value,
                       paths, f"VTAB-1k linear probes on {dataset}, the paper's reading: ViT vs ConvNet",
                       "linear-probe top-1 (%)", scale=100, margin=margin_lookup(comparisons, dataset),
                       headline_group="mean", ylim=(0, 110))


def plot_own_transfer(table: pd.DataFrame, dataset: str, paths, chance: Mapping[str, float] | None = None):
    """A labelled folder: per model, the linear probe, the k-shot probes and (CLIP models) the
    zero-shot top-1 (%) on the same test images, with their intervals; the k-shot curve beside."""
    data = table[(table["dataset"] == dataset) & (table["metric"] == "test_top1")]
    if data.empty:
        raise ValueError(f"no transfer rows for dataset {dataset!r}")
    models = _models(data, table)
    interval = interval_lookup(data, ["model", "task"], scale=100)
    shots = sorted({t for t in data["task"] if t.startswith("k_shot_")}, key=lambda t: int(t.rsplit("_", 1)[-1]))
    tasks = [t for t in (LINEAR_PROBE, ZERO_SHOT) if t in set(data["task"])]
    value = data.set_index(["model", "task"])["value"]
    fig, axes = plt.subplots(1, 2 if shots else 1, figsize=(11 if shots else 7, 4.2), squeeze=False)
    ax = axes[0][0]
    width = 0.8 / max(1, len(models))
    positions = np.arange(len(tasks), dtype=float)
    classes = table[(table["dataset"] == dataset) & (table["metric"] == "n_classes")]["value"].astype(float)
    level = chance_of(chance, dataset, None) if chance else None
    level = 1 / classes.max() if level is None and len(classes) else level
    faded = False
    for j, m in enumerate(models):
        x = positions + (j - (len(models) - 1) / 2) * width
        heights = [100 * value.get((m["model"], t), np.nan) for t in tasks]
        bounds = [interval(m["model"], t) if interval is not None else None for t in tasks]
        bars = ax.bar(x, heights, width=width, color=m["color"], hatch=m["hatch"], edgecolor="black", linewidth=0.4,
                      label=m["label"])
        for k, patch in enumerate(bars):
            if level is not None and np.isfinite(heights[k]) and at_chance(heights[k], bounds[k], 100 * level):
                patch.set_alpha(CHANCE_ALPHA)
                patch.set_hatch(CHANCE_HATCH)
                ax.text(x[k], heights[k], CHANCE_TEXT, rotation=90, ha="center", va="bottom", fontsize=5,
                        color="0.35", label="_chance")
                faded = True
        if interval is not None:
            draw_intervals(ax, x, bounds, at=heights, label=f"_ci:{m['model']}")
    tests = table[(table["dataset"] == dataset) & (table["metric"] == "n_test")]
    n = n_text(tests["value"].astype(float))
    ax.set_xticks(positions, [own_task_label(t).replace(" (", "\n(") for t in tasks])
    ax.set_ylabel("test top-1 (%)" + (f" ({n})" if n else ""))
    ax.set_ylim(0, 100)
    if level is not None:  # a uniform guess among the classes
        for axis in axes[0]:
            axis.axhline(100 * level, color="gray", linestyle=":", linewidth=0.8, label="_chance")
    if shots:
        curve = axes[0][1]
        ks = [int(t.rsplit("_", 1)[-1]) for t in shots]
        for m in models:
            curve.plot(ks, [100 * value.get((m["model"], t), np.nan) for t in shots], marker="o", color=m["color"],
                       label=m["label"])
        curve.set_xlabel("training images per class (k)")
        curve.set_ylabel("k-shot linear-probe top-1 (%)")
        curve.set_ylim(0, 100)
        curve.set_xscale("log")
        curve.set_xticks(ks, [str(k) for k in ks])
        curve.minorticks_off()
    fig.suptitle(f"Linear probe and zero-shot on {dataset}")
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=m["color"], hatch=m["hatch"], edgecolor="black", linewidth=0.4) for m in models]
    labels = [m["label"] for m in models]
    if level is not None:
        handles.append(plt.Line2D([], [], color="gray", linestyle=":", linewidth=0.8))
        labels.append(f"chance (1/{round(1 / level)})")
    legend_outside(axes[0][-1], handles, labels)
    fig.tight_layout()
    if faded:
        chance_note(fig)
    save_figure(fig, paths)
    return fig


def draw(job) -> None:
    from beyond_imagenet.tables import read_table

    layout = job.params.layout
    if job.params.data.get("own"):  # a labelled folder: one layout (no paper reading to pair)
        plot_own_transfer(read_table(job.input[0]), job.wildcards.dataset, job.figure_paths(), job.params.chance)
        return
    if layout == "paired":
        plot_transfer_paired(read_table(job.input[0]), job.wildcards.dataset, job.figure_paths(),
                             read_table(job.input[1]) if len(job.input) > 1 else None)
        return
    plot_transfer(read_table(job.input[0]), job.wildcards.dataset, job.figure_paths(),
                  paper_top1=job.params.data["paper_top1"], chance=job.params.chance)


TRANSFER = register(Evaluation(
    name="transfer",
    title="Transferability",
    description="VTAB-1k (or your own labelled folder's) linear probes on cached features (CLIP_benchmark "
                "protocol); CLIP zero-shot from a labelled folder's class names",
    # The task's own labels, probed on features: models need no ImageNet-1k head.
    class_spaces=frozenset({"vtab", "own"}),  # own: a labelled folder (kind labelled_folder)
    reads="features",
    table=table,
    group_columns=("dataset", "task", "group"),
    samples=samples,
    combine=combine,
    figures=(Figure("transfer", draw, "transfer", data=published, paired=True),),
    headlines=(Headline("transfer", {"task": "mean", "group": "all", "metric": "test_top1"}, True,
                        "VTAB linear probe mean top-1 % ({dataset})", scale=100,
                        accuracy={"metric": "test_top1", "task": tuple(TASKS)}, n={"metric": "n_test"}, n_per="task"),
               Headline("transfer", {"task": LINEAR_PROBE, "group": OWN_GROUP, "metric": "test_top1"}, True,
                        "linear probe top-1 % ({dataset})", scale=100,
                        accuracy={"metric": "test_top1", "task": LINEAR_PROBE},
                        n={"metric": "n_test", "task": LINEAR_PROBE})),
))

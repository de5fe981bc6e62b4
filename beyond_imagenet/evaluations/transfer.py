"""Transferability (docs/evaluations.md §7): VTAB-1k linear probes on cached features.

One probe per (model, task) with the CLIP_benchmark protocol of :mod:`beyond_imagenet.metrics.transfer`;
then per-task, per-group and overall means in a tidy table. Usable without Snakemake::

    result = probe_vtab_task(train, val, test, n_classes=47, config=ProbeConfig())
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from beyond_imagenet.datasets.vtab import GROUPS, TASKS
from beyond_imagenet.evaluations import Evaluation, Figure, register
from beyond_imagenet.profile import Headline

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


# ------------------------------------------------------------------------------ the evaluation
def table(job) -> list[dict]:
    """transfer.csv from the probe results of every (model, dataset, task), in input order."""
    import json

    results = []
    for path in job.input:
        with open(path) as f:
            results.append(json.load(f))
    return transfer_rows(results, job.params.models)


def published(study, wildcards) -> dict:
    """The paper's per-task top-1 (%), drawn beside models that declare a paper_key."""
    from beyond_imagenet.paper_results import load_paper_results

    return {"paper_top1": load_paper_results()["vtab"]["top1"]}


def draw(job) -> None:
    from beyond_imagenet.tables import read_table
    from beyond_imagenet.transfer_plots import plot_transfer

    plot_transfer(read_table(job.input[0]), job.wildcards.dataset, job.figure_paths(),
                  paper_top1=job.params.data["paper_top1"])


TRANSFER = register(Evaluation(
    name="transfer",
    title="Transferability",
    description="VTAB-1k linear probes on cached features (CLIP_benchmark protocol)",
    # The task's own labels, probed on features: models need no ImageNet-1k head.
    class_spaces=frozenset({"vtab"}),
    reads="features",
    table=table,
    group_columns=("dataset", "task", "group"),
    figures=(Figure("transfer", draw, "transfer", data=published),),
    headlines=(Headline("transfer", {"task": "mean", "group": "all", "metric": "test_top1"}, True,
                        "VTAB linear probe mean top-1 % ({dataset})", scale=100),),
))

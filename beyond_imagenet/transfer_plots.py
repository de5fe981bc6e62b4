"""The transferability figure: VTAB linear-probe top-1 per task and per group, drawn from transfer.csv.

Bar colours and hatches from :func:`beyond_imagenet.style.model_styles` (the same in every figure).
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from beyond_imagenet.datasets.vtab import GROUPS, TASKS  # noqa: E402
from beyond_imagenet.evaluations.transfer import paper_means  # noqa: E402
from beyond_imagenet.style import model_styles, save_figure  # noqa: E402

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


def _bars(ax, positions, values, paper, models, width):
    """One bar per model at each position; the paper's value (if any) as a black tick on the bar."""
    for j, model in enumerate(models):
        x = positions + (j - (len(models) - 1) / 2) * width
        ax.bar(x, values[j], width=width, color=model["color"], hatch=model["hatch"], edgecolor="black",
               linewidth=0.4, label=model["label"])
        if paper[j] is not None:
            ax.scatter(x, paper[j], marker="_", s=40, color="black", linewidths=1.8, zorder=3)


def plot_transfer(table: pd.DataFrame, dataset: str, paths, paper_top1: Mapping[str, Mapping[str, float]] | None = None):
    """Top-1 (%) per task, grouped natural / specialized / structured, and the group means.

    ``paper_top1``: the paper's per-task top-1 (percent) by paper model key and paper task key; drawn
    beside ours for models that declare a ``paper_key`` (group means over the same tasks). Returns
    the saved (closed) figure.
    """
    data = table[(table["dataset"] == dataset) & (table["metric"] == "test_top1")]
    if data.empty:
        raise ValueError(f"no transfer rows for dataset {dataset!r}")
    models = _models(data, table)
    per_task = data[data["task"] != "mean"]
    tasks = [t for t in TASKS if t in set(per_task["task"])]
    groups = [g for g in (*GROUPS, "all") if g in set(data.loc[data["task"] == "mean", "group"])]

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
    _bars(ax_tasks, positions, values, paper, models, width)
    ax_tasks.set_xticks(positions, [TASKS[t].label for t in tasks], rotation=45, ha="right", fontsize=8)
    ax_tasks.set_ylabel("linear-probe top-1 (%)")
    ax_tasks.set_ylim(0, 100)
    for group in GROUPS:
        members = [p for p, t in zip(positions, tasks) if TASKS[t].group == group]
        if members:
            ax_tasks.text(np.mean(members), 101, GROUP_LABELS[group], ha="center", va="bottom", fontsize=8)
            if members[0] > positions[0]:
                ax_tasks.axvline(members[0] - 0.8, color="gray", linewidth=0.6, linestyle=":")

    gpos = np.arange(len(groups), dtype=float)
    gvalues = [[ours(m["model"], "mean", g) for g in groups] for m in models]
    gpaper = []
    for m in models:
        top1 = theirs(m)
        means = paper_means(top1, tasks) if top1 is not None else None
        gpaper.append(None if means is None else [means.get(g, np.nan) for g in groups])
    _bars(ax_groups, gpos, gvalues, gpaper, models, width)
    n_all = len(tasks)
    ax_groups.set_xticks(gpos, [GROUP_LABELS[g] if g != "all" else f"Mean of {n_all}" for g in groups],
                         rotation=45, ha="right", fontsize=8)
    ax_groups.set_ylim(0, 100)
    ax_groups.set_yticklabels([])

    handles, labels = ax_tasks.get_legend_handles_labels()
    if any(p is not None for p in paper):
        handles.append(plt.Line2D([], [], color="black", marker="_", linestyle="none", markersize=12, markeredgewidth=2))
        labels.append("paper (published)")
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(f"VTAB-1k linear probes: {dataset} ({len(tasks)} task{'s' if len(tasks) != 1 else ''})")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    save_figure(fig, paths)
    return fig

"""Figures, drawn only from the tidy metric tables (never from model outputs)."""

from __future__ import annotations

import math
from typing import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

# save_figure lives in beyond_imagenet.style; imported here too, for `from beyond_imagenet.plots import save_figure`.
from beyond_imagenet.style import ModelStyle, model_styles, save_figure  # noqa: E402, F401

# Colours: beyond_imagenet.style (one per model, the same in every figure). No hatch on the model's
# bars here: the hatched bars of the reliability diagram are the gap to the diagonal.


def _panels(n: int, width: float = 3.4, height: float = 3.4):
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _per_model(table: pd.DataFrame, dataset: str, draw: Callable, title: str, paths):
    """One panel per model; ``draw(ax, rows, style)``. Returns the saved (closed) figure."""
    data = table[table["dataset"] == dataset]
    if data.empty:
        raise ValueError(f"no calibration rows for dataset {dataset!r}")
    styles = model_styles(table)  # the whole table: the study's models, whatever the dataset
    models = list(dict.fromkeys(data["model"]))
    fig, axes = _panels(len(models))
    for ax, model in zip(axes, models):
        draw(ax, data[data["model"] == model], styles[str(model)])
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, paths)
    return fig


def _summary(rows: pd.DataFrame, metric: str) -> float:
    return float(rows.loc[rows["metric"] == metric, "value"].iloc[0])


def _bins(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    sel = rows[rows["metric"] == metric].copy()
    sel["bin"] = sel["bin"].astype(int)
    return sel.sort_values("bin")


def plot_reliability(table: pd.DataFrame, dataset: str, paths, paper: dict[str, dict] | None = None):
    """Per-bin accuracy bars, the gap to the diagonal, and the diagonal (one panel per model)."""

    def draw(ax, rows, style: ModelStyle):
        acc, conf = _bins(rows, "bin_accuracy"), _bins(rows, "bin_confidence")
        lower, upper = acc["bin_lower"].astype(float).to_numpy(), acc["bin_upper"].astype(float).to_numpy()
        centers, width = (lower + upper) / 2, upper - lower
        accuracy = acc["value"].astype(float).fillna(0).to_numpy()
        confidence = conf["value"].astype(float).to_numpy()
        ax.bar(centers, accuracy, width=width, color=style.color, edgecolor="black", linewidth=0.5, label="accuracy")
        filled = ~np.isnan(confidence)
        ax.bar(centers[filled], (confidence - accuracy)[filled], bottom=accuracy[filled], width=width[filled],
               color="none", edgecolor="#ff7f0e", hatch="//", linewidth=0.5, label="gap")
        ax.plot([0, 1], [0, 1], "k--", linewidth=1)
        ece = _summary(rows, "ece")
        label = rows["label"].iloc[0]
        extra = ""
        key = rows["paper_key"].iloc[0]
        if paper and isinstance(key, str) and key in paper:
            extra = f" (paper {paper[key]:.3f})"
        ax.set_title(f"{label}\nECE {ece:.3f}{extra}, acc {_summary(rows, 'accuracy'):.1%}", fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
        ax.legend(loc="upper left", fontsize=7)

    return _per_model(table, dataset, draw, f"Reliability diagrams: {dataset}", paths)


def plot_confidence_histogram(table: pd.DataFrame, dataset: str, paths):
    """Percentage of samples per confidence bin (one panel per model)."""

    def draw(ax, rows, style: ModelStyle):
        counts = _bins(rows, "bin_count")
        lower = counts["bin_lower"].astype(float).to_numpy()
        upper = counts["bin_upper"].astype(float).to_numpy()
        values = counts["value"].astype(float).to_numpy()
        share = 100 * values / max(values.sum(), 1)
        ax.bar((lower + upper) / 2, share, width=upper - lower, color=style.color, edgecolor="black", linewidth=0.5)
        ax.axvline(_summary(rows, "mean_confidence"), color="k", linestyle="--", linewidth=1, label="mean confidence")
        ax.axvline(_summary(rows, "accuracy"), color="#2ca02c", linestyle=":", linewidth=1.5, label="accuracy")
        ax.set_title(rows["label"].iloc[0], fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_xlabel("confidence")
        ax.set_ylabel("% of samples")
        ax.legend(loc="upper left", fontsize=7)

    return _per_model(table, dataset, draw, f"Confidence histograms: {dataset}", paths)

"""Figures of the invariance, CKA and model-profile evaluations (same conventions as plots.py).

Line styles from :func:`beyond_imagenet.style.model_styles`: colour = the model (the same in every
figure; supervised blues, CLIP reds), line style/marker = architecture family, so the paper's two
axes (ConvNet vs Transformer, supervised vs CLIP) read off every curve.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from beyond_imagenet.plots import plt
from beyond_imagenet.style import model_styles, save_figure

INVARIANCE_PANELS = (("scale", "scale factor"), ("shift", "shift (original px)"), ("resolution", "resolution (px)"))
INVARIANCE_METRICS = {"top1": "top-1 accuracy (%)", "true_class_prob": "mean true-class probability"}


# ------------------------------------------------------------------------------------ invariance
def plot_invariance(table: pd.DataFrame, dataset: str, metric: str, paths: Sequence,
                    paper: Mapping[str, Any] | None = None):
    """Three panels (scale, shift, resolution): ``metric`` against the level, one line per model.

    ``paper``: the published ``invariance`` section (top-1 %); drawn thin and dotted for models
    with a ``paper_key`` when ``metric`` is top1. Returns the saved (closed) figure.
    """
    data = table[(table["dataset"] == dataset) & (table["metric"] == metric) & (table["level"].notna())]
    if data.empty:
        raise ValueError(f"no invariance rows for dataset {dataset!r} and metric {metric!r}")
    styles = model_styles(table)  # the whole table: the study's models
    scale = 100.0 if metric == "top1" else 1.0
    kinds = [(k, label) for k, label in INVARIANCE_PANELS if (data["transform"] == k).any()]
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds), 3.6), squeeze=False)
    for ax, (kind, xlabel) in zip(axes[0], kinds):
        rows = data[data["transform"] == kind]
        for model, sub in rows.groupby("model", sort=False):
            sub = sub.assign(level=sub["level"].astype(float)).sort_values("level")
            first = sub.iloc[0]
            style = styles[str(model)]
            ax.plot(sub["level"], sub["value"].astype(float) * scale, label=first["label"], color=style.color,
                    linestyle=style.linestyle, marker=style.marker)
            key = first.get("paper_key")
            published = (paper or {}).get(kind, {}).get("top1", {}).get(key) if metric == "top1" else None
            if published:
                ax.plot(paper[kind]["values"], published, color=style.color,
                        linestyle=":", linewidth=1, alpha=0.6)
        standard = rows.loc[rows["standard"].astype(str) == "True", "level"].astype(float).unique()
        for level in standard:
            ax.axvline(level, color="k", linewidth=0.6, linestyle=":")
        ax.set_xlabel(xlabel)
        ax.set_title(kind.capitalize())
        ax.set_ylabel(INVARIANCE_METRICS.get(metric, metric))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    note = "; published top-1 dotted" if metric == "top1" and paper and data["paper_key"].notna().any() else ""
    fig.suptitle(f"Transformation invariance on {dataset} (standard level: vertical line{note})", fontsize=10)
    fig.tight_layout()
    save_figure(fig, paths)
    return fig


# ------------------------------------------------------------------------------------------ CKA
def _short(layer: str) -> str:
    """``stages.2.blocks.5`` -> ``s2.b5``; ``transformer.resblocks.3`` -> ``3``: compact tick labels."""
    out: list[str] = []
    for token in layer.replace("trunk.", "").replace("transformer.resblocks.", "").split("."):
        if token.isdigit() and out and out[-1].isalpha():
            out[-1] += token
        elif token.isdigit():
            out.append(token)
        else:
            out.append(token[0] + "".join(c for c in token if c.isdigit()))
    return ".".join(out)


def _ticks(ax, axis: str, layers: Sequence[str]) -> None:
    step = max(1, len(layers) // 8)
    positions = list(range(0, len(layers), step))
    getattr(ax, f"set_{axis}ticks")(positions)
    getattr(ax, f"set_{axis}ticklabels")([_short(layers[i]) for i in positions], fontsize=6,
                                         rotation=90 if axis == "x" else 0)


def plot_cka(matrices: Sequence[Any], kind: str, labels: Mapping[str, str], dataset: str, n_images: int,
             paths: Sequence) -> None:
    """Layer × layer CKA heatmaps, one panel per model (``within``) or per model pair (``cross``).

    ``matrices``: :class:`beyond_imagenet.evaluations.cka.passes.CkaMatrix` items; rows (y) are the layers of model a
    from the input upwards, columns (x) the layers of model b.
    """
    chosen = [m for m in matrices if m.kind == kind]
    if not chosen:
        raise ValueError(f"no {kind}-model CKA matrices in the file")
    cols = min(len(chosen), 4 if kind == "within" else 3)
    rows = -(-len(chosen) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat[len(chosen):]:
        ax.set_visible(False)
    image = None
    for ax, m in zip(axes.flat, chosen):
        image = ax.imshow(np.asarray(m.cka, dtype=float), origin="lower", cmap="magma", vmin=0.0, vmax=1.0,
                          aspect="auto", interpolation="nearest")
        a, b = labels.get(m.model_a, m.model_a), labels.get(m.model_b, m.model_b)
        ax.set_title(a if kind == "within" else f"{a} vs\n{b}", fontsize=8)
        ax.set_ylabel(f"{a} layer" if kind == "cross" else "layer", fontsize=7)
        ax.set_xlabel(f"{b} layer" if kind == "cross" else "layer", fontsize=7)
        _ticks(ax, "x", m.layers_b)
        _ticks(ax, "y", m.layers_a)
    fig.suptitle(f"Linear CKA ({kind}-model) on {dataset}, {n_images} images", fontsize=10)
    fig.tight_layout()
    if image is not None:
        fig.colorbar(image, ax=list(axes.flat[: len(chosen)]), shrink=0.8, label="CKA")
    save_figure(fig, paths)


# ------------------------------------------------------------------------------------- profile
def _direction(value) -> bool | None:
    """higher_is_better as read back from CSV: True, False, or None for an empty cell."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, str):
        return {"true": True, "false": False}.get(value.strip().lower())
    return bool(value)


def plot_profile(profile: pd.DataFrame, paths: Sequence, title: str = "Model profile") -> None:
    """Every model (rows) across every evaluation headline (columns) on one page.

    Cell colour: how good the model is on that headline relative to the others (green = best,
    red = worst; grey = no spread, missing, or no better direction); cell text: the value.
    Column names carry ↑ / ↓ for higher / lower is better.
    """
    import textwrap

    if profile.empty:
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.axis("off")
        ax.text(0.5, 0.5, "no evaluation with a headline number in this study", ha="center", va="center")
        save_figure(fig, paths)
        return
    headlines = list(dict.fromkeys(profile["headline"]))
    models = list(dict.fromkeys(profile["model"]))
    labels = profile.drop_duplicates("model").set_index("model")["label"].to_dict()
    score = profile.pivot(index="model", columns="headline", values="score").reindex(index=models, columns=headlines)
    value = profile.pivot(index="model", columns="headline", values="value").reindex(index=models, columns=headlines)
    better = profile.drop_duplicates("headline").set_index("headline")["higher_is_better"].to_dict()
    fig, ax = plt.subplots(figsize=(1.3 + 1.15 * len(headlines), 1.4 + 0.45 * len(models)))
    cmap = plt.get_cmap("RdYlGn").with_extremes(bad="#dddddd")
    # Colour range padded so that the extremes stay light enough to read the numbers on.
    ax.imshow(np.ma.masked_invalid(score.to_numpy(dtype=float)), cmap=cmap, vmin=-0.35, vmax=1.35, aspect="auto")
    for i in range(len(models)):
        for j in range(len(headlines)):
            v = value.iat[i, j]
            text = "–" if pd.isna(v) else f"{v:.3g}"
            ax.text(j, i, text, ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(headlines)))
    arrows = {True: " ↑", False: " ↓"}
    ax.set_xticklabels([textwrap.fill(f"{h}{arrows.get(_direction(better[h]), '')}", 18) for h in headlines],
                       fontsize=6.5, rotation=0)
    ax.xaxis.tick_top()
    ax.set_yticks(range(len(models)))
    ax.set_yticklabels([labels.get(m, m) for m in models], fontsize=8)
    ax.set_title(title, fontsize=10, pad=12)
    fig.tight_layout()
    save_figure(fig, paths)

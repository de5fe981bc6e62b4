"""Each headline against ImageNet top-1, one point per model (docs/evaluations.md §15).

The figure that scales with the number of models: per headline of the profile
(``results/metrics/profile.csv``) a panel with the model's ImageNet top-1 (the study's reference
headline, ``across_models.reference_headline``) on x and the headline on y, each point with its
interval on both axes, coloured by paradigm (``style.paradigm_colors``) and marked by family
(``style.FAMILY_STYLES``). The models named beside their point: the study's ``label_models``, by
default every model up to ``style.MANY_MODELS`` and past it the paper's (``style.labelled_models``),
placed where they overlap nothing (``style.place_labels``). A model at chance on either axis
(the profile's ``at_chance``) is drawn hollow and faded. The robustness panel draws the
logit-linear fit of the shifted sets' average on clean ImageNet top-1 over the study's models
(Taori et al. 2020; the ``predicted_top1`` rows of ``robustness.csv``) and each model's effective
robustness, the vertical gap from its point to the line. Panels and fonts grow with the number of
models; the legend sits under the panels, never over a point.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from beyond_imagenet.style import (
    CHANCE_ALPHA,
    CHANCE_LEGEND,
    FAMILY_STYLES,
    legend_outside,
    labelled_models,
    model_fontsize,
    paradigm_colors,
    plt,
    save_figure,
)

FAMILY_NAMES = {"convnet": "ConvNet", "vit": "ViT", "other": "other family"}


def _family(value) -> str:
    value = str(value).strip().lower()
    return value if value in FAMILY_STYLES else "other"


def _flag(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value) if value is not None and not (isinstance(value, float) and np.isnan(value)) else False


def _text(value) -> str:
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)


def robustness_line(robustness: pd.DataFrame | None) -> tuple[float, float, int] | None:
    """``(a, c, models)`` of the logit-linear fit logit(average top-1) = a logit(clean top-1) + c the
    robustness table's effective robustness rests on, recovered from its ``predicted_top1`` rows of
    the average (points on the line, in fractions); None without such rows (too few models)."""
    from beyond_imagenet.evaluations.robustness import CLEAN_BENCHMARK
    from beyond_imagenet.metrics.robustness import logit

    if robustness is None or robustness.empty:
        return None
    table = robustness.assign(**{c: robustness[c].astype(object).where(robustness[c].notna(), "").astype(str)
                                 for c in ("benchmark", "corruption", "metric")})
    predicted = table[(table["benchmark"] == "average") & (table["metric"] == "predicted_top1")]
    clean = table[(table["benchmark"] == CLEAN_BENCHMARK) & (table["metric"] == "top1") & (table["corruption"] == "")]
    both = predicted.groupby("model")["value"].first().to_frame("y").join(
        clean.groupby("model")["value"].first().to_frame("x"), how="inner").astype(float).dropna()
    if len(both) < 2 or np.ptp(logit(both["x"].to_numpy())) == 0:
        return None
    a, c = np.polyfit(logit(both["x"].to_numpy()), logit(both["y"].to_numpy()), 1)
    return float(a), float(c), len(both)


def _line(a: float, c: float, x_percent: np.ndarray) -> np.ndarray:
    from beyond_imagenet.metrics.robustness import logit

    return 100 / (1 + np.exp(-(a * logit(np.asarray(x_percent) / 100) + c)))


def _empty_reason(rows: pd.DataFrame, ref: pd.DataFrame, models: Sequence[str]) -> str:
    """Why a panel has no point: no model has both numbers, e.g. "% of top-1 retained" (invariance)
    is undefined for a model at 0 % top-1."""
    values = [float(rows.at[m, "value"]) for m in models if m in rows.index]
    without_ref = [m for m in models if m not in ref.index or not np.isfinite(float(ref.at[m, "value"]))]
    if not values:
        reason = "no model has this headline"
    elif not any(np.isfinite(values)):
        headline = str(rows["headline"].iloc[0])
        reason = (f"no value for any of the {len(values)} models"
                  + ("\n(% of top-1 retained is undefined for a model at 0 % top-1)" if "retained" in headline
                     else ""))
    else:
        reason = f"{len(without_ref)} models have no ImageNet top-1"
    return f"no point: {reason}"


def plot_vs_imagenet(profile: pd.DataFrame, paths: Sequence[str | os.PathLike], reference: str | None,
                     robustness: pd.DataFrame | None = None, label_models: Sequence[str] | None = None,
                     title: str = "Each headline against ImageNet top-1"):
    """The figure (see the module docstring); returns the saved (closed) figure. ``label_models``:
    the study's list (None: the default of ``style.labelled_models``)."""
    models = list(dict.fromkeys(profile["model"])) if len(profile) else []
    if not models or reference not in set(profile["headline"]):
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.axis("off")
        ax.text(0.5, 0.5, f"no {reference or 'ImageNet top-1'} headline in the profile: nothing to plot against",
                ha="center", va="center", label="_empty")
        save_figure(fig, paths)
        return fig
    details = profile.drop_duplicates("model").set_index("model")
    ref = profile[profile["headline"] == reference].set_index("model")
    with_ci = all(c in profile.columns for c in ("ci_low", "ci_high"))
    headlines = [h for h in dict.fromkeys(profile["headline"]) if h != reference]
    n = len(models)
    colors = paradigm_colors([_text(p) for p in details["paradigm"]])
    paper = [m for m in models if _text(details.at[m, "paper_key"])]
    named = labelled_models(models, label_models, paper)
    size = model_fontsize(n, few=7.0, least=5.5)
    panel = 3.4 + 1.4 * min(1.0, max(0, n - 4) / 26)  # inches: 3.4 at 4 models, 4.8 at 30
    cols = max(1, min(3, len(headlines)))
    rows = max(1, math.ceil(len(headlines) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * (panel + 0.9), rows * (panel + 0.55)), squeeze=False)
    for ax in axes.flat[len(headlines):]:
        ax.set_visible(False)
    if not headlines:
        axes[0, 0].set_visible(True)
        axes[0, 0].axis("off")
        axes[0, 0].text(0.5, 0.5, "the profile has no headline besides ImageNet top-1", ha="center", va="center",
                        label="_empty")
    fit = robustness_line(robustness)
    drew = {"chance": False, "fit": False}
    pending = []
    for ax, headline in zip(axes.flat, headlines):
        rows_h = profile[profile["headline"] == headline].set_index("model")
        direction = rows_h["higher_is_better"].iloc[0]
        arrow = {"true": " ↑", "false": " ↓"}.get(_text(direction).lower(), "")
        shown = [m for m in models if m in rows_h.index and m in ref.index
                 and np.isfinite(float(rows_h.at[m, "value"])) and np.isfinite(float(ref.at[m, "value"]))]
        xs, ys = {}, {}
        for m in shown:
            x, y = float(ref.at[m, "value"]), float(rows_h.at[m, "value"])
            xs[m], ys[m] = x, y
            guessing = _flag(rows_h.at[m, "at_chance"]) or _flag(ref.at[m, "at_chance"]) \
                if "at_chance" in profile else False
            drew["chance"] |= guessing
            color = "0.55" if guessing else colors[_text(details.at[m, "paradigm"])]
            alpha = CHANCE_ALPHA if guessing else 1.0
            if with_ci:
                xl, xh = (float(ref.at[m, c]) for c in ("ci_low", "ci_high"))
                yl, yh = (float(rows_h.at[m, c]) for c in ("ci_low", "ci_high"))
                xerr = [[max(0.0, x - xl)], [max(0.0, xh - x)]] if np.isfinite(xl) and np.isfinite(xh) else None
                yerr = [[max(0.0, y - yl)], [max(0.0, yh - y)]] if np.isfinite(yl) and np.isfinite(yh) else None
                if xerr is not None or yerr is not None:
                    ax.errorbar([x], [y], xerr=xerr, yerr=yerr, fmt="none", ecolor=color, elinewidth=0.6,
                                alpha=0.6 * alpha, capsize=0, zorder=3, label=f"_ci:{m}")
            ax.plot([x], [y], marker=FAMILY_STYLES[_family(details.at[m, "family"])][0], linestyle="none",
                    markersize=5.5 if n <= 8 else 4.5, color=color, markerfacecolor="white" if guessing else color,
                    markeredgecolor=color if guessing else "black", markeredgewidth=0.8 if guessing else 0.3,
                    alpha=alpha, zorder=5, label=f"_point:{m}")
        note = ""
        if fit is not None and rows_h["evaluation"].iloc[0] == "robustness" and xs:
            a, c, n_fit = fit
            low, high = min(xs.values()), max(xs.values())
            span = np.linspace(max(0.01, low - 0.05 * (high - low + 1)), min(99.99, high + 0.05 * (high - low + 1)), 100)
            ax.plot(span, _line(a, c, span), color="black", linewidth=0.9, zorder=4, label="_fit")
            for m in xs:  # effective robustness: the vertical gap from the point to the line
                ax.plot([xs[m], xs[m]], [float(_line(a, c, [xs[m]])[0]), ys[m]], color="0.4", linewidth=0.6,
                        linestyle=":", zorder=3, label="_effective_robustness")
            drew["fit"] = True
            note = f"\nline: logit-linear fit over {n_fit} models; dotted gap = effective robustness"
        counts = [t for t in dict.fromkeys(_text(v) for v in rows_h["n"]) if t] if "n" in rows_h else []
        n_line = " / ".join(counts)
        ax.set_title(f"{headline}{arrow}\n{len(shown)} models" + (f", {n_line}" if n_line else "") + note,
                     fontsize=7.5)
        ax.set_xlabel(reference, fontsize=7.5)
        ax.set_ylabel(f"{headline}{arrow}", fontsize=7.5)
        ax.tick_params(labelsize=6.5)
        ax.grid(color="0.93", linewidth=0.5)
        ax.set_axisbelow(True)
        if xs:  # room for the labels inside the axes
            ax.margins(x=0.12 if n <= 8 else 0.06, y=0.12 if n <= 8 else 0.06)
        else:  # a blank axis says nothing: say why
            ax.text(0.5, 0.5, _empty_reason(rows_h, ref, models), transform=ax.transAxes, ha="center",
                    va="center", fontsize=7.5, color="0.3", wrap=True, label="_empty", zorder=10,
                    bbox=dict(facecolor="white", edgecolor="0.6", boxstyle="round"))
        pending.append((ax, [(xs[m], ys[m], _text(details.at[m, "label"]) or m) for m in named if m in xs]))
    handles = [plt.Line2D([], [], marker="o", linestyle="none", color=colors[p], markeredgecolor="black",
                          markeredgewidth=0.3, label=p or "(no paradigm)") for p in colors]
    families = list(dict.fromkeys(_family(f) for f in details["family"]))
    handles += [plt.Line2D([], [], marker=FAMILY_STYLES[f][0], linestyle="none", color="0.35",
                           label=FAMILY_NAMES[f]) for f in families]
    if drew["chance"]:
        handles.append(plt.Line2D([], [], marker="o", linestyle="none", color="0.55", markerfacecolor="white",
                                  alpha=CHANCE_ALPHA, label=CHANCE_LEGEND))
    if drew["fit"]:
        handles.append(plt.Line2D([], [], color="black", linewidth=0.9, label="logit-linear fit (robustness)"))
    from beyond_imagenet.style import suptitle_above

    unnamed = n - len(named)
    suptitle_above(fig, f"{title} ({n} models" + (f"; {len(named)} named, {unnamed} unnamed: see the results page"
                                                  if unnamed else "") + "; bars: intervals)", fontsize=9)
    fig.canvas.draw()  # the layout is final: labels are placed against it
    from beyond_imagenet.style import place_labels

    for ax, points in pending:
        place_labels(ax, points, fontsize=size, color="0.15")
    legend_outside(fig, handles=handles, ncol=min(len(handles), 4 if drew["chance"] else 8))
    save_figure(fig, paths)
    return fig


def draw(job) -> None:
    from beyond_imagenet.tables import read_table

    inputs = dict(job.input.items())
    robustness = read_table(inputs["robustness"]) if "robustness" in inputs else None
    named = job.params.label_models
    plot_vs_imagenet(read_table(inputs["profile"]), job.figure_paths(), job.params.reference, robustness,
                     None if named is None else list(named), title=job.params.title)

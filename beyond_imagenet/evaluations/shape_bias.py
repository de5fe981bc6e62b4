"""Shape / texture bias (docs/evaluations.md §5) on the cue-conflict stimuli: 16-class decisions
from the cached ImageNet-1k logits."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from beyond_imagenet.evaluations import Evaluation, Figure, Sample, published_section, register
from beyond_imagenet.metrics.calibration import softmax
from beyond_imagenet.metrics.shape_bias import (
    CATEGORIES,
    parse_cue_conflict_name,
    probabilities_to_16_class,
    shape_bias,
)
from beyond_imagenet.profile import Headline
from beyond_imagenet.style import (
    CHANCE_ALPHA,
    CHANCE_TEXT,
    as_text,
    at_chance,
    chance_note,
    chance_of,
    legend_outside,
    margin_lookup,
    n_text,
    plot_paired,
    draw_intervals,
    interval,
    interval_lookup,
    interval_text,
    plt,
    save_figure,
    styled_models,
)
from beyond_imagenet.tables import read_table
from beyond_imagenet.workflow import read_items, skipped_row

Row = dict[str, Any]


def per_image(item, manifest, block) -> dict[str, np.ndarray]:
    """Per image: the 16-class decision (row by row: blocks give the whole matrix's decisions)."""
    return {"decision": probabilities_to_16_class(softmax(block["logits"]))}


def shape_bias_rows(out: dict[str, Any]) -> list[Row]:
    """Overall shape bias, shape / texture fractions, 16-class accuracy, and shape bias per category.
    ``out``: ``ids`` and ``decision`` (:func:`per_image`) or the whole ``logits``."""
    decisions = out["decision"] if "decision" in out else probabilities_to_16_class(softmax(out["logits"]))
    result = shape_bias(decisions, list(out["ids"]))
    rows = [{"category": "", "metric": m, "value": float(result[m])}
            for m in ("shape_bias", "shape_fraction", "texture_fraction", "accuracy_16", "n_images", "n_images_all")]
    rows += [{"category": c, "metric": "shape_bias", "value": float(v)} for c, v in result["per_category"].items()]
    return rows


def bias_rows(data: dict[str, np.ndarray]) -> list[Row]:
    """:func:`shape_bias_rows` but the counts, from per-image shape / texture hits (metrics.shape_bias)."""
    def ratio(num, den):
        return num / den if den else float("nan")

    conflict, shape, texture = data["conflict"], data["hit_shape"], data["hit_texture"]
    n_shape, n_texture = int(shape.sum()), int(texture.sum())
    n_all = len(conflict)  # the fractions divide by all images, as model-vs-human (metrics.shape_bias)
    values = {"shape_bias": ratio(n_shape, n_shape + n_texture), "shape_fraction": ratio(n_shape, n_all),
              "texture_fraction": ratio(n_texture, n_all), "accuracy_16": float(np.mean(data["correct16"]))}
    rows = [{"category": "", "metric": m, "value": float(v)} for m, v in values.items()]
    n = len(CATEGORIES)  # data["category"]: index of the shape category in CATEGORIES
    has = np.bincount(data["category"], weights=conflict, minlength=n)
    per_shape = np.bincount(data["category"], weights=shape, minlength=n)
    per_texture = np.bincount(data["category"], weights=texture, minlength=n)
    for k, cat in enumerate(CATEGORIES):
        if has[k]:
            s, t = int(per_shape[k]), int(per_texture[k])
            rows.append({"category": cat, "metric": "shape_bias", "value": float(ratio(s, s + t))})
    return rows


def samples(job) -> list[Sample]:
    out_samples = []
    for item, _, out in read_items(job, per_image):
        decisions = out["decision"]
        parsed = [parse_cue_conflict_name(f) for f in out["ids"]]
        shape = np.asarray([s for s, _ in parsed], dtype=object)
        texture = np.asarray([t for _, t in parsed], dtype=object)
        conflict = shape != texture
        data = {"conflict": conflict, "hit_shape": (decisions == shape) & conflict,
                "hit_texture": (decisions == texture) & conflict, "correct16": decisions == shape,
                "category": np.asarray([CATEGORIES.index(c) for c in shape], dtype=np.int64)}
        out_samples.append(Sample(item["model"], item["dataset"], out["ids"], data,
                                  lambda d, dataset=item["dataset"]: [{"dataset": dataset, **r} for r in bias_rows(d)]))
    return out_samples


def table(job) -> list[Row]:
    rows = []
    for item, _, out in read_items(job, per_image):
        rows += [{**job.params.models[item["model"]], "dataset": item["dataset"], **r}
                 for r in [*shape_bias_rows(out), skipped_row(out, category="")]]
    return rows


# ------------------------------------------------------------------------------------ figures
HUMAN_COLOR = "#7f7f7f"


def _draw_humans(ax, humans: dict, y: dict[str, int]) -> None:
    """The human observers (``human_reference``): a grey band over the range of their overall shape
    bias with a line at the mean, and per category a grey diamond at the mean with a line over the
    range (no error-bar container: these are ranges of observers, not intervals)."""
    overall = humans["overall"]
    n = overall["n_subjects"]
    ax.axvspan(overall["min"], overall["max"], color=HUMAN_COLOR, alpha=0.18, linewidth=0, zorder=0,
               label="_humans:band")
    ax.axvline(overall["mean"], color=HUMAN_COLOR, linewidth=2.2, alpha=0.8,
               label=f"humans ({n} observers): {overall['mean']:.3f}, range {overall['min']:.3f}–{overall['max']:.3f}")
    categories = [c for c in y if c in humans.get("per_category", {})]
    stats = [humans["per_category"][c] for c in categories]
    ax.hlines([y[c] for c in categories], [s["min"] for s in stats], [s["max"] for s in stats], color=HUMAN_COLOR,
              linewidth=3, alpha=0.35, zorder=1, label="_humans:range")
    ax.plot([s["mean"] for s in stats], [y[c] for c in categories], marker="D", linestyle="none", color=HUMAN_COLOR,
            markersize=5, zorder=2, label="_humans:mean")


def plot_shape_bias(table: pd.DataFrame, dataset: str, paths, paper: dict | None = None, chance: dict | None = None,
                    humans: dict | None = None):
    """Per-category shape bias (points) and each model's overall shape bias (vertical line).

    With ci_low / ci_high in the rows: a horizontal error bar (model colour) through each
    per-category point, a light band of the model's colour over its overall interval, and the
    interval in the legend ("0.412 [0.380, 0.445]"). ``humans`` (``human_reference``): the human
    observers' band (overall) and per-category means and ranges, in grey. A model whose 16-class
    accuracy is at chance (``chance``: dataset -> 1/16) is drawn faded and so labelled.
    """
    table = as_text(table, "category")
    data = table[(table["dataset"] == dataset) & (table["metric"] == "shape_bias")]
    if data.empty:
        raise ValueError(f"no shape-bias rows for dataset {dataset!r}")
    models = styled_models(data, table)
    # The authors' own decisions put through the spec's formula (what this workflow computes from
    # such decisions); the printed figure value is named beside it where the two disagree
    # (convnext_clip: 0.4241 vs 0.447, paper-results §11.4).
    published = (paper or {}).get("raw_csv", {})
    printed = (paper or {}).get("figure", {})
    overall_rows = table[(table["dataset"] == dataset) & (table["category"] == "")]
    accuracy = overall_rows[overall_rows["metric"] == "accuracy_16"]
    accuracy_interval = interval_lookup(accuracy, ["model"])
    level = chance_of(chance, dataset)
    guessing = {m for m, v in zip(accuracy["model"], accuracy["value"].astype(float))
                if at_chance(v, accuracy_interval(m) if accuracy_interval else None, level)}
    counts = overall_rows[overall_rows["metric"] == "n_images"]["value"].astype(float)
    fig, ax = plt.subplots(figsize=(6.0, 6.4))
    y = {c: i for i, c in enumerate(CATEGORIES)}
    if humans:
        _draw_humans(ax, humans, y)
    for k, m in models.iterrows():
        rows = data[data["model"] == m["model"]]
        per_cat = rows[rows["category"] != ""]
        faded = m["model"] in guessing
        alpha = CHANCE_ALPHA if faded else 1.0
        jitter = (k - (len(models) - 1) / 2) * 0.12
        positions = [y[c] + jitter for c in per_cat["category"]]
        ax.plot(per_cat["value"], positions, marker=m["marker"], linestyle="none", alpha=alpha,
                color=m["color"], markeredgecolor="black", markeredgewidth=0.3, markersize=6)
        per_cat_interval = interval_lookup(per_cat, ["category"])
        if per_cat_interval is not None:
            draw_intervals(ax, positions, [per_cat_interval(c) for c in per_cat["category"]], horizontal=True,
                           at=per_cat["value"].astype(float).to_numpy(), label=f"_ci:{m['model']}",
                           ecolor=m["color"], elinewidth=0.8, capsize=1.5, capthick=0.8, zorder=1.5, alpha=alpha)
        overall = rows.loc[rows["category"] == "", "value"]
        mean = float(overall.iloc[0]) if len(overall) else np.nan
        bounds = interval(rows[rows["category"] == ""])
        note = f" ({CHANCE_TEXT}: 16-class accuracy at 1/16)" if faded else ""
        if not math.isnan(mean):
            if bounds is not None:
                ax.axvspan(*bounds, color=m["color"], alpha=0.15 * alpha, linewidth=0, zorder=0,
                           label=f"_band:{m['model']}")
            ax.axvline(mean, color=m["color"], linewidth=1.6, alpha=alpha,
                       linestyle=(0, (1, 1)) if faded else "-",
                       label=f"{m['label']}: {mean:.3f}{interval_text(bounds)}{note}")
        else:
            ax.plot([], [], color=m["color"], label=f"{m['label']}: n/a")
        if m["paper_key"] in published:
            value = published[m["paper_key"]]
            figure_value = printed.get(m["paper_key"], value)
            note = f" (paper figure: {figure_value:.3f})" if abs(figure_value - value) > 0.005 else ""
            ax.axvline(value, color=m["color"], linestyle="--", linewidth=1.2,
                       label=f"  published: {value:.3f}{note}")
    ax.set_yticks(range(len(CATEGORIES)))
    ax.set_yticklabels(CATEGORIES)
    ax.set_ylim(len(CATEGORIES) - 0.5, -0.5)
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("fraction of 'shape' decisions (shape bias)")
    top = ax.secondary_xaxis("top", functions=(lambda v: 1 - v, lambda v: 1 - v))
    top.set_xlabel("fraction of 'texture' decisions")
    ax.grid(axis="y", color="0.9")
    # Below the axes (the labels with intervals are long): never over the points.
    legend_outside(ax, loc="upper center", bbox_to_anchor=(0.5, -0.11))
    n = n_text(counts)
    ax.set_title(f"Shape vs texture bias on {dataset} (cue-conflict{', ' + n + ' conflict images' if n else ''})",
                 fontsize=9, pad=28)
    fig.tight_layout()
    if guessing:
        chance_note(fig)
    save_figure(fig, paths)
    return fig


def plot_shape_bias_paired(table: pd.DataFrame, dataset: str, paths, comparisons: pd.DataFrame | None = None,
                           chance: dict | None = None):
    """``layout: paired``: per paradigm, ViT vs ConvNet overall shape bias with the winner (the more
    shape-biased) and the margin's paired-bootstrap interval (``comparisons``); a model whose
    16-class accuracy is at chance (``chance``: dataset -> 1/16) faded and labelled, no winner named."""
    table = as_text(table, "category")
    data = table[(table["dataset"] == dataset) & (table["metric"] == "shape_bias") & (table["category"] == "")]
    if data.empty:
        raise ValueError(f"no shape-bias rows for dataset {dataset!r}")
    lookup = data.set_index("model")["value"]
    accuracy = table[(table["dataset"] == dataset) & (table["metric"] == "accuracy_16") & (table["category"] == "")]
    accuracy_interval = interval_lookup(accuracy, ["model"])
    level = chance_of(chance, dataset)
    guessing = {m for m, v in zip(accuracy["model"], accuracy["value"].astype(float))
                if at_chance(v, accuracy_interval(m) if accuracy_interval else None, level)}
    return plot_paired(["overall"], ["shape bias"], styled_models(data, table), lambda m, g: lookup.get(m, np.nan),
                       paths, f"Shape bias on {dataset}, the paper's reading: ViT vs ConvNet", "shape bias",
                       margin=margin_lookup(comparisons, dataset), headline_group="overall", ylim=(0, 1.1),
                       chance=(lambda m, g: m in guessing) if level is not None else None)


def draw(job) -> None:
    if job.params.layout == "paired":
        plot_shape_bias_paired(read_table(job.input[0]), job.wildcards.dataset, job.figure_paths(),
                               read_table(job.input[1]) if len(job.input) > 1 else None, chance=job.params.chance)
        return
    plot_shape_bias(read_table(job.input[0]), job.wildcards.dataset, job.figure_paths(), paper=job.params.data["paper"],
                    chance=job.params.chance, humans=job.params.data.get("humans"))


def figure_data(study, wildcards) -> dict[str, Any]:
    """The paper's numbers (for its models) and the human observers' shape bias (always)."""
    from beyond_imagenet.human_reference import load_human_shape_bias

    return {**published_section("shape_bias")(study, wildcards), "humans": load_human_shape_bias()}


SHAPE_BIAS = register(Evaluation(
    name="shape_bias",
    title="Shape bias",
    description="shape bias on cue-conflict, per category; shape/texture fractions",
    class_spaces=frozenset({"cue_conflict"}),
    table=table,
    group_columns=("dataset", "category"),
    samples=samples,
    figures=(Figure("shape_bias", draw, "shape_bias", data=figure_data, paired=True),),
    headlines=(Headline("shape_bias", {"metric": "shape_bias", "category": ""}, True, "shape bias ({dataset})",
                        accuracy={"metric": "accuracy_16", "category": ""}, n={"metric": "n_images", "category": ""}),),
))

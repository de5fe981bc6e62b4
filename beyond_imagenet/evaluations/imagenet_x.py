"""Types of mistakes (docs/evaluations.md §2): ImageNet-X error ratios per factor, from the ImageNet
val outputs joined with the imagenet-x package's annotations (no extraction of its own)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from beyond_imagenet.evaluations import Evaluation, Figure, Sample, published_section, register
from beyond_imagenet.metrics import imagenet_x as inx
from beyond_imagenet.metrics.imagenet_x import FACTORS
from beyond_imagenet.profile import Headline
from beyond_imagenet.style import (
    as_text,
    at_chance,
    chance_note,
    chance_of,
    clip_upper,
    dot_panels,
    grouped_bars,
    legend_outside,
    many_models,
    n_text,
    interval_lookup,
    plt,
    save_figure,
    styled_models,
)
from beyond_imagenet.tables import read_table
from beyond_imagenet.workflow import read_items, skipped_row

Row = dict[str, Any]


def per_image(item, manifest, block) -> dict[str, np.ndarray]:
    """Per image: the predicted class (what ImageNet-X joins with its annotations)."""
    return {"predicted": np.asarray(block["logits"]).argmax(axis=1)}


def imagenet_x_rows(out: dict[str, Any]) -> list[Row]:
    """Per factor: error ratio, accuracy and image count; ``average`` = mean of the 16 ratios
    (factors without images are NaN and left out); ``overall`` = accuracy over the joined images.
    ``out``: ``ids`` and ``predicted`` (:func:`per_image`) or the whole ``logits``."""
    predicted = out["predicted"] if "predicted" in out else np.asarray(out["logits"]).argmax(axis=1)
    table = inx.factor_table(list(out["ids"]), predicted)
    rows = []
    for factor in inx.FACTORS:
        for metric, column in (("error_ratio", "error_ratio"), ("accuracy", "acc"), ("n_images", "count")):
            rows.append({"factor": factor, "metric": metric, "value": float(table.loc[factor, column])})
    ratios = table.loc[list(inx.FACTORS), "error_ratio"]
    rows.append({"factor": "average", "metric": "error_ratio", "value": float(ratios.mean(skipna=True))})
    rows.append({"factor": "overall", "metric": "accuracy", "value": float(table.loc["overall", "acc"])})
    rows.append({"factor": "overall", "metric": "n_images", "value": float(table.loc["overall", "count"])})
    return rows


def table(job) -> list[Row]:
    rows = []
    for item, _, out in read_items(job, per_image):
        rows += [{**job.params.models[item["model"]], "dataset": item["dataset"], **r}
                 for r in [*imagenet_x_rows(out), skipped_row(out, factor="")]]
    return rows


def factor_rows(data: dict[str, np.ndarray], patterns: np.ndarray) -> list[Row]:
    """:func:`imagenet_x_rows` but the counts, vectorised (what the bootstrap recomputes: no join
    per resample). ``data``: per joined image, ``correct`` and ``pattern`` (the row of ``patterns``,
    the distinct 0/1 top-factor memberships, that is the image's): two bincounts per resample."""
    correct = data["correct"]
    images = np.bincount(data["pattern"], minlength=len(patterns)).astype(np.float64)
    hits = np.bincount(data["pattern"], weights=correct, minlength=len(patterns))
    count, n_correct = images @ patterns, hits @ patterns
    with np.errstate(divide="ignore", invalid="ignore"):
        acc_f = n_correct / count
        acc = correct.mean()
        ratio = (1 - acc_f) / (1 - acc)
    rows = []
    for k, factor in enumerate(inx.FACTORS):
        rows += [{"factor": factor, "metric": "error_ratio", "value": float(ratio[k])},
                 {"factor": factor, "metric": "accuracy", "value": float(acc_f[k])}]
    rows.append({"factor": "average", "metric": "error_ratio", "value": float(np.nanmean(ratio))
                 if not np.isnan(ratio).all() else np.nan})
    rows.append({"factor": "overall", "metric": "accuracy", "value": float(acc)})
    return rows


def samples(job) -> list[Sample]:
    """Per joined image: correct, and its top-factor membership (joined once)."""
    out_samples = []
    for item, _, out in read_items(job, per_image):
        joined = inx._join(list(out["ids"]), out["predicted"], "top")
        patterns, pattern = np.unique(joined[list(inx.FACTORS)].to_numpy(), axis=0, return_inverse=True)
        data = {"correct": (joined["predicted_class"] == joined["class"]).to_numpy(), "pattern": pattern.ravel()}
        out_samples.append(Sample(item["model"], item["dataset"], joined.index.to_numpy(dtype=object), data,
                                  lambda d, dataset=item["dataset"], p=patterns.astype(np.float64):
                                  [{"dataset": dataset, **r} for r in factor_rows(d, p)]))
    return out_samples


# ------------------------------------------------------------------------------------ figures
# The paper's ImageNet-X figure order.
IMAGENET_X_ORDER = ("color", "darker", "brighter", "larger", "smaller", "object_blocking", "person_blocking",
                    "partial_view", "pose", "shape", "subcategory", "texture", "pattern", "style",
                    "background", "multiple_objects", "average")


def plot_imagenet_x(table: pd.DataFrame, dataset: str, paths, paper: dict | None = None, chance: dict | None = None):
    """Error ratio per factor; supervised and CLIP models in separate panels, as in the paper; the
    rows' ci_low / ci_high (if any) as error bars on the bars. The y-axis is set by the ratios, not
    by one extreme interval (ends beyond it are clipped and marked with their value). A model whose
    overall accuracy is at chance (``chance``: dataset -> chance top-1) has faded bars: its ratios
    compare errors of guesses."""
    table = as_text(table, "factor")
    data = table[(table["dataset"] == dataset) & (table["metric"] == "error_ratio")]
    if data.empty:
        raise ValueError(f"no ImageNet-X rows for dataset {dataset!r}")
    models = styled_models(data, table)
    factors = [f for f in IMAGENET_X_ORDER if f in FACTORS or f == "average"]
    lookup = data.set_index(["model", "factor"])["value"]
    ratios = (paper or {}).get("error_ratio", {})
    intervals = interval_lookup(data, ["model", "factor"])
    accuracy = table[(table["dataset"] == dataset) & (table["metric"] == "accuracy") & (table["factor"] == "overall")]
    accuracy_interval = interval_lookup(accuracy, ["model"])
    level = chance_of(chance, dataset)
    guessing = {m for m, v in zip(accuracy["model"], accuracy["value"].astype(float))
                if at_chance(v, accuracy_interval(m) if accuracy_interval else None, level)}

    def value(model, factor):
        return lookup.get((model, factor), np.nan)

    def published(key, factor):
        return ratios.get(key, {}).get(factor, np.nan)

    top = clip_upper(data["value"].astype(float).to_numpy(), floor=2.0)
    counts = table[(table["dataset"] == dataset) & (table["metric"] == "n_images")]
    n_by_factor = counts.groupby("factor")["value"].first()
    if many_models(len(models)):  # past a handful of models: a sorted dot plot, one row per model, every paradigm
        return dot_panels(factors, [f.replace("_", " ") for f in factors], models, value, paths,
                          f"ImageNet-X error ratios on {dataset} (lower is better; 1 = average error)", "error ratio",
                          interval=intervals, chance=(lambda m, f: m in guessing) if guessing else None,
                          sort_by="average", higher_is_better=False, xlim=(0, top), reference=1.0,
                          n_of={f: f"n={int(n_by_factor[f])}" for f in factors if f in n_by_factor},
                          paper=published if paper else None, max_columns=9)
    panels = [("supervised", "Supervised"), ("clip", "CLIP")]
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 6.2), sharex=True, squeeze=False)
    for ax, (paradigm, title) in zip(axes[:, 0], panels):
        group = models[models["paradigm"] == paradigm].reset_index(drop=True)
        if group.empty:
            ax.text(0.5, 0.5, f"no {title} model in this study", transform=ax.transAxes, ha="center")
        else:
            grouped_bars(ax, factors, group, value, published if paper else None, interval=intervals,
                         chance=(lambda m, f: m in guessing) if guessing else None, top=top)
            legend_outside(ax)
        ax.set_ylim(0, top)
        ax.axhline(1.0, color="black", linestyle="--", linewidth=0.8)
        ax.set_ylabel("error ratio")
        ax.set_title(title, fontsize=9)
    labels = [f"{f.replace('_', ' ')}" + (f"\n(n={int(n_by_factor[f])})" if f in n_by_factor else "") for f in factors]
    axes[-1, 0].set_xticks(np.arange(len(factors)))
    axes[-1, 0].set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
    n_all = n_text(counts.loc[counts["factor"] == "overall", "value"].astype(float))
    fig.suptitle(f"ImageNet-X error ratios on {dataset} ({n_all} images; lower is better; 1 = average error)",
                 fontsize=10)
    fig.tight_layout()
    if guessing:
        chance_note(fig)
    save_figure(fig, paths)
    return fig


def draw(job) -> None:
    plot_imagenet_x(read_table(job.input[0]), job.wildcards.dataset, job.figure_paths(), paper=job.params.data["paper"],
                    chance=job.params.chance)


IMAGENET_X = register(Evaluation(
    name="imagenet_x",
    title="Types of mistakes (ImageNet-X)",
    description="ImageNet-X error ratio per factor and their mean",
    class_spaces=frozenset({"imagenet1k"}),
    # It joins on the ImageNet val file names, which only that kind has.
    kinds=frozenset({"imagenet_val"}),
    table=table,
    group_columns=("dataset", "factor"),
    samples=samples,
    figures=(Figure("imagenet_x", draw, "imagenet_x", data=published_section("imagenet_x")),),
    headlines=(Headline("imagenet_x", {"factor": "average", "metric": "error_ratio"}, False,
                        "ImageNet-X mean error ratio ({dataset})", accuracy={"factor": "overall", "metric": "accuracy"},
                        n={"factor": "overall", "metric": "n_images"}),),
))

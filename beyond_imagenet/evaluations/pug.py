"""Synthetic data (docs/evaluations.md §3): PUG-ImageNet accuracy per factor subset, from the
cached ImageNet-1k logits and the dataset's class_to_imagenet_idx.json."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from beyond_imagenet.evaluations import Evaluation, Figure, Sample, published_section, register
from beyond_imagenet.metrics.pug import PUG_SUBSETS, pug_accuracy, pug_average, pug_correct
from beyond_imagenet.profile import Headline
from beyond_imagenet.style import (
    at_chance,
    chance_note,
    chance_of,
    empty_note,
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
    """Per image: the predicted ImageNet class (scored against the PUG class map)."""
    return {"predicted": np.asarray(block["logits"]).argmax(axis=1)}


def pug_rows(out: dict[str, Any], class_map: dict[str, list[int]], rule: str = "membership") -> list[Row]:
    """Accuracy per factor subset and their unweighted mean (``Average``), under ``rule``.
    ``out``: ``labels``, ``ids`` and ``predicted`` (:func:`per_image`) or the whole ``logits``."""
    names = sorted(class_map)
    labels = np.asarray(out["labels"])
    predicted = out["predicted"] if "predicted" in out else np.asarray(out["logits"]).argmax(axis=1)
    subsets = np.asarray([sid.split("/", 1)[0] for sid in out["ids"]])
    per_subset, rows = {}, []
    for subset in PUG_SUBSETS:
        idx = np.flatnonzero(subsets == subset)
        if not len(idx):
            continue
        per_subset[subset] = pug_accuracy(predicted[idx], [names[k] for k in labels[idx]], class_map, rule)
        rows += [{"subset": subset, "metric": "top1", "value": per_subset[subset]},
                 {"subset": subset, "metric": "n_images", "value": float(len(idx))}]
    average = pug_average(per_subset) if len(per_subset) == len(PUG_SUBSETS) else np.nan
    rows.append({"subset": "Average", "metric": "top1", "value": average})
    return [{**r, "rule": rule} for r in rows]


def table(job) -> list[Row]:
    from beyond_imagenet.datasets.imagenet_variants import pug_class_map

    rule = job.params.settings["rule"]
    rows = []
    for item, manifest, out in read_items(job, per_image):
        class_map = pug_class_map(manifest["root"])
        rows += [{**job.params.models[item["model"]], "dataset": item["dataset"], **r}
                 for r in [*pug_rows(out, class_map, rule), skipped_row(out, subset="", rule=rule)]]
    return rows


def subset_rows(data: dict[str, np.ndarray], rule: str) -> list[Row]:
    """:func:`pug_rows` but the counts, from per-image correctness and subset."""
    per_subset, rows = {}, []  # data["subset"]: index in PUG_SUBSETS (-1: none)
    code = data["subset"]
    kept = code >= 0
    counts = np.bincount(code[kept], minlength=len(PUG_SUBSETS))
    hits = np.bincount(code[kept], weights=data["correct"][kept], minlength=len(PUG_SUBSETS))
    for k, subset in enumerate(PUG_SUBSETS):
        if counts[k]:
            per_subset[subset] = float(hits[k] / counts[k])
            rows.append({"subset": subset, "metric": "top1", "value": per_subset[subset]})
    average = pug_average(per_subset) if len(per_subset) == len(PUG_SUBSETS) else np.nan
    return [{**r, "rule": rule} for r in [*rows, {"subset": "Average", "metric": "top1", "value": average}]]


def samples(job) -> list[Sample]:
    """Per image: correct under the rule, and its factor subset (the stratum: each subset keeps its size)."""
    from beyond_imagenet.datasets.imagenet_variants import pug_class_map

    rule = job.params.settings["rule"]
    out_samples = []
    for item, manifest, out in read_items(job, per_image):
        class_map = pug_class_map(manifest["root"])
        names = sorted(class_map)
        predicted = out["predicted"]
        subsets = np.asarray([sid.split("/", 1)[0] for sid in out["ids"]])
        correct = np.asarray(pug_correct(predicted, [names[k] for k in np.asarray(out["labels"])], class_map, rule))
        out_samples.append(Sample(
            item["model"], item["dataset"], out["ids"],
            {"correct": correct, "subset": np.asarray([PUG_SUBSETS.index(x) if x in PUG_SUBSETS else -1
                                                       for x in subsets])},
            lambda d, dataset=item["dataset"]: [{"dataset": dataset, **r} for r in subset_rows(d, rule)],
            strata=subsets))
    return out_samples


def input_transform(study, dataset: str) -> str | None:
    """``transform: paper``: the paper code's CenterCrop(256) -> Resize(224) for the PUG sets."""
    section = study.evaluations.get("pug", {})
    if section.get("transform") == "paper" and dataset in section.get("datasets", []):
        return "center_crop_256_resize_224"
    return None


# ------------------------------------------------------------------------------------ figures
def plot_pug(table: pd.DataFrame, dataset: str, paths, paper: dict | None = None, chance: dict | None = None):
    """Top-1 (%) per PUG-ImageNet factor subset and the average of the 10; the rows' ci_low /
    ci_high (if any) as error bars on the bars; bars at chance (``chance``: dataset -> chance
    top-1) faded; n (images) under each subset; a panel whose bars are all 0 says so."""
    data = table[(table["dataset"] == dataset) & (table["metric"] == "top1")]
    if data.empty:
        raise ValueError(f"no PUG rows for dataset {dataset!r}")
    models = styled_models(data, table)
    subsets = [s for s in (*PUG_SUBSETS, "Average") if s in set(data["subset"])]
    lookup = data.set_index(["model", "subset"])["value"]
    rule = str(data["rule"].iloc[0])
    paper_top1 = (paper or {}).get("top1", {})
    paper_average = (paper or {}).get("average_figure", {})

    def value(model, subset):
        return lookup.get((model, subset), np.nan)

    def published(key, subset):
        if subset == "Average":
            return paper_average.get(key, np.nan)
        return paper_top1.get(key, {}).get(subset, np.nan)

    intervals = interval_lookup(data, ["model", "subset"])
    level = chance_of(chance, dataset)

    def is_chance(model, subset):
        return at_chance(value(model, subset), intervals(model, subset) if intervals else None, level)

    counts = table[(table["dataset"] == dataset) & (table["metric"] == "n_images")]
    n_of = {s: n_text(counts.loc[counts["subset"] == s, "value"].astype(float)) for s in subsets}
    n_of["Average"] = n_text([counts.groupby("model")["value"].sum().max()]) if len(counts) else ""
    if many_models(len(models)):  # past a handful of models: a sorted dot plot, one row per model
        return dot_panels(subsets, [s.replace("_", " ") for s in subsets], models, value, paths,
                          f"PUG-ImageNet ({dataset}), scoring rule '{rule}'", "top-1 (%)", scale=100,
                          interval=intervals, chance=is_chance if level is not None else None, sort_by="Average",
                          n_of=n_of, xlim=(0, 100), paper=published if paper else None, max_columns=6)
    fig, ax = plt.subplots(figsize=(10, 3.8))
    grouped_bars(ax, subsets, models, value, published if paper else None, scale=100, interval=intervals,
                 chance=is_chance if level is not None else None)
    ax.set_xticklabels([s.replace("_", " ") + (f"\n{n_of[s]}" if n_of.get(s) else "") for s in subsets],
                       rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_ylim(0, 100)
    empty_note(ax, [value(m, s) for m in models["model"] for s in subsets],
               "no model, the real ones included, gets an image right here")
    note = f"; published numbers use rule '{(paper or {}).get('rule', 'paper')}'" if paper else ""
    ax.set_title(f"PUG-ImageNet ({dataset}), scoring rule '{rule}'{note}", fontsize=9)
    legend_outside(ax)
    fig.tight_layout()
    if level is not None:
        chance_note(fig)
    save_figure(fig, paths)
    return fig


def draw(job) -> None:
    plot_pug(read_table(job.input[0]), job.wildcards.dataset, job.figure_paths(), paper=job.params.data["paper"],
             chance=job.params.chance)


PUG = register(Evaluation(
    name="pug",
    title="PUG-ImageNet",
    description="PUG-ImageNet top-1 per factor subset and their average",
    class_spaces=frozenset({"pug"}),
    table=table,
    settings=("rule",),
    group_columns=("dataset", "subset", "rule"),
    samples=samples,
    figures=(Figure("pug", draw, "pug", data=published_section("pug")),),
    headlines=(Headline("pug", {"subset": "Average", "metric": "top1"}, True, "PUG mean top-1 % ({dataset})",
                        scale=100, accuracy={"subset": "Average", "metric": "top1"}, n={"metric": "n_images"},
                        n_per="subset"),),
    input_transform=input_transform,
))

"""Cached ImageNet-1k logits -> tidy metric rows: robustness, ImageNet-X, shape bias, PUG.

Each function takes one cached output (``read_outputs``: logits, labels, ids) plus what the dataset
itself provides (its root, for ImageNet-Hard's label sets or PUG's class map) and returns rows
``{..., "metric", "value"}`` for one (model, dataset); the ``scripts/compute_*.py`` adapters add
the model columns and write the tables. The metric definitions live in ``beyond_imagenet.metrics``
(spec evaluations.md §2, §3, §5, §6); this module only routes data to them.

Robustness scorers are registered per dataset kind, so a new benchmark is one decorated function.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import numpy as np

from beyond_imagenet.datasets.readers import class_space_mask
from beyond_imagenet.metrics import imagenet_x as inx
from beyond_imagenet.metrics.pug import PUG_SUBSETS, pug_accuracy, pug_average
from beyond_imagenet.metrics.robustness import imagenet_c_summary, multilabel_top1, real_accuracy, top1
from beyond_imagenet.metrics.shape_bias import probabilities_to_16_class, shape_bias

Row = dict[str, Any]

#: The paper's robustness benchmarks in its figure order; "average" = mean of the 7 shifted ones.
CLEAN_BENCHMARK = "imagenet_val"
SHIFTED_BENCHMARKS = ("imagenet_v2", "imagenet_a", "imagenet_c", "imagenet_hard", "imagenet_r",
                      "imagenet_sketch", "imagenet_real")
BENCHMARK_ORDER = (CLEAN_BENCHMARK, *SHIFTED_BENCHMARKS, "average")

Scorer = Callable[..., list[Row]]
ROBUSTNESS_SCORERS: dict[str, Scorer] = {}


def robustness_scorer(*kinds: str):
    def wrap(fn: Scorer) -> Scorer:
        for kind in kinds:
            ROBUSTNESS_SCORERS[kind] = fn
        return fn

    return wrap


def _row(benchmark: str, metric: str, value: float, corruption: str = "", severity: int | str = "") -> Row:
    return {"benchmark": benchmark, "corruption": corruption, "severity": severity, "metric": metric,
            "value": float(value)}


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


# ------------------------------------------------------------------------------- robustness
@robustness_scorer("imagenet_val", "imagenet_v2", "imagenet_a", "imagenet_r", "imagenet_sketch", "image_folder")
def score_top1(out: dict[str, Any], *, kind: str, class_space: str, real: bool = False, **_: Any) -> list[Row]:
    """Top-1, with logits masked to the set's classes for the 200-class sets (A, R)."""
    rows = [_row(kind, "top1", top1(out["logits"], out["labels"], class_space_mask(class_space))),
            _row(kind, "n_images", len(out["labels"]))]
    if kind == CLEAN_BENCHMARK and real:
        rows += score_real(out)
    return rows


def score_real(out: dict[str, Any]) -> list[Row]:
    """ImageNet-ReaL on val outputs: top-1 in the image's ReaL set; images with an empty set are
    left out (NaN when none of the given images has a ReaL label)."""
    predicted = np.asarray(out["logits"]).argmax(axis=1)
    try:
        result = real_accuracy(list(out["ids"]), predicted)
    except ValueError as err:
        if "empty" not in str(err):
            raise
        return [_row("imagenet_real", "top1", np.nan), _row("imagenet_real", "n_images", 0)]
    return [_row("imagenet_real", "top1", result.accuracy), _row("imagenet_real", "n_images", result.n)]


@robustness_scorer("imagenet_hard")
def score_label_sets(out: dict[str, Any], *, kind: str, label_sets: dict[str, list[int]], **_: Any) -> list[Row]:
    """Top-1 counted correct when it is any of the image's valid labels (ImageNet-Hard)."""
    missing = [i for i in out["ids"] if i not in label_sets]
    if missing:
        raise ValueError(f"{len(missing)} output ids have no label set, e.g. {missing[0]}")
    result = multilabel_top1(np.asarray(out["logits"]), [label_sets[i] for i in out["ids"]])
    return [_row("imagenet_hard", "top1", result.accuracy), _row("imagenet_hard", "n_images", result.n)]


@robustness_scorer("imagenet_c", "imagenet_c_all")
def score_imagenet_c(out: dict[str, Any], *, class_space: str, **_: Any) -> list[Row]:
    """Accuracy per (corruption, severity) and per corruption, corruption errors (AlexNet-
    normalised), the mean accuracy over the 15 (the ``top1`` the paper plots) and mCE."""
    from beyond_imagenet.datasets.imagenet_variants import imagenet_c_condition

    logits, labels = np.asarray(out["logits"]), np.asarray(out["labels"])
    groups: dict[tuple[str, int], list[int]] = defaultdict(list)
    for i, sid in enumerate(out["ids"]):
        groups[imagenet_c_condition(sid)].append(i)
    mask = class_space_mask(class_space)
    acc = {cond: top1(logits[idx], labels[idx], mask) for cond, idx in groups.items()}
    summary = imagenet_c_summary(acc)
    rows = [_row("imagenet_c", "top1", a, c, s) for (c, s), a in sorted(acc.items())]
    rows += [_row("imagenet_c", "top1", a, c) for c, a in summary["per_corruption"].items()]
    rows += [_row("imagenet_c", "ce", v, c) for c, v in summary["ce"].items()]
    rows += [_row("imagenet_c", "top1", summary["mean_accuracy"]), _row("imagenet_c", "mCE", summary["mCE"]),
             _row("imagenet_c", "n_images", len(labels))]
    return rows


def robustness_rows(out: dict[str, Any], kind: str, class_space: str, root: str | Path | None = None,
                    real: bool = False) -> list[Row]:
    """Rows of one (model, dataset) output for the dataset's kind."""
    if kind not in ROBUSTNESS_SCORERS:
        raise ValueError(f"no robustness scorer for dataset kind {kind!r}; known: {sorted(ROBUSTNESS_SCORERS)}")
    label_sets = None
    if kind == "imagenet_hard":
        from beyond_imagenet.datasets.imagenet_variants import imagenet_hard_label_sets

        label_sets = imagenet_hard_label_sets(root)
    return ROBUSTNESS_SCORERS[kind](out, kind=kind, class_space=class_space, real=real, label_sets=label_sets)


def robustness_average(rows: list[Row]) -> list[Row]:
    """The paper's "Average": mean top-1 over the shifted benchmarks present (clean val excluded)."""
    values = [r["value"] for r in rows if r["benchmark"] in SHIFTED_BENCHMARKS and r["metric"] == "top1"
              and r["corruption"] == "" and not np.isnan(r["value"])]
    return [_row("average", "top1", np.mean(values) if values else np.nan),
            _row("average", "n_benchmarks", len(values))]


# ------------------------------------------------------------------------------- ImageNet-X
def imagenet_x_rows(out: dict[str, Any]) -> list[Row]:
    """Per factor: error ratio, accuracy and image count; ``average`` = mean of the 16 ratios
    (factors without images are NaN and left out); ``overall`` = accuracy over the joined images."""
    predicted = np.asarray(out["logits"]).argmax(axis=1)
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


# ------------------------------------------------------------------------------- shape bias
def shape_bias_rows(out: dict[str, Any]) -> list[Row]:
    """Overall shape bias, shape / texture fractions, 16-class accuracy, and shape bias per category."""
    decisions = probabilities_to_16_class(softmax(out["logits"]))
    result = shape_bias(decisions, list(out["ids"]))
    rows = [{"category": "", "metric": m, "value": float(result[m])}
            for m in ("shape_bias", "shape_fraction", "texture_fraction", "accuracy_16", "n_images", "n_images_all")]
    rows += [{"category": c, "metric": "shape_bias", "value": float(v)} for c, v in result["per_category"].items()]
    return rows


# --------------------------------------------------------------------------------------- PUG
def pug_rows(out: dict[str, Any], class_map: dict[str, list[int]], rule: str = "membership") -> list[Row]:
    """Accuracy per factor subset and their unweighted mean (``Average``), under ``rule``."""
    names = sorted(class_map)
    labels = np.asarray(out["labels"])
    predicted = np.asarray(out["logits"]).argmax(axis=1)
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

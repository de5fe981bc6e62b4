"""Robustness (docs/evaluations.md §6): top-1 on ImageNet and the shifted sets from the cached
ImageNet-1k logits, one scorer per dataset kind; the 7-set average; the bar figure.

ImageNet-ReaL re-scores the ImageNet val outputs (no extraction of its own). A new benchmark is
one decorated scorer (:func:`robustness_scorer`) and, for its bar label and place, an entry of
:data:`BENCHMARKS`; a benchmark missing there is still drawn (after the known ones), never dropped.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from beyond_imagenet.datasets.readers import class_space_mask
from beyond_imagenet.evaluations import Evaluation, Figure, Sample, published_section, register
from beyond_imagenet.metrics.robustness import (
    LOGIT_CLIP,
    effective_robustness,
    imagenet_c_summary,
    logit_linear_fit,
    multilabel_top1,
    real_accuracy,
)
from beyond_imagenet.profile import Headline
from beyond_imagenet.style import (
    as_text,
    at_chance,
    chance_note,
    chance_of,
    empty_note,
    dot_panels,
    grouped_bars,
    legend_outside,
    many_models,
    margin_lookup,
    n_text,
    plot_paired,
    interval_lookup,
    plt,
    save_figure,
    styled_models,
)
from beyond_imagenet.tables import read_table
from beyond_imagenet.workflow import read_items, skipped_row

Row = dict[str, Any]
log = logging.getLogger(__name__)

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


# ------------------------------------------------------------------------------- robustness
def per_image(item, manifest, block) -> dict[str, np.ndarray]:
    """Per image of a block: ``correct`` (top-1 among the set's classes: the logits masked to
    them first, A / R) and ``predicted`` (the argmax over all 1000: ReaL, ImageNet-Hard). What
    every scorer reads instead of the logits, so a robustness job never holds a logits matrix."""
    # ImageNet-Hard is scored on its label sets only (its sample label is not range-checked).
    return _vectors(block["logits"], block["labels"], class_space_mask(item["class_space"]),
                    check=item["kind"] != "imagenet_hard")


def _vectors(logits, labels, mask, check: bool = True) -> dict[str, np.ndarray]:
    logits = np.asarray(logits)
    scores = logits[:, mask] if mask is not None else logits
    labels = np.asarray(labels)
    if check and labels.size and (labels.min() < 0 or labels.max() >= scores.shape[1]):
        raise ValueError(f"labels must lie in 0..{scores.shape[1] - 1} (the masked space)")
    return {"correct": scores.argmax(axis=1) == labels, "predicted": logits.argmax(axis=1)}


def _per_image_of(out: dict[str, Any], class_space: str) -> dict[str, Any]:
    """``out`` with the per-image vectors: as read (:func:`per_image`), or from its whole logits
    (an output already in memory, the library's use)."""
    if "correct" in out:
        return out
    return {**out, **_vectors(out["logits"], out["labels"], class_space_mask(class_space),
                              check=class_space != "imagenet1k_multilabel")}


def _accuracy(correct) -> float:
    correct = np.asarray(correct)
    if correct.size == 0:
        raise ValueError("no samples")
    return float(np.mean(correct))


@robustness_scorer("imagenet_val", "imagenet_v2", "imagenet_a", "imagenet_r", "imagenet_sketch", "image_folder")
def score_top1(out: dict[str, Any], *, kind: str, class_space: str, real: bool = False, **_: Any) -> list[Row]:
    """Top-1, with logits masked to the set's classes for the 200-class sets (A, R)."""
    out = _per_image_of(out, class_space)
    rows = [_row(kind, "top1", _accuracy(out["correct"])),
            _row(kind, "n_images", len(out["labels"]))]
    if kind == CLEAN_BENCHMARK and real:
        rows += score_real(out)
    return rows


def score_real(out: dict[str, Any]) -> list[Row]:
    """ImageNet-ReaL on val outputs: top-1 in the image's ReaL set; images with an empty set are
    left out (NaN when none of the given images has a ReaL label)."""
    predicted = out["predicted"] if "predicted" in out else np.asarray(out["logits"]).argmax(axis=1)
    try:
        result = real_accuracy(list(out["ids"]), predicted)
    except ValueError as err:
        if "empty" not in str(err):
            raise
        return [_row("imagenet_real", "top1", np.nan), _row("imagenet_real", "n_images", 0)]
    return [_row("imagenet_real", "top1", result.accuracy), _row("imagenet_real", "n_images", result.n)]


@robustness_scorer("imagenet_hard")
def score_label_sets(out: dict[str, Any], *, kind: str, class_space: str, label_sets: dict[str, list[int]],
                     **_: Any) -> list[Row]:
    """Top-1 counted correct when it is any of the image's valid labels (ImageNet-Hard)."""
    out = _per_image_of(out, class_space)
    missing = [i for i in out["ids"] if i not in label_sets]
    if missing:
        raise ValueError(f"{len(missing)} output ids have no label set, e.g. {missing[0]}")
    result = multilabel_top1(out["predicted"], [label_sets[i] for i in out["ids"]])
    return [_row("imagenet_hard", "top1", result.accuracy), _row("imagenet_hard", "n_images", result.n)]


@robustness_scorer("imagenet_c", "imagenet_c_all")
def score_imagenet_c(out: dict[str, Any], *, class_space: str, **_: Any) -> list[Row]:
    """Accuracy per (corruption, severity) and per corruption, corruption errors (AlexNet-
    normalised), the mean accuracy over the 15 (the ``top1`` the paper plots) and mCE."""
    from beyond_imagenet.datasets.imagenet_variants import imagenet_c_condition

    out = _per_image_of(out, class_space)
    groups: dict[tuple[str, int], list[int]] = defaultdict(list)
    for i, sid in enumerate(out["ids"]):
        groups[imagenet_c_condition(sid)].append(i)
    correct = np.asarray(out["correct"])
    acc = {cond: _accuracy(correct[idx]) for cond, idx in groups.items()}
    return [*imagenet_c_rows(acc), _row("imagenet_c", "n_images", len(out["labels"]))]


def imagenet_c_rows(acc: dict[tuple[str, int], float]) -> list[Row]:
    """The ImageNet-C rows (but the count) from the accuracy per (corruption, severity)."""
    summary = imagenet_c_summary(acc)
    rows = [_row("imagenet_c", "top1", a, c, s) for (c, s), a in sorted(acc.items())]
    rows += [_row("imagenet_c", "top1", a, c) for c, a in summary["per_corruption"].items()]
    rows += [_row("imagenet_c", "ce", v, c) for c, v in summary["ce"].items()]
    rows += [_row("imagenet_c", "top1", summary["mean_accuracy"]), _row("imagenet_c", "mCE", summary["mCE"])]
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


def _mean(values: np.ndarray) -> float:
    """Mean over the images with a value (NaN: left out, e.g. no ReaL label); NaN if none."""
    kept = values[~np.isnan(values)]
    return float(kept.mean()) if len(kept) else np.nan


def robustness_sample(out: dict[str, Any], kind: str, class_space: str, root=None, real: bool = False):
    """Per-image data (correct as 1/0, NaN for images a benchmark leaves out), strata and the rows
    function (the scorer's rows but the counts) of one output, for the bootstrap."""
    out = _per_image_of(out, class_space)
    predicted = np.asarray(out["predicted"])
    if kind == "imagenet_hard":
        from beyond_imagenet.datasets.imagenet_variants import imagenet_hard_label_sets

        label_sets = imagenet_hard_label_sets(root)
        correct = [_in_set(p, label_sets[i]) for p, i in zip(predicted.tolist(), out["ids"])]
        return {"correct": np.asarray(correct, dtype=float)}, None, \
            lambda d: [_row("imagenet_hard", "top1", _mean(d["correct"]))]
    correct = np.asarray(out["correct"]).astype(float)
    if kind in ("imagenet_c", "imagenet_c_all"):
        from beyond_imagenet.datasets.imagenet_variants import imagenet_c_condition

        conditions = [imagenet_c_condition(sid) for sid in out["ids"]]
        names = sorted(set(conditions))
        index = {cond: k for k, cond in enumerate(names)}
        code = np.asarray([index[cond] for cond in conditions], dtype=np.int64)

        def c_rows(d):
            sums = np.bincount(d["condition"], weights=d["correct"], minlength=len(names))
            counts = np.bincount(d["condition"], minlength=len(names))
            return imagenet_c_rows({cond: sums[k] / counts[k] for k, cond in enumerate(names)})

        return {"correct": correct, "condition": code}, code, c_rows
    data = {"correct": correct}
    if kind == CLEAN_BENCHMARK and real:
        from beyond_imagenet.classes import val_file_name
        from beyond_imagenet.metrics.robustness import real_labels

        table = real_labels()
        data["real"] = np.asarray([_in_set(p, table.get(val_file_name(i), ())) for p, i in
                                   zip(predicted.tolist(), out["ids"])], dtype=float)

    def rows(d):
        found = [_row(kind, "top1", d["correct"].mean())]
        return found + ([_row("imagenet_real", "top1", _mean(d["real"]))] if "real" in d else [])

    return data, None, rows


def _row_data(row) -> str | None:
    """The ReaL row rests on the val images with a ReaL label (``data["real"]`` is NaN for the others)."""
    return "real" if row.get("benchmark") == "imagenet_real" else None


def _in_set(predicted: int, labels) -> float:
    valid = {int(v) for v in labels if int(v) >= 0}
    return float(predicted in valid) if valid else np.nan


def samples(job) -> list[Sample]:
    out_samples = []
    for item, manifest, out in read_items(job, per_image):
        data, strata, rows = robustness_sample(out, item["kind"], item["class_space"], manifest["root"],
                                               real=job.params.settings["real"])
        out_samples.append(Sample(item["model"], item["dataset"], out["ids"], data,
                                  lambda d, rows=rows, dataset=item["dataset"]: [{"dataset": dataset, **r}
                                                                                 for r in rows(d)],
                                  strata=strata,
                                  row_data=_row_data))
    return out_samples


def combine(rows: list[Row]) -> list[Row]:
    """The 7-set average of one model (over its benchmarks' resampled top-1; the count left out)."""
    return [{"dataset": "", **r} for r in robustness_average(rows) if r["metric"] != "n_benchmarks"]


def effective_robustness_rows(rows: list[Row], models: dict[str, dict], settings: dict[str, Any]) -> list[Row]:
    """Effective robustness (Taori et al. 2020; docs/evaluations.md §6) per shifted benchmark
    (every benchmark with a ``top1`` other than clean ImageNet val, the average included) and model:
    the line logit(top1_b) = a * logit(top1_val) + c fitted over the study's models with both
    top-1s, then ``effective_robustness`` = top1_b - sigmoid(a * logit(top1_val) + c) and
    ``predicted_top1`` = that sigmoid. ``rows`` are the table's rows (with model columns); a
    benchmark with fewer than ``effective_robustness_min_models`` such models gets no rows and a
    warning, as does one whose line is not determined (every model with the same val top-1)."""
    min_models = settings["effective_robustness_min_models"]
    overall = [r for r in rows if r["metric"] == "top1" and r["corruption"] == ""]
    top1s = {(r["model"], r["benchmark"]): float(r["value"]) for r in overall if not np.isnan(float(r["value"]))}
    benchmarks = [b for b in dict.fromkeys(r["benchmark"] for r in overall) if b != CLEAN_BENCHMARK]
    out: list[Row] = []
    for benchmark in benchmarks:
        names = [m for m in models if (m, CLEAN_BENCHMARK) in top1s and (m, benchmark) in top1s]
        if len(names) < min_models:
            log.warning("effective robustness on %s: %d model(s) have both an %s and a %s top-1, fewer than "
                        "the %d (effective_robustness_min_models) a logit-linear fit over the study's models "
                        "needs; no effective_robustness rows for it", benchmark, len(names), CLEAN_BENCHMARK,
                        benchmark, min_models)
            continue
        clean = np.array([top1s[(m, CLEAN_BENCHMARK)] for m in names])
        shifted = np.array([top1s[(m, benchmark)] for m in names])
        # Models at the same ImageNet accuracy (after the logit's clipping: e.g. several random-weight
        # models at 0) are one point of the fit: a line through 2 points gives every model ER 0.
        distinct = len(np.unique(np.clip(clean, LOGIT_CLIP, 1 - LOGIT_CLIP)))
        if distinct < min_models:
            log.warning("effective robustness on %s: the %d models have only %d distinct %s top-1s, fewer than "
                        "the %d (effective_robustness_min_models) a logit-linear fit needs; no "
                        "effective_robustness rows for it", benchmark, len(names), distinct, CLEAN_BENCHMARK,
                        min_models)
            continue
        try:
            a, c = logit_linear_fit(clean, shifted)
        except ValueError as err:
            log.warning("effective robustness on %s: %s; no effective_robustness rows for it", benchmark, err)
            continue
        gains, predicted = effective_robustness(clean, shifted, a, c)
        for model, gain, pred in zip(names, gains, predicted):
            out += [{**models[model], "dataset": "", **_row(benchmark, "effective_robustness", gain)},
                    {**models[model], "dataset": "", **_row(benchmark, "predicted_top1", pred)}]
    return out


#: A dataset kind scored as another benchmark: ImageNet-C with the 4 extra corruptions is ImageNet-C.
BENCHMARK_OF_KIND = {"imagenet_c_all": "imagenet_c"}


def benchmark_of(kind: str) -> str:
    return BENCHMARK_OF_KIND.get(kind, kind)


def table(job) -> list[Row]:
    real = job.params.settings["real"]
    per_model: dict[str, list[Row]] = defaultdict(list)
    for item, manifest, out in read_items(job, per_image):
        rows = robustness_rows(out, item["kind"], item["class_space"], manifest["root"], real=real)
        rows.append(skipped_row(out, benchmark=benchmark_of(item["kind"]), corruption="", severity=""))
        per_model[item["model"]] += [{"dataset": item["dataset"], **r} for r in rows]
    out_rows = []
    for model, rows in per_model.items():
        rows += [{"dataset": "", **r} for r in robustness_average(rows)]
        out_rows += [{**job.params.models[model], **r} for r in rows]
    out_rows += effective_robustness_rows(out_rows, job.params.models, job.params.settings)
    return out_rows


def check(config: dict[str, Any]) -> list[str]:
    """One dataset per benchmark: the table and the 7-set average have one value per benchmark."""
    by_benchmark: dict[str, list[str]] = {}
    for name in config["evaluations"].get("robustness", {}).get("datasets", []):
        if name in config["datasets"]:
            by_benchmark.setdefault(benchmark_of(config["datasets"][name]["kind"]), []).append(name)
    return [f"  evaluations.robustness.datasets: {same} are all benchmark {benchmark!r}; the table and the "
            "7-set average have one value per benchmark, so list one of them"
            for benchmark, same in by_benchmark.items() if len(same) > 1]


def input_transform(study, dataset: str) -> str | None:
    """Presized sets (ImageNet-C) are re-cropped by the study's protocol under ``imagenet_c_recrop``,
    for parity with the paper's code (docs/evaluations.md §6)."""
    section = study.evaluations.get("robustness", {})
    if section.get("imagenet_c_recrop", False) and dataset in section.get("datasets", []):
        return "protocol"
    return None


# ------------------------------------------------------------------------------------ figures
BENCHMARK_LABELS = {"imagenet_val": "ImageNet", "imagenet_v2": "V2", "imagenet_a": "A", "imagenet_c": "C",
                    "imagenet_hard": "Hard", "imagenet_r": "R", "imagenet_sketch": "Sketch",
                    "imagenet_real": "ReaL", "average": "Average"}


def _chance_by_benchmark(overall: pd.DataFrame, chance) -> dict[str, float]:
    """Chance top-1 per benchmark (from its dataset's label space); the average's: the mean over
    the shifted benchmarks present (as the average itself)."""
    levels = {}
    for benchmark, dataset in overall.drop_duplicates("benchmark")[["benchmark", "dataset"]].itertuples(index=False):
        # ImageNet-ReaL re-scores the val outputs: the val dataset's space.
        source = dataset or overall.loc[overall["benchmark"] == CLEAN_BENCHMARK, "dataset"].head(1).squeeze()
        level = chance_of(chance, source if isinstance(source, str) else "")
        if level is not None:
            levels[benchmark] = level
    shifted = [levels[b] for b in levels if b in SHIFTED_BENCHMARKS]
    if shifted:
        levels["average"] = float(np.mean(shifted))
    return levels


def plot_robustness(table: pd.DataFrame, paths, paper: dict | None = None, chance: dict | None = None):
    """Top-1 (%) per benchmark and model, clean ImageNet first and the average of the shifted sets
    present last (the paper's seven in a full study); the rows' ci_low / ci_high (if any) as error
    bars on the bars; ``chance`` (dataset -> chance top-1): bars at chance faded and labelled; n
    (images) under each benchmark."""
    table = as_text(table, "benchmark", "corruption", "dataset")
    overall = table[(table["metric"] == "top1") & (table["corruption"] == "")]
    found = list(dict.fromkeys(overall["benchmark"]))
    # The paper's order; a benchmark it does not know (a new scorer, image_folder) is drawn before
    # the average, never dropped.
    present = [b for b in BENCHMARK_ORDER if b in found and b != "average"]
    present += [b for b in found if b not in BENCHMARK_ORDER] + (["average"] if "average" in found else [])
    models = styled_models(table, table)
    lookup = overall.groupby(["model", "benchmark"])["value"].mean()
    intervals = interval_lookup(overall, ["model", "benchmark"])
    levels = _chance_by_benchmark(overall, chance)

    def value(model, benchmark):
        return lookup.get((model, benchmark), np.nan)

    def is_chance(model, benchmark):
        return at_chance(value(model, benchmark), intervals(model, benchmark) if intervals else None,
                         levels.get(benchmark))

    def published(key, benchmark):
        if not paper:
            return np.nan
        if benchmark == "average":
            return paper.get("average_7_printed", {}).get(key, np.nan)
        return paper.get("top1", {}).get(key, {}).get(benchmark, np.nan)

    counts = table.loc[(table["benchmark"] == "average") & (table["metric"] == "n_benchmarks"), "value"]
    n_shifted = int(counts.max()) if len(counts) else 0
    images = table[(table["metric"] == "n_images") & (table["corruption"] == "")]
    n_of = {b: n_text(images.loc[images["benchmark"] == b, "value"].astype(float)) for b in present}
    labels = {**BENCHMARK_LABELS, "average": f"Average ({n_shifted})"}
    if many_models(len(models)):  # past a handful of models: a sorted dot plot, one row per model
        return dot_panels(present, [labels.get(b, b) for b in present], models, value, paths,
                          "Robustness: top-1 on ImageNet and the shifted sets", "top-1 (%)", scale=100,
                          interval=intervals, chance=is_chance if levels else None, sort_by="average", n_of=n_of,
                          xlim=(0, 100), paper=published if paper else None)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.0 * len(present) + 2), 3.8))
    grouped_bars(ax, present, models, value, published if paper else None, scale=100, interval=intervals,
                 chance=is_chance if levels else None)
    ax.set_xticklabels([labels.get(b, b) + (f"\n{n_of[b]}" if n_of.get(b) else "") for b in present], fontsize=8)
    if CLEAN_BENCHMARK in present:
        ax.axvline(present.index(CLEAN_BENCHMARK) + 0.5, color="gray", linewidth=0.6)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_ylim(0, 100)
    empty_note(ax, [value(m, b) for m in models["model"] for b in present], "no model is above 0 % on any set")
    note = f" (published average: all {len(SHIFTED_BENCHMARKS)})" if paper else ""
    ax.set_title(f"Robustness: ImageNet and {n_shifted} shifted sets, Average = their mean{note}; "
                 "ImageNet-C = mean over 15 corruptions", fontsize=8)
    legend_outside(ax)
    fig.tight_layout()
    if levels:
        chance_note(fig)
    save_figure(fig, paths)
    return fig


def plot_robustness_paired(table: pd.DataFrame, paths, comparisons: pd.DataFrame | None = None,
                           chance: dict | None = None):
    """``layout: paired``: per paradigm, ViT vs ConvNet top-1 (%) per benchmark with the winner and
    its margin; the Average's margin with its paired-bootstrap interval (``comparisons``); bars at
    chance (``chance``: dataset -> chance top-1) faded and labelled, as in :func:`plot_robustness`."""
    table = as_text(table, "benchmark", "corruption", "dataset")
    overall = table[(table["metric"] == "top1") & (table["corruption"] == "")]
    found = list(dict.fromkeys(overall["benchmark"]))
    present = [b for b in BENCHMARK_ORDER if b in found and b != "average"]
    present += [b for b in found if b not in BENCHMARK_ORDER] + (["average"] if "average" in found else [])
    lookup = overall.groupby(["model", "benchmark"])["value"].mean()
    counts = table.loc[(table["benchmark"] == "average") & (table["metric"] == "n_benchmarks"), "value"]
    labels = {**BENCHMARK_LABELS, "average": f"Average ({int(counts.max()) if len(counts) else 0})"}
    intervals = interval_lookup(overall, ["model", "benchmark"])
    levels = _chance_by_benchmark(overall, chance)

    def is_chance(model, benchmark):
        return at_chance(lookup.get((model, benchmark), np.nan), intervals(model, benchmark) if intervals else None,
                         levels.get(benchmark))

    return plot_paired(present, [labels.get(b, b) for b in present], styled_models(table, table),
                       lambda m, b: lookup.get((m, b), np.nan), paths, "Robustness, the paper's reading: ViT vs ConvNet",
                       "top-1 accuracy (%)", scale=100, margin=margin_lookup(comparisons), headline_group="average",
                       ylim=(0, 105), chance=is_chance if levels else None)


def draw(job) -> None:
    if job.params.layout == "paired":
        plot_robustness_paired(read_table(job.input[0]), job.figure_paths(),
                               read_table(job.input[1]) if len(job.input) > 1 else None, chance=job.params.chance)
        return
    plot_robustness(read_table(job.input[0]), job.figure_paths(), paper=job.params.data["paper"],
                    chance=job.params.chance)


ROBUSTNESS = register(Evaluation(
    name="robustness",
    title="Robustness",
    description="top-1 on ImageNet-V2/A/R/Sketch/C/Hard/ReaL and their average",
    class_spaces=frozenset({"imagenet1k", "imagenet_r", "imagenet_a", "imagenet1k_multilabel"}),
    table=table,
    settings=("real", "effective_robustness_min_models"),
    group_columns=("dataset", "benchmark", "corruption", "severity"),
    figures=(Figure("robustness", draw, "robustness", per_dataset=False, data=published_section("robustness"),
                    paired=True),),
    headlines=(Headline("robustness", {"benchmark": "average", "metric": "top1"}, True,
                        "robustness: mean top-1 % of shifted sets", by=(), scale=100,
                        accuracy={"benchmark": SHIFTED_BENCHMARKS, "metric": "top1", "corruption": ""},
                        n={"benchmark": SHIFTED_BENCHMARKS, "metric": "n_images", "corruption": ""}, n_per="set"),),
    check=check,
    input_transform=input_transform,
    samples=samples,
    combine=combine,
))

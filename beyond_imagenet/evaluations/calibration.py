"""Calibration (docs/evaluations.md §4): ECE, MCE and reliability bins from the cached logits;
reliability diagrams and confidence histograms."""

from __future__ import annotations

import logging
import math
from typing import Callable

import numpy as np
import pandas as pd

from beyond_imagenet.datasets.readers import check_logit_width, class_space_mask
from beyond_imagenet.evaluations import Evaluation, Figure, Sample, register
from beyond_imagenet.metrics.calibration import (
    calibration_bins,
    calibration_from_vectors,
    confidence_and_correct,
    temperature_at_bound,
    temperature_scaled_calibration,
)
from beyond_imagenet.profile import Headline
from beyond_imagenet.style import (
    CHANCE_ALPHA,
    CHANCE_HATCH,
    ModelStyle,
    at_chance,
    chance_note,
    chance_of,
    legend_outside,
    n_text,
    draw_intervals,
    interval,
    interval_lookup,
    interval_text,
    model_styles,
    plt,
    save_figure,
)
from beyond_imagenet.tables import read_table
from beyond_imagenet.workflow import read_items, skipped_row

SUMMARY_METRICS = ("ece", "mce", "accuracy", "mean_confidence", "overconfidence", "n_images")
#: Published ECE is given for these dataset kinds (paper_results.yaml calibration.<section>).
PAPER_SECTIONS = {"imagenet_val": "imagenet", "imagenet_r": "imagenet_r"}
#: Rows of temperature scaling (docs/evaluations.md §4), in this order.
TEMPERATURE_METRICS = ("ece_heldout", "ece_temperature_scaled", "nll_heldout", "nll_temperature_scaled",
                       "temperature")
#: Row beside them: 1 when the fitted temperature sits at its search bound (no fit), else 0.
TEMPERATURE_FLAG = "temperature_at_bound"

log = logging.getLogger(__name__)


def per_image(item, manifest, block) -> dict:
    """Per image: confidence and correctness (masked to the set's classes before the softmax)."""
    check_logit_width(item, manifest, block["logits"])
    confidence, correct = confidence_and_correct(block["logits"], block["labels"],
                                                 class_space_mask(item["class_space"]))
    return {"confidence": confidence, "correct": correct}


def per_image_and_logits(item, manifest, block) -> dict:
    """:func:`per_image` and the (masked) logits, which temperature scaling fits T on."""
    mask = class_space_mask(item["class_space"])
    logits = np.asarray(block["logits"])
    return {**per_image(item, manifest, block), "logits": logits[:, mask] if mask is not None else logits}


def _reader(settings):
    """What a calibration job keeps per image. Temperature scaling is the one step that needs every
    class's logit (at a T not known before the fit): the (masked, float32) logits of one output are
    held until its T is fitted and its rows are made, then dropped (:func:`_temperature`), so the
    job holds one set's logits at a time, never one per model."""
    if not settings["temperature_scaling"]:
        return per_image, None
    seed, n_bins = settings["temperature_seed"], settings["n_bins"]

    def finish(item, manifest, out):
        logits = out.pop("logits")
        out["temperature_rows"] = _temperature(item, out, logits, seed, n_bins)
        return out

    return per_image_and_logits, _Finish(finish, (seed, n_bins))


class _Finish:
    """A finish step that is equal to another with the same settings (the job's read-once memo key)."""

    def __init__(self, fn, key):
        self.fn, self.key = fn, key

    def __call__(self, *args):
        return self.fn(*args)

    def __eq__(self, other):
        return isinstance(other, _Finish) and other.key == self.key

    def __hash__(self):
        return hash(self.key)


def _temperature(item, out, logits, seed: int, n_bins: int) -> dict | None:
    """Temperature scaling's results for one output (None when it has fewer than 2 images)."""
    if len(out["labels"]) < 2:
        log.warning("temperature scaling: %s on %s has %d image(s), fewer than the 2 a fit/held-out split "
                    "needs; no temperature rows", item.get("model"), item.get("dataset"), len(out["labels"]))
        return None
    result = temperature_scaled_calibration(logits, out["labels"], n_bins=n_bins, seed=seed)
    # 1: the search ended at a bound (metrics.calibration.temperature_at_bound), T is no fit.
    return {**result, TEMPERATURE_FLAG: float(temperature_at_bound(result["temperature"]))}


def table(job) -> list[dict]:
    settings = job.params.settings
    n_bins = settings["n_bins"]
    rows = []
    for item, _, out in read_items(job, *_reader(settings)):
        result = calibration_from_vectors(out["confidence"], out["correct"], n_bins=n_bins)
        base = {**job.params.models[item["model"]], "dataset": item["dataset"]}
        no_bin = {"bin": "", "bin_lower": "", "bin_upper": ""}
        for metric in SUMMARY_METRICS:
            rows.append({**base, "metric": metric, **no_bin, "value": result[metric]})
        rows.append({**base, **skipped_row(out, **no_bin)})
        if out.get("temperature_rows"):
            rows += [{**base, "metric": metric, **no_bin, "value": out["temperature_rows"][metric]}
                     for metric in (*TEMPERATURE_METRICS, TEMPERATURE_FLAG)]
        bins = result["bins"]
        for b in range(n_bins):
            for metric, key in (("bin_count", "count"), ("bin_accuracy", "accuracy"), ("bin_confidence", "confidence")):
                rows.append({**base, "metric": metric, "bin": b, "bin_lower": bins["lower"][b],
                             "bin_upper": bins["upper"][b], "value": bins[key][b]})
    return rows


def calibration_rows(data, n_bins: int) -> list[dict]:
    """The table's rows but the counts, from per-image confidence and correctness."""
    confidences, correct = data["confidence"], data["correct"]
    bins = calibration_bins(confidences, correct, n_bins)
    accuracy, mean_conf = float(correct.mean()), float(confidences.mean())
    used = bins["count"] > 0  # ECE and MCE as metrics.calibration computes them, from the one binning
    gaps = np.abs(bins["confidence"][used] - bins["accuracy"][used])
    summary = {"ece": float(np.sum(bins["count"][used] / bins["count"].sum() * gaps)), "mce": float(np.max(gaps)),
               "accuracy": accuracy, "mean_confidence": mean_conf, "overconfidence": mean_conf - accuracy}
    rows = [{"metric": m, "bin": "", "bin_lower": "", "bin_upper": "", "value": v} for m, v in summary.items()]
    for b in range(n_bins):
        for metric, key in (("bin_accuracy", "accuracy"), ("bin_confidence", "confidence")):
            rows.append({"metric": metric, "bin": b, "bin_lower": bins["lower"][b], "bin_upper": bins["upper"][b],
                         "value": bins[key][b]})
    return rows


def samples(job) -> list[Sample]:
    n_bins = job.params.settings["n_bins"]
    out_samples = []
    for item, _, out in read_items(job, *_reader(job.params.settings)):
        data = {"confidence": out["confidence"], "correct": out["correct"]}
        out_samples.append(Sample(
            item["model"], item["dataset"], out["ids"], data,
            lambda d, dataset=item["dataset"]: [{"dataset": dataset, **r} for r in calibration_rows(d, n_bins)],
            correct={"accuracy": "correct"}))
    return out_samples


def published_ece(study, wildcards) -> dict:
    """The paper's ECE for the dataset's kind (ImageNet val, ImageNet-R), drawn beside ours."""
    from beyond_imagenet.paper_results import load_paper_results

    section = PAPER_SECTIONS.get(study.datasets[wildcards.dataset].kind)
    return {"paper": load_paper_results()["calibration"].get(section, {}).get("ece") if section else None}


def draw_reliability(job) -> None:
    plot_reliability(read_table(job.input[0]), job.wildcards.dataset, job.figure_paths(), paper=job.params.data["paper"],
                     chance=job.params.chance)


# ------------------------------------------------------------------------------------ figures
def _panels(n: int, width: float = 3.4, height: float = 3.4):
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _per_model(table: pd.DataFrame, dataset: str, draw: Callable, title: str, paths, chance: dict | None = None):
    """One panel per model; ``draw(ax, rows, style)``. A model at chance on the dataset (its accuracy
    interval reaches ``chance[dataset]``): its panel's bars faded and cross-hatched, and a note in
    the panel. One legend for all panels, under them. Returns the saved (closed) figure."""
    data = table[table["dataset"] == dataset]
    if data.empty:
        raise ValueError(f"no calibration rows for dataset {dataset!r}")
    styles = model_styles(table)  # the whole table: the study's models, whatever the dataset
    models = list(dict.fromkeys(data["model"]))
    fig, axes = _panels(len(models))
    guessing = []
    for ax, model in zip(axes, models):
        rows = data[data["model"] == model]
        draw(ax, rows, styles[str(model)])
        if _guessing(rows, chance):
            guessing.append(ax)
            for container in ax.containers:
                for patch in getattr(container, "patches", []):
                    if patch.get_facecolor()[3] > 0:  # the model's bars, not the unfilled gap bars
                        patch.set_alpha(CHANCE_ALPHA)
                        patch.set_hatch(CHANCE_HATCH)
            ax.text(0.5, 0.5, "accuracy at chance:\nnot a calibration result", transform=ax.transAxes, ha="center",
                    va="center", fontsize=7, color="0.3", label="_chance",
                    bbox=dict(facecolor="white", edgecolor="0.6", boxstyle="round", alpha=0.8))
    # The legend's samples from a panel drawn as usual, where there is one.
    handles, labels = next((a for a in axes if a not in guessing), axes[0]).get_legend_handles_labels()
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    legend_outside(fig, handles, labels, ncol=len(labels))
    if guessing:
        chance_note(fig)
    save_figure(fig, paths)
    return fig


def _n(rows: pd.DataFrame) -> str:
    """", n=38" for a panel title; "" when the rows have no count."""
    counts = rows.loc[rows["metric"] == "n_images", "value"].astype(float)
    return f", {n_text(counts)}" if len(counts) else ""


def _summary(rows: pd.DataFrame, metric: str) -> float:
    return float(rows.loc[rows["metric"] == metric, "value"].iloc[0])


def _summary_interval(rows: pd.DataFrame, metric: str, scale: float = 1.0):
    """(low, high) of a summary metric's row, or None (no interval columns / empty cells)."""
    return interval(rows[rows["metric"] == metric], scale)


def _bins(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    sel = rows[rows["metric"] == metric].copy()
    sel["bin"] = sel["bin"].astype(int)
    return sel.sort_values("bin")


def _scaled_note(rows: pd.DataFrame) -> str:
    """Third title line: held-out ECE before -> after temperature scaling, when the table has it;
    a temperature at the search's bound is flagged (it is no fit)."""
    if not (rows["metric"] == "ece_temperature_scaled").any():
        return ""
    temperature = _summary(rows, "temperature")
    flag = " = bound: no fit" if temperature_at_bound(temperature) else ""
    return (f"\nheld-out ECE {_summary(rows, 'ece_heldout'):.3f} -> {_summary(rows, 'ece_temperature_scaled'):.3f}"
            f" (T {temperature:.2f}{flag})")


def _guessing(rows: pd.DataFrame, chance: dict | None) -> bool:
    """Whether the model of ``rows`` (one model, one dataset) is at chance on the dataset."""
    accuracy = rows[rows["metric"] == "accuracy"]
    if accuracy.empty:
        return False
    return at_chance(float(accuracy["value"].iloc[0]), interval(accuracy),
                     chance_of(chance, rows["dataset"].iloc[0]))


def plot_reliability(table: pd.DataFrame, dataset: str, paths, paper: dict[str, dict] | None = None,
                     chance: dict | None = None):
    """Per-bin accuracy bars, the gap to the diagonal, and the diagonal (one panel per model).

    With ci_low / ci_high in the rows: error bars on the per-bin accuracies, and the intervals of
    ECE and accuracy in the panel title ("ECE 0.031 [0.025, 0.037]").
    """

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
        bin_interval = interval_lookup(acc, ["bin"])
        if bin_interval is not None:
            draw_intervals(ax, centers, [bin_interval(b) for b in acc["bin"]], at=acc["value"].astype(float).to_numpy(),
                           label="_ci:accuracy")
        ax.plot([0, 1], [0, 1], "k--", linewidth=1)
        ece = _summary(rows, "ece")
        label = rows["label"].iloc[0]
        extra = ""
        key = rows["paper_key"].iloc[0]
        if paper and isinstance(key, str) and key in paper:
            extra = f" (paper {paper[key]:.3f})"
        ece_ci, acc_ci = _summary_interval(rows, "ece"), _summary_interval(rows, "accuracy", 100)
        n = _n(rows)
        if ece_ci is None and acc_ci is None:
            ax.set_title(f"{label}\nECE {ece:.3f}{extra}, acc {_summary(rows, 'accuracy'):.1%}{n}{_scaled_note(rows)}",
                         fontsize=9)
        else:  # one line each: the intervals make them long
            ax.set_title(f"{label}\nECE {ece:.3f}{interval_text(ece_ci)}{extra}\n"
                         f"acc {_summary(rows, 'accuracy'):.1%}{interval_text(acc_ci, '{:.1f}')}{n}"
                         f"{_scaled_note(rows)}", fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")

    return _per_model(table, dataset, draw, f"Reliability diagrams: {dataset}", paths, chance)


def plot_confidence_histogram(table: pd.DataFrame, dataset: str, paths, chance: dict | None = None):
    """Percentage of samples per confidence bin (one panel per model); with ci_low / ci_high in the
    rows, light bands over the intervals of the mean confidence and the accuracy (the bin shares
    are counts and have none)."""

    def draw(ax, rows, style: ModelStyle):
        counts = _bins(rows, "bin_count")
        lower = counts["bin_lower"].astype(float).to_numpy()
        upper = counts["bin_upper"].astype(float).to_numpy()
        values = counts["value"].astype(float).to_numpy()
        share = 100 * values / max(values.sum(), 1)
        ax.bar((lower + upper) / 2, share, width=upper - lower, color=style.color, edgecolor="black", linewidth=0.5)
        for metric, color in (("mean_confidence", "k"), ("accuracy", "#2ca02c")):
            bounds = _summary_interval(rows, metric)
            if bounds is not None:
                ax.axvspan(*bounds, color=color, alpha=0.12, linewidth=0, zorder=0, label=f"_band:{metric}")
        ax.axvline(_summary(rows, "mean_confidence"), color="k", linestyle="--", linewidth=1, label="mean confidence")
        ax.axvline(_summary(rows, "accuracy"), color="#2ca02c", linestyle=":", linewidth=1.5, label="accuracy")
        ax.set_title(f"{rows['label'].iloc[0]}\n{_n(rows)[2:]}", fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_xlabel("confidence")
        ax.set_ylabel("% of samples")

    return _per_model(table, dataset, draw, f"Confidence histograms: {dataset}", paths, chance)


def draw_confidence(job) -> None:
    plot_confidence_histogram(read_table(job.input[0]), job.wildcards.dataset, job.figure_paths(),
                              chance=job.params.chance)


CALIBRATION = register(Evaluation(
    name="calibration",
    title="Calibration",
    description="ECE (15 bins), MCE, reliability diagrams, confidence histograms",
    # own: a labelled folder of the user's classes, scored with num_classes models' logits (Study.scores)
    class_spaces=frozenset({"imagenet1k", "imagenet_r", "imagenet_a", "own"}),
    table=table,
    settings=("n_bins", "temperature_scaling", "temperature_seed"),
    group_columns=("dataset", "bin"),
    samples=samples,
    figures=(Figure("reliability", draw_reliability, "reliability", data=published_ece),
             Figure("confidence", draw_confidence, "confidence")),
    headlines=(Headline("calibration", {"metric": "ece"}, False, "ECE ({dataset})", accuracy={"metric": "accuracy"},
                        n={"metric": "n_images"}),),
))

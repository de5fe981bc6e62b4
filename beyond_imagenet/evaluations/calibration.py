"""Calibration (docs/evaluations.md §4): ECE, MCE and reliability bins from the cached logits;
reliability diagrams and confidence histograms."""

from __future__ import annotations

from beyond_imagenet.datasets.readers import class_space_mask
from beyond_imagenet.evaluations import Evaluation, Figure, register
from beyond_imagenet.metrics.calibration import calibration_from_logits
from beyond_imagenet.profile import Headline
from beyond_imagenet.tables import read_table
from beyond_imagenet.workflow import read_items, skipped_row

SUMMARY_METRICS = ("ece", "mce", "accuracy", "mean_confidence", "overconfidence", "n_images")
#: Published ECE is given for these dataset kinds (paper_results.yaml calibration.<section>).
PAPER_SECTIONS = {"imagenet_val": "imagenet", "imagenet_r": "imagenet_r"}


def table(job) -> list[dict]:
    n_bins = job.params.settings["n_bins"]
    rows = []
    for item, _, out in read_items(job):
        # ImageNet-R/A: logits restricted to the benchmark's 200 classes *before* the softmax.
        mask = class_space_mask(item["class_space"])
        result = calibration_from_logits(out["logits"], out["labels"], n_bins=n_bins, class_mask=mask)
        base = {**job.params.models[item["model"]], "dataset": item["dataset"]}
        no_bin = {"bin": "", "bin_lower": "", "bin_upper": ""}
        for metric in SUMMARY_METRICS:
            rows.append({**base, "metric": metric, **no_bin, "value": result[metric]})
        rows.append({**base, **skipped_row(out, **no_bin)})
        bins = result["bins"]
        for b in range(n_bins):
            for metric, key in (("bin_count", "count"), ("bin_accuracy", "accuracy"), ("bin_confidence", "confidence")):
                rows.append({**base, "metric": metric, "bin": b, "bin_lower": bins["lower"][b],
                             "bin_upper": bins["upper"][b], "value": bins[key][b]})
    return rows


def published_ece(study, wildcards) -> dict:
    """The paper's ECE for the dataset's kind (ImageNet val, ImageNet-R), drawn beside ours."""
    from beyond_imagenet.paper_results import load_paper_results

    section = PAPER_SECTIONS.get(study.datasets[wildcards.dataset].kind)
    return {"paper": load_paper_results()["calibration"].get(section, {}).get("ece") if section else None}


def draw_reliability(job) -> None:
    from beyond_imagenet.plots import plot_reliability

    plot_reliability(read_table(job.input[0]), job.wildcards.dataset, job.figure_paths(), paper=job.params.data["paper"])


def draw_confidence(job) -> None:
    from beyond_imagenet.plots import plot_confidence_histogram

    plot_confidence_histogram(read_table(job.input[0]), job.wildcards.dataset, job.figure_paths())


CALIBRATION = register(Evaluation(
    name="calibration",
    title="Calibration",
    description="ECE (15 bins), MCE, reliability diagrams, confidence histograms",
    class_spaces=frozenset({"imagenet1k", "imagenet_r", "imagenet_a"}),
    table=table,
    settings=("n_bins",),
    group_columns=("dataset", "bin"),
    figures=(Figure("reliability", draw_reliability, "reliability", data=published_ece),
             Figure("confidence", draw_confidence, "confidence")),
    headlines=(Headline("calibration", {"metric": "ece"}, False, "ECE ({dataset})"),),
))

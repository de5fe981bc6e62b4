"""Types of mistakes (docs/evaluations.md §2): ImageNet-X error ratios per factor, from the ImageNet
val outputs joined with the imagenet-x package's annotations (no extraction of its own)."""

from __future__ import annotations

from typing import Any

import numpy as np

from beyond_imagenet.evaluations import Evaluation, Figure, register
from beyond_imagenet.metrics import imagenet_x as inx
from beyond_imagenet.profile import Headline
from beyond_imagenet.tables import read_table
from beyond_imagenet.workflow import read_items, skipped_row

Row = dict[str, Any]


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


def table(job) -> list[Row]:
    rows = []
    for item, _, out in read_items(job):
        rows += [{**job.params.models[item["model"]], "dataset": item["dataset"], **r}
                 for r in [*imagenet_x_rows(out), skipped_row(out, factor="")]]
    return rows


def published(study, wildcards) -> dict:
    from beyond_imagenet.paper_results import load_paper_results

    has_paper_models = any(spec.paper_key for spec in study.models.values())
    return {"paper": load_paper_results()["imagenet_x"] if has_paper_models else None}


def draw(job) -> None:
    from beyond_imagenet.plots_imagenet import plot_imagenet_x

    plot_imagenet_x(read_table(job.input[0]), job.wildcards.dataset, job.figure_paths(), paper=job.params.data["paper"])


IMAGENET_X = register(Evaluation(
    name="imagenet_x",
    title="Types of mistakes (ImageNet-X)",
    description="ImageNet-X error ratio per factor and their mean",
    class_spaces=frozenset({"imagenet1k"}),
    # It joins on the ImageNet val file names, which only that kind has.
    kinds=frozenset({"imagenet_val"}),
    table=table,
    group_columns=("dataset", "factor"),
    figures=(Figure("imagenet_x", draw, "imagenet_x", data=published),),
    headlines=(Headline("imagenet_x", {"factor": "average", "metric": "error_ratio"}, False,
                        "ImageNet-X mean error ratio ({dataset})"),),
))

"""Shape / texture bias (docs/evaluations.md §5) on the cue-conflict stimuli: 16-class decisions
from the cached ImageNet-1k logits."""

from __future__ import annotations

from typing import Any

from beyond_imagenet.evaluations import Evaluation, Figure, register
from beyond_imagenet.metrics.calibration import softmax
from beyond_imagenet.metrics.shape_bias import probabilities_to_16_class, shape_bias
from beyond_imagenet.profile import Headline
from beyond_imagenet.tables import read_table
from beyond_imagenet.workflow import read_items, skipped_row

Row = dict[str, Any]


def shape_bias_rows(out: dict[str, Any]) -> list[Row]:
    """Overall shape bias, shape / texture fractions, 16-class accuracy, and shape bias per category."""
    decisions = probabilities_to_16_class(softmax(out["logits"]))
    result = shape_bias(decisions, list(out["ids"]))
    rows = [{"category": "", "metric": m, "value": float(result[m])}
            for m in ("shape_bias", "shape_fraction", "texture_fraction", "accuracy_16", "n_images", "n_images_all")]
    rows += [{"category": c, "metric": "shape_bias", "value": float(v)} for c, v in result["per_category"].items()]
    return rows


# --------------------------------------------------------------------------------------- PUG
def table(job) -> list[Row]:
    rows = []
    for item, _, out in read_items(job):
        rows += [{**job.params.models[item["model"]], "dataset": item["dataset"], **r}
                 for r in [*shape_bias_rows(out), skipped_row(out, category="")]]
    return rows


def published(study, wildcards) -> dict:
    from beyond_imagenet.paper_results import load_paper_results

    has_paper_models = any(spec.paper_key for spec in study.models.values())
    return {"paper": load_paper_results()["shape_bias"] if has_paper_models else None}


def draw(job) -> None:
    from beyond_imagenet.plots_imagenet import plot_shape_bias

    plot_shape_bias(read_table(job.input[0]), job.wildcards.dataset, job.figure_paths(), paper=job.params.data["paper"])


SHAPE_BIAS = register(Evaluation(
    name="shape_bias",
    title="Shape bias",
    description="shape bias on cue-conflict, per category; shape/texture fractions",
    class_spaces=frozenset({"cue_conflict"}),
    table=table,
    group_columns=("dataset", "category"),
    figures=(Figure("shape_bias", draw, "shape_bias", data=published),),
    headlines=(Headline("shape_bias", {"metric": "shape_bias", "category": ""}, True, "shape bias ({dataset})"),),
))

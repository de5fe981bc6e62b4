"""Clean ImageNet accuracy (docs/evaluations.md §1): top-1 and top-5 from the cached logits; on a
labelled folder of the user's own classes, that of the models with a head of those classes
(``num_classes``, docs/data-and-weights.md)."""

from __future__ import annotations

from beyond_imagenet.datasets.readers import check_logit_width, class_space_mask
import numpy as np

from beyond_imagenet.evaluations import Evaluation, Sample, register
from beyond_imagenet.profile import Headline
from beyond_imagenet.workflow import read_items, skipped_row


def per_image(item, manifest, block) -> dict:
    """Top-1 and top-5 correct of each image of a block (the stable sort of ``topk_accuracy``)."""
    check_logit_width(item, manifest, block["logits"])
    mask = class_space_mask(item["class_space"])
    logits = np.asarray(block["logits"])
    logits = logits[:, np.asarray(mask, dtype=bool)] if mask is not None else logits
    order = np.argsort(-logits, axis=1, kind="stable")[:, :5]
    labels = np.asarray(block["labels"])[:, None]
    return {"correct1": order[:, 0] == labels[:, 0], "correct5": (order == labels).any(axis=1)}


def table(job) -> list[dict]:
    rows = []
    for item, _, out in read_items(job, per_image):
        base = {**job.params.models[item["model"]], "dataset": item["dataset"]}
        top = accuracy_rows(out)
        for metric, value in (("top1", top[0]["value"]), ("top5", top[1]["value"]),
                              ("n_images", len(out["labels"]))):
            rows.append({**base, "metric": metric, "value": value})
        rows.append({**base, **skipped_row(out)})
    return rows


def accuracy_rows(data) -> list[dict]:
    return [{"metric": "top1", "value": float(data["correct1"].mean())},
            {"metric": "top5", "value": float(data["correct5"].mean())}]


def samples(job) -> list[Sample]:
    """Per image: top-1 and top-5 correct (the same stable sort as ``topk_accuracy``)."""
    out_samples = []
    for item, _, out in read_items(job, per_image):
        data = {"correct1": out["correct1"], "correct5": out["correct5"]}
        out_samples.append(Sample(item["model"], item["dataset"], out["ids"], data,
                                  lambda d, dataset=item["dataset"]: [{"dataset": dataset, **r} for r in accuracy_rows(d)],
                                  correct={"top1": "correct1"}))
    return out_samples


ACCURACY = register(Evaluation(
    name="accuracy",
    title="Accuracy",
    description="ImageNet top-1 / top-5",
    # own: a labelled folder of the user's classes, scored with num_classes models' logits (Study.scores)
    class_spaces=frozenset({"imagenet1k", "own"}),
    table=table,
    sort_by=("dataset", "model", "metric"),
    samples=samples,
    headlines=(Headline("accuracy", {"metric": "top1"}, True, "top-1 % ({dataset})", scale=100,
                        accuracy={"metric": "top1"}, n={"metric": "n_images"}),),
))

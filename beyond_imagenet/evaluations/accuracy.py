"""Clean ImageNet accuracy (docs/evaluations.md §1): top-1 and top-5 from the cached logits."""

from __future__ import annotations

from beyond_imagenet.datasets.readers import class_space_mask
from beyond_imagenet.evaluations import Evaluation, register
from beyond_imagenet.metrics.accuracy import topk_accuracy
from beyond_imagenet.profile import Headline
from beyond_imagenet.workflow import read_items, skipped_row


def table(job) -> list[dict]:
    rows = []
    for item, _, out in read_items(job):
        mask = class_space_mask(item["class_space"])
        top = topk_accuracy(out["logits"], out["labels"], (1, 5), class_mask=mask)
        base = {**job.params.models[item["model"]], "dataset": item["dataset"]}
        for metric, value in (("top1", top[1]), ("top5", top[5]), ("n_images", len(out["labels"]))):
            rows.append({**base, "metric": metric, "value": value})
        rows.append({**base, **skipped_row(out)})
    return rows


ACCURACY = register(Evaluation(
    name="accuracy",
    title="Accuracy",
    description="ImageNet top-1 / top-5",
    class_spaces=frozenset({"imagenet1k"}),
    table=table,
    sort_by=("dataset", "model", "metric"),
    headlines=(Headline("accuracy", {"metric": "top1"}, True, "top-1 % ({dataset})", scale=100),),
))

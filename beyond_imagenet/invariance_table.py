"""The tidy invariance table (spec §8) from one model's outputs under every variant.

Kept out of the script so that it can be tested without Snakemake: the standard outputs hold
every image, a variant may have been run on a subset (``max_images``), and every variant is
scored on exactly the same images.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import numpy as np

from beyond_imagenet.invariance import STANDARD_VALUES
from beyond_imagenet.metrics.invariance import invariance_metrics
from beyond_imagenet.variants import Variant

log = logging.getLogger(__name__)

#: Per-kind summary rows (``variant`` = ``<kind>-summary``): what the profile reads.
SUMMARY_METRICS = ("mean_top1", "retained_top1")


def restrict(out: Mapping[str, Any], ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels of ``out`` for ``ids`` (in that order); every id must be present."""
    row = {sid: i for i, sid in enumerate(out["ids"])}
    missing = [sid for sid in ids if sid not in row]
    if missing:
        raise ValueError(f"{len(missing)} image(s) missing from the outputs, e.g. {missing[:3]}")
    index = np.asarray([row[sid] for sid in ids], dtype=np.int64)
    return np.asarray(out["logits"])[index], np.asarray(out["labels"])[index]


def invariance_rows(outputs: Mapping[Variant, Mapping[str, Any]], subset: Sequence[str],
                    class_mask, base: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows (``transform``, ``level``, ``variant``, ``metric``, ``value``) for one model and dataset.

    ``subset``: the ids the variants were asked to run on; images skipped as unreadable in any
    variant are left out of all of them, so the curves compare like with like.
    """
    common = set(subset)
    for out in outputs.values():
        common &= set(out["ids"])
    ids = [sid for sid in subset if sid in common]
    if len(ids) < len(subset):
        log.warning("%s: %d of %d images missing from some variant (skipped); scoring %d",
                    base.get("model"), len(subset) - len(ids), len(subset), len(ids))
    rows = []
    per_kind: dict[str, list[tuple[float, bool]]] = {}
    for variant, out in outputs.items():
        logits, labels = restrict(out, ids)
        scores = invariance_metrics(logits, labels, class_mask)
        # The standard extraction records no variant: that is how it was reused for this level.
        is_standard = out["attrs"].get("variant", "") == ""
        head = {**base, "transform": variant.kind, "level": variant.value, "variant": variant.name,
                "standard": is_standard}
        for metric in ("top1", "true_class_prob"):
            rows.append({**head, "metric": metric, "value": scores[metric]})
        rows.append({**head, "metric": "n_images", "value": len(ids)})
        rows.append({**head, "metric": "n_skipped", "value": int(out["attrs"].get("n_skipped", 0))})
        baseline = float(variant.value) == float(STANDARD_VALUES[variant.kind])
        per_kind.setdefault(variant.kind, []).append((scores["top1"], baseline))
    for kind, scored in per_kind.items():
        # retained_top1: mean top-1 of the other levels over the baseline level's top-1 (scale 1,
        # shift 0, resolution 224; reused from the standard extraction or, for shift 0, extracted).
        # NaN without a baseline level in the list, or when its top-1 is 0.
        standard = [top1 for top1, is_base in scored if is_base]
        others = [top1 for top1, is_base in scored if not is_base]
        retained = float(np.mean(others) / standard[0]) if standard and standard[0] > 0 and others else float("nan")
        head = {**base, "transform": kind, "level": "", "variant": f"{kind}-summary", "standard": ""}
        rows.append({**head, "metric": "mean_top1", "value": float(np.mean([t for t, _ in scored]))})
        rows.append({**head, "metric": "retained_top1", "value": retained})
    return rows

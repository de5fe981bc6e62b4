"""Top-k accuracy (docs/evaluations.md §1), optionally over a subset of the classes."""

from __future__ import annotations

import numpy as np


def topk_accuracy(logits, labels, ks=(1, 5), class_mask=None) -> dict[int, float]:
    logits = np.asarray(logits)
    if class_mask is not None:
        logits = logits[:, np.asarray(class_mask, dtype=bool)]
    labels = np.asarray(labels)
    order = np.argsort(-logits, axis=1, kind="stable")
    return {k: float((order[:, :k] == labels[:, None]).any(axis=1).mean()) for k in ks}

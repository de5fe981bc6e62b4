"""Transformation-invariance metrics (docs/evaluations.md §8): top-1 and mean true-class probability.

Pure functions over one variant's logits; the workflow calls them once per (model, dataset,
variant) and the curves over variants are the invariance figure.
"""

from __future__ import annotations

import numpy as np

from beyond_imagenet.metrics.calibration import softmax

__all__ = ["invariance_metrics"]


def invariance_metrics(logits, labels, class_mask=None) -> dict[str, float]:
    """``top1``: argmax == label; ``true_class_prob``: mean softmax probability of the label.

    ``labels`` are in the (masked) label space; with a boolean ``class_mask`` over the 1000
    logits they are restricted to it before the softmax (ImageNet-R/A), as everywhere else.
    """
    labels = np.asarray(labels, dtype=np.int64)
    probs = softmax(logits, class_mask)
    if probs.shape[0] != labels.shape[0]:
        raise ValueError(f"{probs.shape[0]} rows of logits but {labels.shape[0]} labels")
    if labels.size == 0:
        raise ValueError("no samples")
    rows = np.arange(labels.shape[0])
    return {"top1": float(np.mean(probs.argmax(axis=1) == labels)),
            "true_class_prob": float(np.mean(probs[rows, labels]))}

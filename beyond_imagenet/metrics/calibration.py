"""Calibration: expected / maximum calibration error and reliability bins (docs/evaluations.md §4).

Bins are equal-width on [0, 1]; a sample falls in bin b when lower_b < confidence <= upper_b, so a
confidence of exactly 1.0 (common with CLIP's x100 logits) lands in the last bin and 0 in the
first. Implemented by hand rather than with torchmetrics, whose binning put 1.0 out of range
(torchmetrics #3510), and to keep the library free of a dependency for twenty lines.
"""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray, class_mask: np.ndarray | None = None) -> np.ndarray:
    """Softmax in float64; with a boolean ``class_mask`` the logits are restricted to it first."""
    logits = np.asarray(logits, dtype=np.float64)
    if class_mask is not None:
        logits = logits[:, np.asarray(class_mask, dtype=bool)]
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def bin_edges(n_bins: int) -> np.ndarray:
    return np.linspace(0.0, 1.0, n_bins + 1)


def bin_index(confidences: np.ndarray, n_bins: int) -> np.ndarray:
    """Index of the (lower, upper] bin of each confidence; 0 -> first bin, 1 -> last bin."""
    confidences = np.asarray(confidences, dtype=np.float64)
    if confidences.size and (confidences.min() < 0 or confidences.max() > 1):
        raise ValueError("confidences must lie in [0, 1]")
    # searchsorted(side="left") over the inner edges gives the first edge >= conf, i.e. conf <= upper.
    return np.searchsorted(bin_edges(n_bins)[1:-1], confidences, side="left")


def calibration_bins(confidences, correct, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Per-bin count, accuracy and mean confidence (NaN where a bin is empty)."""
    confidences = np.asarray(confidences, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    if confidences.shape != correct.shape or confidences.ndim != 1:
        raise ValueError("confidences and correct must be 1-D arrays of the same length")
    idx = bin_index(confidences, n_bins)
    count = np.bincount(idx, minlength=n_bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(idx, weights=correct, minlength=n_bins) / count
        confidence = np.bincount(idx, weights=confidences, minlength=n_bins) / count
    edges = bin_edges(n_bins)
    return {"lower": edges[:-1], "upper": edges[1:], "count": count, "accuracy": accuracy,
            "confidence": confidence}


def expected_calibration_error(confidences, correct, n_bins: int = 15) -> float:
    """ECE = sum_b (n_b / N) |mean_conf_b - acc_b| over equal-width bins."""
    bins = calibration_bins(confidences, correct, n_bins)
    total = bins["count"].sum()
    if total == 0:
        raise ValueError("no samples")
    used = bins["count"] > 0
    gaps = np.abs(bins["confidence"][used] - bins["accuracy"][used])
    return float(np.sum(bins["count"][used] / total * gaps))


def maximum_calibration_error(confidences, correct, n_bins: int = 15) -> float:
    """MCE = the largest |mean_conf_b - acc_b| over non-empty bins."""
    bins = calibration_bins(confidences, correct, n_bins)
    used = bins["count"] > 0
    return float(np.max(np.abs(bins["confidence"][used] - bins["accuracy"][used])))


def calibration_from_logits(logits, labels, n_bins: int = 15, class_mask=None) -> dict:
    """Summary and bins for one model on one dataset; labels are in the (masked) label space."""
    probs = softmax(logits, class_mask)
    confidences = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(labels)
    bins = calibration_bins(confidences, correct, n_bins)
    accuracy, mean_conf = float(correct.mean()), float(confidences.mean())
    return {
        "ece": expected_calibration_error(confidences, correct, n_bins),
        "mce": maximum_calibration_error(confidences, correct, n_bins),
        "accuracy": accuracy,
        "mean_confidence": mean_conf,
        # > 0: over-confident (CLIP in the paper), < 0: under-confident.
        "overconfidence": mean_conf - accuracy,
        "n_images": int(len(correct)),
        "bins": bins,
    }

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
    confidences, correct = confidence_and_correct(logits, labels, class_mask)
    return calibration_from_vectors(confidences, correct, n_bins)


def confidence_and_correct(logits, labels, class_mask=None) -> tuple[np.ndarray, np.ndarray]:
    """Per image: the top softmax probability and whether its class is the label (row by row, so
    blocks of rows give the same values as the whole matrix)."""
    probs = softmax(logits, class_mask)
    return probs.max(axis=1), probs.argmax(axis=1) == np.asarray(labels)


def calibration_from_vectors(confidences, correct, n_bins: int = 15) -> dict:
    """:func:`calibration_from_logits` from per-image confidence and correctness."""
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


# ------------------------------------------------------------------------ temperature scaling
#: Bounds of the 1-D search for the temperature (searched over log T).
TEMPERATURE_BOUNDS = (1e-2, 1e2)
#: Rows per block of the temperature-scaling passes: their float64 temporaries stay a few tens of MB
#: whatever the number of images (every value is computed row by row, so blocks change no number).
ROW_BLOCK = 4096


def _row_blocks(n: int):
    return ((start, min(n, start + ROW_BLOCK)) for start in range(0, n, ROW_BLOCK))


def temperature_at_bound(temperature: float, bounds: tuple[float, float] = TEMPERATURE_BOUNDS,
                         rtol: float = 1e-3) -> bool:
    """Whether a fitted temperature sits at an end of the search (within ``rtol``): the NLL kept
    falling there, so T is a bound, not a fit (e.g. a random-weight model whose softmax a larger T
    only makes more uniform)."""
    low, high = bounds
    return bool(np.isfinite(temperature) and (temperature >= high * (1 - rtol) or temperature <= low * (1 + rtol)))


def log_softmax(logits: np.ndarray, class_mask: np.ndarray | None = None) -> np.ndarray:
    """Log-softmax in float64, restricted to ``class_mask`` first like :func:`softmax`."""
    logits = np.asarray(logits, dtype=np.float64)
    if class_mask is not None:
        logits = logits[:, np.asarray(class_mask, dtype=bool)]
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def nll(logits, labels, temperature: float = 1.0, class_mask=None) -> float:
    """Mean negative log-likelihood -1/N Σ_i log softmax(logits_i / T)[y_i] (natural log), the
    labels in the (masked) label space."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    labels = np.asarray(labels, dtype=np.int64)
    logits = np.asarray(logits)
    if logits.ndim != 2:
        raise ValueError(f"expected (N, C) logits, got shape {logits.shape}")
    n_classes = np.count_nonzero(class_mask) if class_mask is not None else logits.shape[1]
    if labels.shape != (logits.shape[0],) or labels.size == 0:
        raise ValueError(f"need one label per row (and at least one row); got {labels.shape} for {logits.shape[0]} rows")
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"labels must lie in 0..{n_classes - 1} (the masked space)")
    picked = np.empty(len(labels))  # log p(label) per image, block by block (float64 per block only)
    for start, stop in _row_blocks(len(labels)):
        logp = log_softmax(np.asarray(logits[start:stop], dtype=np.float64) / float(temperature), class_mask)
        picked[start:stop] = logp[np.arange(stop - start), labels[start:stop]]
    return float(-np.mean(picked))


def fit_temperature(logits, labels, class_mask=None, bounds: tuple[float, float] = TEMPERATURE_BOUNDS) -> float:
    """The temperature T > 0 minimising ``nll(logits, labels, T)`` (Guo et al. 2017).

    A bounded scalar search (scipy's ``minimize_scalar(method="bounded")``) over u = log T in
    [log bounds[0], log bounds[1]]: the NLL is convex in 1/T, hence unimodal in log T. T = 1 is
    kept when the search's point is not better on the given data, so the fitted temperature never
    raises the NLL of the data it was fitted on.
    """
    from scipy.optimize import minimize_scalar

    lo, hi = bounds
    if not 0 < lo < 1 < hi:
        raise ValueError(f"bounds must satisfy 0 < low < 1 < high, got {bounds}")
    logits = np.asarray(logits)  # its own dtype: nll converts each block to float64
    if class_mask is not None:
        logits = logits[:, np.asarray(class_mask, dtype=bool)]
    result = minimize_scalar(lambda u: nll(logits, labels, np.exp(u)), bounds=(np.log(lo), np.log(hi)),
                             method="bounded", options={"xatol": 1e-8})
    temperature = float(np.exp(result.x))
    return temperature if nll(logits, labels, temperature) < nll(logits, labels, 1.0) else 1.0


def temperature_split(n_images: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(fit, heldout)`` row indices (each sorted): a permutation of 0..n-1 seeded with ``seed``,
    its first n // 2 entries to fit the temperature, the other n - n // 2 held out. It depends
    only on ``seed`` and ``n_images``, so every model gets the same split of the same outputs."""
    if n_images < 2:
        raise ValueError(f"need at least 2 images to split for temperature scaling, got {n_images}")
    order = np.random.default_rng(seed).permutation(n_images)
    half = n_images // 2
    return np.sort(order[:half]), np.sort(order[half:])


def temperature_scaled_calibration(logits, labels, n_bins: int = 15, class_mask=None, seed: int = 0) -> dict:
    """Fit T on one half of the images (:func:`temperature_split`) and report on the other half
    the ECE and NLL before (T = 1) and after (T fitted) scaling, and the temperature."""
    logits = np.asarray(logits)  # its own dtype (float32 as stored): converted block by block
    if class_mask is not None:
        logits = logits[:, np.asarray(class_mask, dtype=bool)]
    labels = np.asarray(labels, dtype=np.int64)
    fit, held = temperature_split(len(labels), seed)
    temperature = fit_temperature(logits[fit], labels[fit])
    held_logits, held_labels = logits[held], labels[held]
    before = _scaled_calibration(held_logits, held_labels, n_bins, 1.0)
    after = _scaled_calibration(held_logits, held_labels, n_bins, temperature)
    return {
        "ece_heldout": before["ece"],
        "ece_temperature_scaled": after["ece"],
        "nll_heldout": nll(held_logits, held_labels),
        "nll_temperature_scaled": nll(held_logits, held_labels, temperature),
        "temperature": temperature,
    }


def _scaled_calibration(logits, labels, n_bins: int, temperature: float) -> dict:
    """:func:`calibration_from_logits` of ``logits / temperature``, block by block."""
    confidences, correct = np.empty(len(labels)), np.empty(len(labels), dtype=bool)
    for start, stop in _row_blocks(len(labels)):
        block = np.asarray(logits[start:stop], dtype=np.float64) / temperature
        confidences[start:stop], correct[start:stop] = confidence_and_correct(block, labels[start:stop])
    return calibration_from_vectors(confidences, correct, n_bins)

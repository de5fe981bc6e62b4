"""Robustness metrics: masked top-1, multi-label top-1 (ReaL, ImageNet-Hard) and ImageNet-C.

Definitions follow docs/evaluations.md §1 and §6. All accuracies and errors are fractions in [0, 1].
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import PurePath
from typing import NamedTuple

import numpy as np

from beyond_imagenet.classes import package_data_path, val_file_name
from beyond_imagenet.io import sha256_file

__all__ = [
    "IMAGENET_C_CORRUPTIONS",
    "IMAGENET_C_EXTRA",
    "IMAGENET_C_SEVERITIES",
    "ALEXNET_IMAGENET_C_MEAN_ERROR",
    "top1",
    "topk",
    "MultilabelResult",
    "multilabel_top1",
    "real_labels",
    "real_accuracy",
    "imagenet_c_summary",
    "LOGIT_CLIP",
    "logit",
    "sigmoid",
    "logit_linear_fit",
    "effective_robustness",
]


def _masked_scores(logits: np.ndarray, class_mask: np.ndarray | None) -> np.ndarray:
    scores = np.asarray(logits)
    if scores.ndim != 2:
        raise ValueError(f"expected (N, C) logits, got shape {scores.shape}")
    if class_mask is None:
        return scores
    mask = np.asarray(class_mask)
    if mask.dtype != bool or mask.shape != (scores.shape[1],):
        raise ValueError(
            f"class_mask must be a boolean vector of length {scores.shape[1]}, "
            f"got dtype {mask.dtype} shape {mask.shape}"
        )
    return scores[:, mask]


def top1(
    logits: np.ndarray, labels: Sequence[int] | np.ndarray, class_mask: np.ndarray | None = None
) -> float:
    """Top-1 accuracy; with ``class_mask`` the argmax runs over the masked columns only.

    For ImageNet-A/R pass ``imagenet_a_mask()`` / ``imagenet_r_mask()`` and labels in the masked
    space (0..199, sorted-wnid order, i.e. what an ImageFolder over the set yields). Without the mask
    a 1000-way model scores near zero on these sets, because most of its argmaxes fall outside the
    200 classes and labels 0..199 mean different classes in the 1000 space.
    """
    scores = _masked_scores(logits, class_mask)
    y = np.asarray(labels)
    if y.shape != (scores.shape[0],):
        raise ValueError(f"need one label per row; got {y.shape} for {scores.shape[0]} rows")
    if y.size == 0:
        raise ValueError("no samples")
    if y.min() < 0 or y.max() >= scores.shape[1]:
        raise ValueError(f"labels must lie in 0..{scores.shape[1] - 1} (the masked space)")
    return float(np.mean(scores.argmax(axis=1) == y))


def topk(
    logits: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    k: int = 5,
    class_mask: np.ndarray | None = None,
) -> float:
    """Top-k accuracy (label among the k highest scores), with the same masking as ``top1``."""
    scores = _masked_scores(logits, class_mask)
    y = np.asarray(labels)
    if y.shape != (scores.shape[0],) or y.size == 0:
        raise ValueError(f"need one label per row; got {y.shape} for {scores.shape[0]} rows")
    if not 1 <= k <= scores.shape[1]:
        raise ValueError(f"k must be in 1..{scores.shape[1]}")
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return float(np.mean((top == y[:, None]).any(axis=1)))


class MultilabelResult(NamedTuple):
    """Accuracy over the images that have at least one valid label, and how many those were."""

    accuracy: float
    n: int


def multilabel_top1(
    predicted: Sequence[int] | np.ndarray, label_sets: Sequence[Iterable[int]]
) -> MultilabelResult:
    """Top-1 is correct if it is in the image's label set (ImageNet-ReaL, ImageNet-Hard).

    ``predicted`` is either (N,) predicted class indices or (N, C) logits/probabilities (argmax
    taken). Negative entries in a set are padding (Beyond-INet pads Hard's lists with −1) and are
    ignored; images whose set is then empty are excluded from the accuracy (ReaL has 3,163).
    """
    pred = np.asarray(predicted)
    if pred.ndim == 2:
        pred = pred.argmax(axis=1)
    if pred.ndim != 1 or len(pred) != len(label_sets):
        raise ValueError(f"need one prediction per label set; got {pred.shape}, {len(label_sets)}")
    hits = 0
    used = 0
    for p, labels in zip(pred.tolist(), label_sets):
        valid = {int(v) for v in labels if int(v) >= 0}
        if not valid:
            continue
        used += 1
        hits += p in valid
    if used == 0:
        raise ValueError("every label set is empty")
    return MultilabelResult(accuracy=hits / used, n=used)


#: sha256 of google-research/reassessed-imagenet's real.json (docs/datasets.md §1), which timm and
#: imagenet-x ship byte-identical.
REAL_LABELS_SHA256 = "d83e9bff374c631aae8439eb064c7019acc56e1b3bc3f56b8380c2a710b0220b"


@lru_cache(maxsize=None)
def _real_label_table() -> dict[str, tuple[int, ...]]:
    # timm and imagenet-x ship byte-identical copies of real.json (docs/datasets.md §2); prefer
    # timm's and fall back to imagenet-x's.
    try:
        path = package_data_path("timm", "data", "_info", "imagenet_real_labels.json")
    except (ModuleNotFoundError, FileNotFoundError):
        path = package_data_path("imagenet_x", "annotations", "imagenet_real_labels.jsonl")
    digest = sha256_file(path)
    if digest != REAL_LABELS_SHA256:
        raise RuntimeError(
            f"ReaL labels: {path} has sha256 {digest}, not that of the published real.json "
            f"({REAL_LABELS_SHA256}); reinstall the package it came from (pip install --force-reinstall timm)"
        )
    lists = json.loads(path.read_bytes().decode("utf-8"))
    return {f"ILSVRC2012_val_{i + 1:08d}.JPEG": tuple(v) for i, v in enumerate(lists)}


def real_labels() -> dict[str, tuple[int, ...]]:
    """ReaL label sets keyed by val file name (``ILSVRC2012_val_00000001.JPEG``); empty = no label."""
    return dict(_real_label_table())


def real_accuracy(
    file_names: Sequence[str | PurePath], predicted: Sequence[int] | np.ndarray
) -> MultilabelResult:
    """ImageNet-ReaL accuracy for predictions keyed by val file name (paths accepted)."""
    table = _real_label_table()
    sets = []
    for f in file_names:
        name = val_file_name(f)
        if name not in table:
            raise ValueError(f"not an ImageNet val file name: {f}")
        sets.append(table[name])
    return multilabel_top1(predicted, sets)


IMAGENET_C_CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
IMAGENET_C_EXTRA: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
IMAGENET_C_SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)

# AlexNet top-1 error per corruption, averaged over the 5 severities (Hendrycks & Dietterich 2019;
# the values easyrobust/mmcls use; docs/datasets.md §7). The installed timm (1.0.31) ships no
# per-severity table, so the denominator Σ_s err_AlexNet(c, s) is taken as 5 × this mean, which is
# the same number. No baseline exists for the 4 extra corruptions.
ALEXNET_IMAGENET_C_MEAN_ERROR: dict[str, float] = {
    "gaussian_noise": 0.886428,
    "shot_noise": 0.894468,
    "impulse_noise": 0.922640,
    "defocus_blur": 0.819880,
    "glass_blur": 0.826268,
    "motion_blur": 0.785948,
    "zoom_blur": 0.798360,
    "snow": 0.866816,
    "frost": 0.826572,
    "fog": 0.819324,
    "brightness": 0.564592,
    "contrast": 0.853204,
    "elastic_transform": 0.646056,
    "pixelate": 0.717840,
    "jpeg_compression": 0.606500,
}


def imagenet_c_summary(acc: Mapping[tuple[str, int], float]) -> dict[str, object]:
    """Summarise ImageNet-C accuracies given per (corruption, severity).

    Returns ``per_corruption`` (mean accuracy over severities 1–5, for the 15 benchmark corruptions
    and any extra ones given), ``ce`` (corruption error per benchmark corruption,
    CE_c = Σ_s err(c, s) / Σ_s err_AlexNet(c, s)), ``mean_accuracy`` (mean over the 15, what the
    paper plots) and ``mCE`` (mean CE over the 15; a fraction, ×100 for the usual percent). Extra
    corruptions are reported but never enter the means. All 15 × 5 entries are required; an extra
    corruption, if given, needs all 5 severities. Raises ValueError naming what is missing or
    unknown.
    """
    table: dict[tuple[str, int], float] = {}
    for (corruption, severity), value in acc.items():
        sev = int(severity)
        if corruption not in IMAGENET_C_CORRUPTIONS and corruption not in IMAGENET_C_EXTRA:
            raise ValueError(f"unknown ImageNet-C corruption: {corruption!r}")
        if sev not in IMAGENET_C_SEVERITIES:
            raise ValueError(f"{corruption}: severity {severity!r} is not in 1..5")
        v = float(value)
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{corruption} severity {sev}: accuracy {v} is not a fraction in [0, 1]")
        if (corruption, sev) in table:
            raise ValueError(f"{corruption} severity {sev} given twice")
        table[(corruption, sev)] = v

    extras_given = [c for c in IMAGENET_C_EXTRA if any((c, s) in table for s in IMAGENET_C_SEVERITIES)]
    missing = [
        f"{c} severity {s}"
        for c in (*IMAGENET_C_CORRUPTIONS, *extras_given)
        for s in IMAGENET_C_SEVERITIES
        if (c, s) not in table
    ]
    if missing:
        raise ValueError("ImageNet-C results missing: " + ", ".join(missing))

    per_corruption: dict[str, float] = {}
    ce: dict[str, float] = {}
    for c in (*IMAGENET_C_CORRUPTIONS, *extras_given):
        accs = [table[(c, s)] for s in IMAGENET_C_SEVERITIES]
        per_corruption[c] = float(np.mean(accs))
        if c in ALEXNET_IMAGENET_C_MEAN_ERROR:
            err_sum = sum(1.0 - a for a in accs)
            ce[c] = err_sum / (len(IMAGENET_C_SEVERITIES) * ALEXNET_IMAGENET_C_MEAN_ERROR[c])
    return {
        "per_corruption": per_corruption,
        "ce": ce,
        "mean_accuracy": float(np.mean([per_corruption[c] for c in IMAGENET_C_CORRUPTIONS])),
        "mCE": float(np.mean([ce[c] for c in IMAGENET_C_CORRUPTIONS])),
    }


# ------------------------------------------------------------------------ effective robustness
#: Accuracies are clipped to [LOGIT_CLIP, 1 - LOGIT_CLIP] before the logit (0 and 1 have none).
LOGIT_CLIP = 1e-4


def logit(p, eps: float = LOGIT_CLIP) -> np.ndarray:
    """log(p / (1 - p)) of accuracies given as fractions, clipped to [eps, 1 - eps] first."""
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1.0 - eps)
    return np.log(p) - np.log1p(-p)


def sigmoid(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return 1.0 / (1.0 + np.exp(-x))


def logit_linear_fit(acc_clean, acc_shifted, eps: float = LOGIT_CLIP) -> tuple[float, float]:
    """Least-squares ``(a, c)`` of logit(acc_shifted) = a * logit(acc_clean) + c over models
    (Taori et al. 2020's baseline, as the imagenet-testbed fits it on logit axes).

    a = Σ (x - x̄)(y - ȳ) / Σ (x - x̄)², c = ȳ - a x̄ with x = logit(acc_clean), y = logit(acc_shifted).
    Raises ValueError for fewer than 2 models, NaN accuracies, or models that all have the same
    (clipped) clean accuracy, where no line is determined.
    """
    x, y = logit(acc_clean, eps), logit(acc_shifted, eps)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"need two 1-D arrays of the same length; got {x.shape} and {y.shape}")
    if len(x) < 2:
        raise ValueError(f"need at least 2 models to fit a line, got {len(x)}")
    if np.isnan(x).any() or np.isnan(y).any():
        raise ValueError("accuracies must not be NaN")
    dx = x - x.mean()
    var = float(np.sum(dx * dx))
    if var == 0.0:
        raise ValueError("every model has the same clean accuracy: the line is not determined")
    a = float(np.sum(dx * (y - y.mean())) / var)
    return a, float(y.mean() - a * x.mean())


def effective_robustness(acc_clean, acc_shifted, a: float, c: float,
                         eps: float = LOGIT_CLIP) -> tuple[np.ndarray, np.ndarray]:
    """``(effective_robustness, predicted)``: predicted = sigmoid(a * logit(acc_clean) + c), the
    shifted accuracy the fitted line expects at the model's clean accuracy, and effective
    robustness = acc_shifted - predicted (as fractions; > 0: more robust than the trend)."""
    predicted = sigmoid(a * logit(acc_clean, eps) + c)
    return np.asarray(acc_shifted, dtype=np.float64) - predicted, predicted

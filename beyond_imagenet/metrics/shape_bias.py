"""Shape vs texture bias on the Geirhos cue-conflict set (docs/evaluations.md §5, docs/datasets.md §11).

A model's 1000-way softmax is reduced to a decision among 16 entry-level categories by averaging
(not summing) the probabilities of each category's ImageNet classes, because the categories have
very different sizes (dog 109 classes, knife 1) and a sum would favour the big ones. On the 1,200
images whose shape and texture categories differ, shape bias = shape decisions / (shape + texture
decisions).

``accuracy_16`` is the 16-class shape accuracy over **all** images given, including the 80
no-conflict ones (shape == texture): this is the definition that reproduces the "16-class acc"
numbers derived from the authors' raw decision files (deit3-21k 32.4 %, convnext-base-21k 30.5 %,
vit-clip 39.0 %, convnext-clip 29.3 %); over conflict images only they would equal the shape
fraction over conflict images (28.3 %, 26.1 %, 35.1 %, 26.1 %), which matches none of them.

``shape_fraction`` / ``texture_fraction`` follow model-vs-human's ``ShapeBias`` analysis
(modelvshuman/plotting/analyses.py, also vendored in Beyond-INet): hits counted on the conflict
images, divided by the number of all images (1,280), so ``shape_bias`` = shape_fraction /
(shape_fraction + texture_fraction) is the same whichever denominator.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import PurePath

import numpy as np

__all__ = [
    "CATEGORIES",
    "CATEGORY_INDICES",
    "category_probabilities",
    "probabilities_to_16_class",
    "parse_cue_conflict_name",
    "shape_bias",
]

# ImageNet-1k indices (sorted-wnid order) per category, as data. Source: model-vs-human
# (github.com/bethgelab/model-vs-human), modelvshuman/helper/human_categories.py,
# HumanCategories.<category>_indices, commit 292163431f5c1f7eedfd8f166470503cc62598ee.
# 207 indices in all; no index belongs to two categories.
CATEGORY_INDICES: dict[str, tuple[int, ...]] = {
    "airplane": (404,),
    "bear": (294, 295, 296, 297),
    "bicycle": (444, 671),
    "bird": (
        8, 10, 11, 12, 13, 14, 15, 16, 18, 19, 20, 22, 23, 24, 80, 81, 82, 83, 87, 88, 89, 90, 91,
        92, 93, 94, 95, 96, 98, 99, 100, 127, 128, 129, 130, 131, 132, 133, 135, 136, 137, 138,
        139, 140, 141, 142, 143, 144, 145,
    ),
    "boat": (472, 554, 625, 814, 914),
    "bottle": (440, 720, 737, 898, 899, 901, 907),
    "car": (436, 511, 817),
    "cat": (281, 282, 283, 284, 285, 286),
    "chair": (423, 559, 765, 857),
    "clock": (409, 530, 892),
    "dog": (
        152, 153, 154, 155, 156, 157, 158, 159, 160, 161, 162, 163, 164, 165, 166, 167, 168, 169,
        170, 171, 172, 173, 174, 175, 176, 177, 178, 179, 180, 181, 182, 183, 184, 185, 186, 187,
        188, 189, 190, 191, 193, 194, 195, 196, 197, 198, 199, 200, 201, 202, 203, 205, 206, 207,
        208, 209, 210, 211, 212, 213, 214, 215, 216, 217, 218, 219, 220, 221, 222, 223, 224, 225,
        226, 228, 229, 230, 231, 232, 233, 234, 235, 236, 237, 238, 239, 240, 241, 243, 244, 245,
        246, 247, 248, 249, 250, 252, 253, 254, 255, 256, 257, 259, 261, 262, 263, 265, 266, 267,
        268,
    ),
    "elephant": (385, 386),
    "keyboard": (508, 878),
    "knife": (499,),
    "oven": (766,),
    "truck": (555, 569, 656, 675, 717, 734, 864, 867),
}

#: The 16 categories in sorted order: column order of ``category_probabilities`` and tie order.
CATEGORIES: tuple[str, ...] = tuple(sorted(CATEGORY_INDICES))


def category_probabilities(probs: np.ndarray) -> np.ndarray:
    """(N, 1000) softmax probabilities → (N, 16) mean probability per category (``CATEGORIES`` order).

    Pass probabilities, not logits: the mean of logits is a different decision rule.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 1000:
        raise ValueError(f"expected (N, 1000) probabilities, got shape {p.shape}")
    return np.stack([p[:, list(CATEGORY_INDICES[c])].mean(axis=1) for c in CATEGORIES], axis=1)


def probabilities_to_16_class(probs: np.ndarray) -> np.ndarray:
    """16-class decision per image: argmax of the per-category mean probability.

    Ties go to the first category in sorted order (``np.argmax`` semantics). Returns an array of
    category names.
    """
    choice = category_probabilities(probs).argmax(axis=1)
    return np.asarray(CATEGORIES, dtype=object)[choice]


_DIGITS = re.compile(r"\d+")


def parse_cue_conflict_name(file_name: str | PurePath) -> tuple[str, str]:
    """(shape, texture) categories from a cue-conflict file name such as ``cat4-elephant2.png``.

    Shape = part before the first "-", texture = part after the last "-" without ".png", digits
    stripped from both. Paths are reduced to their basename; for the human-session names of
    model-vs-human (``0002_s5n_s01_0_bird_00_bird2-clock3.png``) the shape is the last "_" field of
    the prefix. Raises ValueError if either part is not one of the 16 categories.
    """
    base = str(file_name).replace("\\", "/").rsplit("/", 1)[-1]
    if "-" not in base:
        raise ValueError(f"not a cue-conflict file name (no '-'): {base!r}")
    head, tail = base.split("-", 1)[0], base.rsplit("-", 1)[1]
    shape = _DIGITS.sub("", head.rsplit("_", 1)[-1])
    stem = tail[: -len(".png")] if tail.lower().endswith(".png") else tail
    texture = _DIGITS.sub("", stem)
    for part in (shape, texture):
        if part not in CATEGORY_INDICES:
            raise ValueError(f"{base!r}: {part!r} is not one of the 16 categories")
    return shape, texture


def _ratio(num: int, den: int) -> float:
    return num / den if den else float("nan")


def shape_bias(
    decisions: Sequence[str] | np.ndarray, file_names: Sequence[str | PurePath]
) -> dict[str, object]:
    """Shape bias and related fractions from per-image 16-class decisions.

    Returns a dict with ``shape_bias`` (shape / (shape + texture) on conflict images),
    ``shape_fraction`` and ``texture_fraction`` (shape / texture decisions on conflict images, divided
    by all images given, as model-vs-human's ``fraction-correct-shape`` / ``-texture``), ``accuracy_16`` (decision ==
    shape category over all images given, see module docstring), ``n_images`` (conflict images
    used for the bias), ``n_images_all`` (all images, the accuracy's denominator) and
    ``per_category``: shape category → shape bias among that category's conflict images (NaN when
    the model made no shape or texture decision there). Fractions are in [0, 1]. Decisions outside
    the 16 categories (e.g. a human's "na") count as neither shape nor texture.
    """
    dec = np.asarray(decisions, dtype=object)
    if dec.ndim != 1 or len(dec) != len(file_names):
        raise ValueError(f"need one decision per file; got {len(dec)} and {len(file_names)}")
    if len(dec) == 0:
        raise ValueError("no images")
    parsed = [parse_cue_conflict_name(f) for f in file_names]
    shape = np.asarray([s for s, _ in parsed], dtype=object)
    texture = np.asarray([t for _, t in parsed], dtype=object)
    conflict = shape != texture
    hit_shape = (dec == shape) & conflict
    hit_texture = (dec == texture) & conflict
    n_conflict = int(conflict.sum())
    n_shape, n_texture = int(hit_shape.sum()), int(hit_texture.sum())

    per_category: dict[str, float] = {}
    for cat in CATEGORIES:
        in_cat = shape == cat
        if not (in_cat & conflict).any():
            continue
        s, t = int(hit_shape[in_cat].sum()), int(hit_texture[in_cat].sum())
        per_category[cat] = _ratio(s, s + t)

    return {
        "shape_bias": _ratio(n_shape, n_shape + n_texture),
        # model-vs-human's ShapeBias analysis: conflict-image hits over *all* images given.
        "shape_fraction": _ratio(n_shape, len(dec)),
        "texture_fraction": _ratio(n_texture, len(dec)),
        "accuracy_16": float(np.mean(dec == shape)),
        "n_images": n_conflict,
        "n_images_all": len(dec),
        "per_category": per_category,
    }

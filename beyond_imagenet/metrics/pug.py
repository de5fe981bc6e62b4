"""PUG-ImageNet accuracy (docs/evaluations.md §3, docs/datasets.md §10).

A model predicts over all 1000 ImageNet classes; ``class_to_imagenet_idx.json`` maps each of the
151 PUG classes to a list of ImageNet indices. Two scoring rules:

* ``membership`` (ours, default): correct if the argmax index is in the true class's list.
* ``paper``: the reference code's rule. It inverts the map into ImageNet index → PUG class, walking
  the class names in sorted order so later names overwrite earlier ones; a prediction is correct if
  it maps back to the true class. Because Shirt and Sweatshirt both list index 841, 841 ends up as
  Sweatshirt and Shirt images can never be scored correct. Kept for parity with published numbers.

Predictions outside every list are wrong under both rules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

__all__ = ["PUG_SUBSETS", "pug_accuracy", "pug_average"]

#: The 10 PUG-ImageNet factor subsets (folder names), in the paper's order.
PUG_SUBSETS: tuple[str, ...] = (
    "Worlds",
    "Camera_Pitch",
    "Camera_Yaw",
    "Camera_Roll",
    "Object_Pitch",
    "Object_Yaw",
    "Object_Roll",
    "Object_Scale",
    "Object_Texture",
    "Scene_Light",
)


def _inverse_map(class_to_imagenet_idx: Mapping[str, Sequence[int]]) -> dict[int, str]:
    """ImageNet index → PUG class as the reference code builds it (sorted names, last one wins)."""
    inverse: dict[int, str] = {}
    for name in sorted(class_to_imagenet_idx):
        for idx in class_to_imagenet_idx[name]:
            inverse[int(idx)] = name
    return inverse


def pug_accuracy(
    predicted_imagenet_idx: Sequence[int] | np.ndarray,
    true_pug_class_names: Sequence[str],
    class_to_imagenet_idx: Mapping[str, Sequence[int]],
    rule: Literal["membership", "paper"] = "membership",
) -> float:
    """Fraction of images whose predicted ImageNet index counts as their PUG class (see module doc).

    ``predicted_imagenet_idx``: (N,) argmax over the 1000 ImageNet logits.
    ``true_pug_class_names``: (N,) PUG class names (= the image's folder name).
    """
    pred = np.asarray(predicted_imagenet_idx)
    if pred.ndim != 1 or len(pred) != len(true_pug_class_names):
        raise ValueError(
            f"need one prediction per image; got {pred.shape} and {len(true_pug_class_names)} names"
        )
    if len(pred) == 0:
        raise ValueError("no images")
    unknown = sorted({n for n in true_pug_class_names if n not in class_to_imagenet_idx})
    if unknown:
        raise ValueError(f"PUG classes missing from class_to_imagenet_idx: {unknown[:5]}")

    return float(np.mean(pug_correct(pred, true_pug_class_names, class_to_imagenet_idx, rule)))


def pug_correct(pred, true_pug_class_names: Sequence[str], class_to_imagenet_idx: Mapping[str, Sequence[int]],
                rule: str = "membership") -> list[bool]:
    """Per image: whether the predicted ImageNet index counts as its PUG class under ``rule``."""
    if rule == "membership":
        members = {name: {int(i) for i in idx} for name, idx in class_to_imagenet_idx.items()}
        return [int(p) in members[t] for p, t in zip(np.asarray(pred).tolist(), true_pug_class_names)]
    if rule == "paper":
        inverse = _inverse_map(class_to_imagenet_idx)
        return [inverse.get(int(p)) == t for p, t in zip(np.asarray(pred).tolist(), true_pug_class_names)]
    raise ValueError(f"rule must be 'membership' or 'paper', got {rule!r}")


def pug_average(per_subset: Mapping[str, float]) -> float:
    """The paper's "Average": unweighted mean over the 10 subsets; all 10 are required."""
    missing = [s for s in PUG_SUBSETS if s not in per_subset]
    if missing:
        raise ValueError(f"PUG subsets missing: {missing}")
    return float(np.mean([per_subset[s] for s in PUG_SUBSETS]))

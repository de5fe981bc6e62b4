"""PUG-ImageNet scoring rules, including the reference code's Shirt/Sweatshirt quirk."""

from __future__ import annotations

import pytest

from beyond_imagenet.metrics.pug import PUG_SUBSETS, pug_accuracy, pug_average

# Insertion order deliberately not sorted: the paper rule must walk names in sorted order anyway.
CLASS_MAP = {"Sweatshirt": [841], "Shirt": [841], "Goldfish": [1], "Dog": [151, 152]}

PREDICTED = [841, 841, 1, 152, 999]
TRUE = ["Shirt", "Sweatshirt", "Goldfish", "Dog", "Dog"]


def test_membership_rule_scores_shirt_correct() -> None:
    # Shirt←841 right, Sweatshirt←841 right, Goldfish←1 right, Dog←152 right, Dog←999 unmapped.
    assert pug_accuracy(PREDICTED, TRUE, CLASS_MAP, rule="membership") == pytest.approx(4 / 5)


def test_paper_rule_can_never_score_shirt() -> None:
    # 841 → "Sweatshirt" (sorted after "Shirt", so it overwrites): the Shirt image is wrong.
    assert pug_accuracy(PREDICTED, TRUE, CLASS_MAP, rule="paper") == pytest.approx(3 / 5)
    assert pug_accuracy([841], ["Shirt"], CLASS_MAP, rule="paper") == 0.0
    assert pug_accuracy([841], ["Shirt"], CLASS_MAP, rule="membership") == 1.0


def test_default_rule_is_membership() -> None:
    assert pug_accuracy(PREDICTED, TRUE, CLASS_MAP) == pytest.approx(4 / 5)


def test_errors() -> None:
    with pytest.raises(ValueError, match="missing"):
        pug_accuracy([1], ["Cat"], CLASS_MAP)
    with pytest.raises(ValueError, match="rule"):
        pug_accuracy([1], ["Goldfish"], CLASS_MAP, rule="other")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one prediction per image"):
        pug_accuracy([1, 2], ["Goldfish"], CLASS_MAP)


def test_average_needs_all_ten_subsets() -> None:
    values = {s: i / 10 for i, s in enumerate(PUG_SUBSETS)}
    assert pug_average(values) == pytest.approx(0.45)
    del values["Scene_Light"]
    with pytest.raises(ValueError, match="Scene_Light"):
        pug_average(values)

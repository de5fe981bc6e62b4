"""Shape bias: category lists, 16-class aggregation, and the authors' real decision files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from beyond_imagenet.metrics.shape_bias import (
    CATEGORIES,
    CATEGORY_INDICES,
    parse_cue_conflict_name,
    probabilities_to_16_class,
    shape_bias,
)

from conftest import DECISIONS

# (file stem, shape bias, 16-class accuracy in %) from docs/published-numbers.md §11.4-§11.5.
REFERENCE = [
    ("deit3-21k", 0.3986, 32.4),
    ("convnext-base-21k", 0.3330, 30.5),
    ("vit-clip", 0.4647, 39.0),
    ("convnext-clip", 0.4241, 29.3),
    ("convnext-base", 0.304, 25.5),
    ("convnextv2-base", 0.434, 35.9),
    ("deit3", 0.414, 35.5),
    ("mae", 0.355, 28.5),
    ("tv-resnet50", 0.215, 18.3),
]


def test_category_lists() -> None:
    assert CATEGORIES == tuple(sorted(CATEGORIES)) and len(CATEGORIES) == 16
    all_indices = [i for c in CATEGORIES for i in CATEGORY_INDICES[c]]
    assert len(all_indices) == 207 and len(set(all_indices)) == 207
    assert all(0 <= i < 1000 for i in all_indices)
    sizes = {c: len(CATEGORY_INDICES[c]) for c in CATEGORIES}
    assert sizes["bird"] == 49 and sizes["dog"] == 109 and sizes["truck"] == 8
    assert sizes["airplane"] == sizes["knife"] == sizes["oven"] == 1


def test_aggregation_uses_mean_not_sum() -> None:
    """109 dog classes at 0.004 each sum to 0.436 (> knife's 0.3) but average 0.004 (< 0.3)."""
    probs = np.zeros((1, 1000))
    probs[0, list(CATEGORY_INDICES["dog"])] = 0.004
    probs[0, CATEGORY_INDICES["knife"][0]] = 0.3
    probs[0, 0] = 1.0 - probs.sum()  # tench: in no category
    assert probs.sum() == pytest.approx(1.0)
    assert list(probabilities_to_16_class(probs)) == ["knife"]


def test_ties_go_to_first_sorted_category() -> None:
    probs = np.zeros((2, 1000))
    probs[0, CATEGORY_INDICES["airplane"][0]] = 0.5
    probs[0, CATEGORY_INDICES["knife"][0]] = 0.5
    probs[1, CATEGORY_INDICES["oven"][0]] = 0.5
    probs[1, CATEGORY_INDICES["knife"][0]] = 0.5
    assert list(probabilities_to_16_class(probs)) == ["airplane", "knife"]


def test_rejects_wrong_width() -> None:
    with pytest.raises(ValueError, match="1000"):
        probabilities_to_16_class(np.zeros((2, 16)))


def test_parse_names() -> None:
    assert parse_cue_conflict_name("cat/cat4-elephant12.png") == ("cat", "elephant")
    assert parse_cue_conflict_name("0002_s5n_s01_0_bird_00_bird2-clock3.png") == ("bird", "clock")
    with pytest.raises(ValueError, match="not one of the 16"):
        parse_cue_conflict_name("cow1-cat2.png")


def test_hand_computed_case() -> None:
    """Conflict images: 4 (shape hits 2, texture hits 1) → bias 2/3; the fractions divide the hits
    by all 5 images as model-vs-human does: shape 2/5, texture 1/5. Accuracy over all 5 images (the
    no-conflict cat3-cat1 included): 3/5."""
    names = ["cat1-dog2.png", "cat2-dog1.png", "dog1-cat3.png", "dog2-knife1.png", "cat3-cat1.png"]
    decisions = ["cat", "dog", "dog", "car", "cat"]
    out = shape_bias(decisions, names)
    assert out["shape_bias"] == pytest.approx(2 / 3)
    assert out["shape_fraction"] == pytest.approx(2 / 5)
    assert out["texture_fraction"] == pytest.approx(1 / 5)
    assert out["accuracy_16"] == pytest.approx(0.6)
    assert out["n_images"] == 4 and out["n_images_all"] == 5
    assert out["per_category"] == pytest.approx({"cat": 0.5, "dog": 1.0})


@pytest.mark.parametrize(("stem", "bias", "acc16"), REFERENCE)
def test_reproduces_authors_decisions(stem: str, bias: float, acc16: float) -> None:
    df = pd.read_csv(DECISIONS / f"cue-conflict_{stem}_session-1.csv.gz")
    out = shape_bias(df["object_response"].to_numpy(), df["imagename"].tolist())
    # Four-decimal references are exact recomputations. Three-decimal ones were rounded twice
    # (convnext-base: 0.30349 → 0.3035 → 0.304), hence a tolerance slightly above half a unit.
    tol = 5e-5 if len(f"{bias}".split(".")[1]) == 4 else 6e-4
    assert out["shape_bias"] == pytest.approx(bias, abs=tol)
    assert 100 * out["accuracy_16"] == pytest.approx(acc16, abs=0.1)
    assert out["n_images"] == 1200 and out["n_images_all"] == 1280
    assert set(out["per_category"]) == set(CATEGORIES)
    # The file's own `category` column is the shape category parsed from the name.
    shapes = [parse_cue_conflict_name(n)[0] for n in df["imagename"]]
    assert shapes == df["category"].tolist()


def test_humans_are_shape_biased() -> None:
    """Human-session names carry a prefix; the parser must cope (published range 0.92-0.99)."""
    paths = sorted(DECISIONS.glob("cue-conflict_subject-*_session_1.csv.gz"))
    assert len(paths) == 10
    for path in paths:
        df = pd.read_csv(path)
        out = shape_bias(df["object_response"].to_numpy(), df["imagename"].tolist())
        assert 0.915 <= out["shape_bias"] <= 0.99, path.name


def _model_vs_human_shape_bias(df: pd.DataFrame) -> dict[str, float]:
    """model-vs-human's ShapeBias.analysis (modelvshuman/plotting/analyses.py), restated: the
    texture category from the name's last '-' part, rows with shape == texture dropped for the
    counts, but the fractions divided by all rows."""
    texture = df["imagename"].map(lambda n: "".join(c for c in n.split("_")[-1].split("-")[-1][:-4] if c.isalpha()))
    conflict = df[df["category"] != texture]
    shape = (conflict["object_response"] == conflict["category"]).sum() / len(df)
    tex = (conflict["object_response"] == texture[conflict.index]).sum() / len(df)
    return {"shape_fraction": shape, "texture_fraction": tex, "shape_bias": shape / (shape + tex)}


@pytest.mark.parametrize("stem", ["deit3-21k", "convnext-clip", "subject-01_session_1", "subject-07_session_1"])
def test_fractions_match_model_vs_human(stem: str) -> None:
    """Guards docs/evaluations.md §5: shape_fraction / texture_fraction are model-vs-human's
    fraction-correct-shape / -texture (hits on the 1,200 conflict images over all 1,280), on the
    authors' model decisions and on the human observers' (whose 'na' answers count as neither)."""
    name = f"cue-conflict_{stem}.csv.gz" if "subject" in stem else f"cue-conflict_{stem}_session-1.csv.gz"
    df = pd.read_csv(DECISIONS / name)
    assert len(df) == 1280
    ours = shape_bias(df["object_response"].to_numpy(), df["imagename"].tolist())
    theirs = _model_vs_human_shape_bias(df)
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(value, abs=1e-12), key
    assert ours["shape_fraction"] * 1280 == pytest.approx(round(ours["shape_fraction"] * 1280))

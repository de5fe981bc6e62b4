"""ImageNet-X error ratios must agree exactly with the imagenet-x package's own functions."""

from __future__ import annotations

from pathlib import Path

import imagenet_x
import numpy as np
import pandas as pd
import pytest

from beyond_imagenet.metrics.imagenet_x import FACTORS, error_ratios, factor_table, load_annotations

# The package itself (imagenet_x.utils.is_correct_real) trips a pandas deprecation warning.
pytestmark = pytest.mark.filterwarnings("ignore:Constructing a DataFrame from a list of sequences")


@pytest.fixture(scope="module")
def val_labels() -> pd.DataFrame:
    """All 50,000 val file names with their labels, as shipped in the package."""
    return pd.read_csv(imagenet_x.utils.get_annotation_path() / "filename_label.csv")


def _random_predictions(labels: np.ndarray, seed: int) -> np.ndarray:
    """About 80 % correct, like a real model, so every factor has both hits and misses."""
    rng = np.random.default_rng(seed)
    return np.where(rng.random(len(labels)) < 0.8, labels, rng.integers(0, 1000, len(labels)))


def _package_ratios(tmp_path: Path, names: pd.Series, preds: np.ndarray) -> pd.Series:
    """The package's reference pipeline: a directory of CSVs → get_factor_accuracies → error_ratio."""
    pd.DataFrame(
        {"file_name": names, "predicted_class": preds, "predicted_probability": 0.5}
    ).to_csv(tmp_path / "model.csv", index=False)
    accs = imagenet_x.get_factor_accuracies(str(tmp_path))
    return imagenet_x.error_ratio(accs).loc["model"]


def test_factor_order_matches_package() -> None:
    assert list(FACTORS) == list(imagenet_x.FACTORS)


def test_annotations_are_the_46110_non_prototype_images() -> None:
    ann = load_annotations()
    assert len(ann) == 46_110
    assert list(ann.columns) == ["class", *FACTORS]


def test_agrees_with_package_on_all_val_images(tmp_path: Path, val_labels: pd.DataFrame) -> None:
    preds = _random_predictions(val_labels.label.to_numpy(), seed=0)
    ours = error_ratios(val_labels.file_name, preds)
    ref = _package_ratios(tmp_path, val_labels.file_name, preds)
    assert list(ours.index) == [*FACTORS, "average"]
    np.testing.assert_allclose(ours[list(FACTORS)].to_numpy(), ref[list(FACTORS)].to_numpy(),
                               rtol=0, atol=1e-12)
    assert ours["average"] == pytest.approx(ref[list(FACTORS)].mean(), abs=1e-12)


def test_agrees_with_package_when_predictions_cover_half(val_labels: pd.DataFrame) -> None:
    """Annotated images without a prediction are dropped by an inner join. The package's CSV reader
    insists on all 50,000 rows, so the reference here is its lower-level path
    (augment_model_predictions → compute_factor_accuracies), which performs that join."""
    rng = np.random.default_rng(1)
    keep = rng.random(len(val_labels)) < 0.5
    names = val_labels.file_name[keep].reset_index(drop=True)
    preds = _random_predictions(val_labels.label.to_numpy()[keep], seed=2)
    ours = error_ratios([f"/data/imagenet/val/n0000/{n}" for n in names], preds)
    model = pd.DataFrame({"file_name": names, "predicted_class": preds,
                          "predicted_probability": 0.5})
    ann = imagenet_x.load_annotations(which_factor="top", partition="val", filter_prototypes=True)
    merged = imagenet_x.augment_model_predictions(ann, {"model": model})
    ref = imagenet_x.error_ratio(
        imagenet_x.compute_factor_accuracies(merged, imagenet_x.FACTORS)
    ).loc["model"]
    np.testing.assert_allclose(ours[list(FACTORS)].to_numpy(), ref[list(FACTORS)].to_numpy(),
                               rtol=0, atol=1e-12)
    table = factor_table(names, preds)
    assert table.loc["overall", "count"] == load_annotations().index.isin(names).sum()


def test_hand_computed_case(val_labels: pd.DataFrame) -> None:
    """4 pose images (3 right), 2 background images (both wrong): acc = 3/6 = 0.5,
    ER_pose = (1 − 3/4) / 0.5 = 0.5, ER_background = (1 − 0) / 0.5 = 2, average = 1.25.
    A prototype image's prediction must be ignored; paths and HF wnid suffixes must join."""
    ann = load_annotations()
    pose = ann.index[ann["pose"] == 1][:4]
    background = ann.index[ann["background"] == 1][:2]
    prototype = sorted(set(val_labels.file_name) - set(ann.index))[0]
    names = [f"val/x/{pose[0]}", pose[1].replace(".JPEG", "_n01234567.JPEG"), pose[2], pose[3],
             background[0], background[1], prototype]
    truth = ann["class"]
    preds = [truth[pose[0]], truth[pose[1]], truth[pose[2]], (truth[pose[3]] + 1) % 1000,
             (truth[background[0]] + 1) % 1000, (truth[background[1]] + 1) % 1000, 0]
    er = error_ratios(names, preds)
    assert er["pose"] == pytest.approx(0.5)
    assert er["background"] == pytest.approx(2.0)
    assert er[[f for f in FACTORS if f not in ("pose", "background")]].isna().all()
    assert er["average"] == pytest.approx(1.25)
    table = factor_table(names, preds)
    assert table.loc["overall", "count"] == 6
    assert table.loc["overall", "acc"] == pytest.approx(0.5)
    assert table.loc["pose", "n_correct"] == 3


def test_rejects_duplicates_and_mismatched_lengths() -> None:
    name = "ILSVRC2012_val_00004487.JPEG"
    with pytest.raises(ValueError, match="more than one"):
        error_ratios([name, f"a/{name}"], [1, 2])
    with pytest.raises(ValueError, match="one predicted class per file"):
        error_ratios([name], [1, 2])

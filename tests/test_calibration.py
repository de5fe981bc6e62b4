import numpy as np
import pytest

from beyond_imagenet.classes import imagenet_r_mask
from beyond_imagenet.metrics.accuracy import topk_accuracy
from beyond_imagenet.metrics.calibration import (
    bin_index,
    calibration_bins,
    calibration_from_logits,
    expected_calibration_error,
    maximum_calibration_error,
    softmax,
)


def test_ece_hand_computed():
    # 3 bins. Bin 0 (0, 1/3]: conf 0.2 wrong -> |0.2 - 0| weight 1/5.
    # Bin 1 (1/3, 2/3]: conf 0.5 right, 0.6 wrong -> mean conf 0.55, acc 0.5 -> gap 0.05, weight 2/5.
    # Bin 2 (2/3, 1]: conf 0.9 right, 1.0 right -> mean 0.95, acc 1 -> gap 0.05, weight 2/5.
    conf = np.array([0.2, 0.5, 0.6, 0.9, 1.0])
    correct = np.array([0, 1, 0, 1, 1])
    expected = 0.2 * 0.2 + 0.4 * 0.05 + 0.4 * 0.05
    assert expected_calibration_error(conf, correct, n_bins=3) == pytest.approx(expected, abs=1e-12)
    assert maximum_calibration_error(conf, correct, n_bins=3) == pytest.approx(0.2)


def test_bin_edges_one_in_last_zero_in_first_upper_edge_inclusive():
    idx = bin_index(np.array([0.0, 1.0, 1 / 15, 1 / 15 + 1e-9, 0.5]), 15)
    assert idx[0] == 0 and idx[1] == 14
    assert idx[2] == 0  # exactly on the upper edge of bin 0 -> bin 0 (lower < conf <= upper)
    assert idx[3] == 1
    assert idx[4] == 7  # 0.5 is the upper edge of bin 7 (7.5/15)


def test_all_confident_and_right_is_perfectly_calibrated():
    assert expected_calibration_error(np.ones(10), np.ones(10)) == 0.0
    assert expected_calibration_error(np.ones(10), np.zeros(10)) == 1.0


def test_bins_empty_are_nan_and_counts_sum():
    bins = calibration_bins(np.array([0.95, 0.97]), np.array([1, 0]), n_bins=15)
    assert bins["count"].sum() == 2 and bins["count"][14] == 2
    assert np.isnan(bins["accuracy"][0])
    assert bins["accuracy"][14] == 0.5


def test_out_of_range_confidence_rejected():
    with pytest.raises(ValueError):
        bin_index(np.array([1.2]), 15)


def test_imagenet_r_mask_is_applied_before_softmax():
    rng = np.random.default_rng(0)
    mask = imagenet_r_mask()
    logits = rng.normal(size=(6, 1000))
    # A huge logit on a class outside the 200 must not change the masked softmax.
    outside = np.flatnonzero(~mask)[0]
    logits[:, outside] = 50.0
    labels = np.arange(6)
    masked = softmax(logits, mask)
    assert masked.shape == (6, 200)
    np.testing.assert_allclose(masked.sum(axis=1), 1.0)
    reference = np.exp(logits[:, mask]) / np.exp(logits[:, mask]).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(masked, reference, rtol=1e-10)
    # Confidence after masking is not dominated by the outside class.
    result = calibration_from_logits(logits, labels, class_mask=mask)
    unmasked = softmax(logits).max(axis=1).mean()
    assert unmasked > 0.99 and result["mean_confidence"] < 0.5


def test_masked_labels_live_in_the_200_class_space():
    mask = imagenet_r_mask()
    logits = np.full((3, 1000), -10.0)
    cols = np.flatnonzero(mask)
    for i, label in enumerate([0, 57, 199]):
        logits[i, cols[label]] = 10.0
    assert calibration_from_logits(logits, [0, 57, 199], class_mask=mask)["accuracy"] == 1.0
    assert topk_accuracy(logits, np.array([0, 57, 199]), (1,), class_mask=mask)[1] == 1.0


def test_topk():
    logits = np.array([[0.1, 0.5, 0.4], [0.9, 0.02, 0.08]])
    acc = topk_accuracy(logits, np.array([2, 1]), ks=(1, 2))
    assert acc[1] == 0.0 and acc[2] == 0.5

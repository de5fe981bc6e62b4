import itertools

import numpy as np
import pytest

from beyond_imagenet.classes import imagenet_r_mask
from beyond_imagenet.metrics.accuracy import topk_accuracy
from beyond_imagenet.metrics.calibration import (
    bin_index,
    calibration_bins,
    calibration_from_logits,
    expected_calibration_error,
    fit_temperature,
    maximum_calibration_error,
    nll,
    softmax,
    temperature_scaled_calibration,
    temperature_split,
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


def _authors_ece(confidences, accuracies, n_bins):
    """The paper authors' binning and ECE (Beyond-INet inference/calibration.py, CELoss /
    ECELoss, restated): edges linspace(0, 1, n_bins + 1), a sample in bin i when
    lower_i < conf <= upper_i (np.greater * np.less_equal), ECE = sum of bin_prop * |conf - acc|."""
    edges = np.linspace(0, 1, n_bins + 1)
    index = np.full(len(confidences), -1)
    ece = 0.0
    for i, (lower, upper) in enumerate(itertools.pairwise(edges)):
        in_bin = np.greater(confidences, lower.item()) * np.less_equal(confidences, upper.item())
        index[in_bin] = i
        if np.mean(in_bin) > 0:
            ece += np.mean(in_bin) * abs(np.mean(confidences[in_bin]) - np.mean(accuracies[in_bin]))
    return index, ece


@pytest.mark.parametrize("n_bins", [3, 10, 15])
def test_binning_is_the_authors(n_bins):
    """Guards docs/evaluations.md §4: the bins and the ECE are those of the authors' calibration
    code, on random confidences, on every bin edge (as linspace computes it) and at 1.0. (A
    confidence of exactly 0, in no bin of theirs and in the first of ours, is no softmax maximum.)"""
    rng = np.random.default_rng(n_bins)
    edges = np.linspace(0, 1, n_bins + 1)[1:]
    conf = np.concatenate([rng.uniform(1e-3, 1, 500), edges, np.nextafter(edges[:-1], 1), [1.0, 1.0]])
    correct = rng.integers(0, 2, len(conf))
    index, ece = _authors_ece(conf, correct.astype(bool), n_bins)
    assert (index >= 0).all()
    np.testing.assert_array_equal(bin_index(conf, n_bins), index)
    assert expected_calibration_error(conf, correct, n_bins=n_bins) == pytest.approx(ece, abs=1e-12)


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


# ------------------------------------------------------------------------ temperature scaling


def _simulated(seed: int, n: int = 4000, k: int = 10, scale: float = 3.0):
    """Calibrated scores z (labels drawn from softmax(z))."""
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=scale, size=(n, k))
    p = softmax(z)
    labels = (rng.random((n, 1)) > np.cumsum(p, axis=1)).sum(axis=1)
    return z, np.minimum(labels, k - 1)


def test_nll_hand_computed():
    logits = np.array([[0.0, np.log(3.0)], [np.log(4.0), 0.0]])  # p = [1/4, 3/4], [4/5, 1/5]
    assert nll(logits, [1, 1]) == pytest.approx(-(np.log(0.75) + np.log(0.2)) / 2)
    # T = 2 halves the logits: p = [1/(1+sqrt3), sqrt3/(1+sqrt3)], [2/3, 1/3].
    expected = -(np.log(np.sqrt(3) / (1 + np.sqrt(3))) + np.log(1 / 3)) / 2
    assert nll(logits, [1, 1], temperature=2.0) == pytest.approx(expected)
    with pytest.raises(ValueError):
        nll(logits, [1, 1], temperature=0.0)


@pytest.mark.parametrize("t_true", [0.4, 0.7, 1.5, 3.0])
def test_fit_temperature_recovers_a_known_temperature(t_true):
    # logits = z / t_true with labels ~ softmax(z): softmax(logits / T) is calibrated at T = 1 / t_true.
    z, labels = _simulated(seed=1, n=20000)
    assert fit_temperature(z / t_true, labels) == pytest.approx(1 / t_true, rel=0.05)


def test_calibrated_data_gets_a_temperature_near_one():
    for seed in range(5):
        z, labels = _simulated(seed)
        assert fit_temperature(z, labels) == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize("t_true", [1.0, 0.3, 0.6, 2.0, 4.0])
def test_heldout_nll_is_never_raised(t_true):
    # Miscalibrated (t_true != 1): held-out NLL strictly lower. Calibrated (t_true = 1): the fitted
    # T is 1 up to sampling noise, so the held-out NLL may rise only by that noise (< 0.2 %).
    for seed in range(20):
        z, labels = _simulated(seed, n=2000)
        r = temperature_scaled_calibration(z / t_true, labels, seed=seed)
        if t_true == 1.0:
            assert r["nll_temperature_scaled"] <= r["nll_heldout"] * 1.002
        else:
            assert r["nll_temperature_scaled"] < r["nll_heldout"]
            assert r["ece_temperature_scaled"] < r["ece_heldout"]
        # on the fit half the fitted T never raises the NLL (T = 1 is kept otherwise)
        fit, _ = temperature_split(len(labels), seed)
        t = r["temperature"]
        assert nll(z[fit] / t_true, labels[fit], t) <= nll(z[fit] / t_true, labels[fit]) + 1e-12


def test_split_depends_only_on_seed_and_count():
    fit, held = temperature_split(11, seed=3)
    assert len(fit) == 5 and len(held) == 6
    assert sorted(np.concatenate([fit, held]).tolist()) == list(range(11))
    again = temperature_split(11, seed=3)
    np.testing.assert_array_equal(fit, again[0])
    np.testing.assert_array_equal(held, again[1])
    assert not np.array_equal(fit, temperature_split(11, seed=4)[0])
    with pytest.raises(ValueError):
        temperature_split(1)


def test_split_is_identical_across_models():
    # Two "models" on the same 1,000 images: the held-out ECE before scaling equals the ECE of the
    # same held-out rows computed directly, for both models, with one split.
    z, labels = _simulated(seed=7, n=1000)
    _, held = temperature_split(1000, seed=0)
    for logits in (z, 2.5 * z + 1.0):
        r = temperature_scaled_calibration(logits, labels, seed=0)
        assert r["ece_heldout"] == pytest.approx(calibration_from_logits(logits[held], labels[held])["ece"])
        assert r["nll_heldout"] == pytest.approx(nll(logits[held], labels[held]))


def test_temperature_scaling_on_a_masked_200_class_set():
    mask = imagenet_r_mask()
    z, labels = _simulated(seed=2, n=3000, k=200)
    logits = np.full((3000, 1000), 0.0)
    logits[:, mask] = z * 2.0  # over-confident by 2
    logits[:, np.flatnonzero(~mask)[0]] = 80.0  # outside the 200: must not matter
    r = temperature_scaled_calibration(logits, labels, class_mask=mask)
    assert r["temperature"] == pytest.approx(2.0, rel=0.1)
    assert r["nll_temperature_scaled"] < r["nll_heldout"]
    assert fit_temperature(logits, labels, class_mask=mask) == pytest.approx(r["temperature"], rel=0.1)


def test_table_writes_temperature_rows_only_when_enabled(monkeypatch):
    import types

    from beyond_imagenet.evaluations import calibration as evaluation
    from beyond_imagenet.workflow import reduce_outputs

    z, labels = _simulated(seed=0, n=200)
    item = {"model": "m", "dataset": "d", "class_space": "imagenet1k"}
    out = {"logits": z, "labels": labels, "ids": [str(i) for i in range(len(labels))], "attrs": {}}
    monkeypatch.setattr(evaluation, "class_space_mask", lambda space: None)
    monkeypatch.setattr(evaluation, "read_items", lambda job, per_image, finish: iter(
        [(item, {}, reduce_outputs(out, item, {}, per_image, finish))]))
    for enabled in (True, False):
        job = types.SimpleNamespace(params=types.SimpleNamespace(
            settings={"n_bins": 5, "temperature_scaling": enabled, "temperature_seed": 0},
            models={"m": {"model": "m"}}))
        rows = [r for r in evaluation.table(job) if r["metric"] in evaluation.TEMPERATURE_METRICS]
        assert len(rows) == (5 if enabled else 0)
        assert all(r["bin"] == "" and r["dataset"] == "d" for r in rows)


def test_reliability_title_shows_the_temperature_scaled_ece(tmp_path):
    import pandas as pd

    from beyond_imagenet.evaluations.calibration import (
        TEMPERATURE_METRICS,
        plot_reliability,
    )

    z, labels = _simulated(seed=0, n=400)
    base = {"model": "m", "label": "M", "family": "vit", "paradigm": "supervised", "paper_key": "", "dataset": "d"}
    result = calibration_from_logits(2 * z, labels, n_bins=5)
    scaled = temperature_scaled_calibration(2 * z, labels, n_bins=5)
    no_bin = {"bin": "", "bin_lower": "", "bin_upper": ""}
    rows = [{**base, "metric": m, **no_bin, "value": result[m]} for m in ("ece", "accuracy")]
    rows += [{**base, "metric": m, **no_bin, "value": scaled[m]} for m in TEMPERATURE_METRICS]
    bins = result["bins"]
    rows += [{**base, "metric": metric, "bin": b, "bin_lower": bins["lower"][b], "bin_upper": bins["upper"][b],
              "value": bins[key][b]} for b in range(5)
             for metric, key in (("bin_accuracy", "accuracy"), ("bin_confidence", "confidence"))]
    table = pd.DataFrame(rows)
    fig = plot_reliability(table, "d", [tmp_path / "r.png"])
    title = fig.axes[0].get_title()
    assert f"-> {scaled['ece_temperature_scaled']:.3f}" in title and f"T {scaled['temperature']:.2f}" in title
    # a table without temperature rows (temperature_scaling: false) keeps the old title
    fig = plot_reliability(table[~table["metric"].isin(TEMPERATURE_METRICS)], "d", [tmp_path / "r2.png"])
    assert "held-out" not in fig.axes[0].get_title()

"""Class masks, masked/multi-label top-1, the ImageNet-C summary and effective robustness."""

from __future__ import annotations

import numpy as np
import pytest

from beyond_imagenet.classes import (
    imagenet_a_mask,
    imagenet_r_mask,
    imagenet_wnids,
    val_file_name,
    wnid_to_index,
)
from beyond_imagenet.metrics.robustness import (
    ALEXNET_IMAGENET_C_MEAN_ERROR,
    IMAGENET_C_CORRUPTIONS,
    IMAGENET_C_EXTRA,
    effective_robustness,
    imagenet_c_summary,
    logit,
    logit_linear_fit,
    multilabel_top1,
    real_accuracy,
    real_labels,
    top1,
    topk,
)


def test_class_lists() -> None:
    wnids = imagenet_wnids()
    assert len(wnids) == 1000 and wnids[0] == "n01440764" and wnids[-1] == "n15075141"
    assert wnid_to_index()["n01440764"] == 0 and wnid_to_index()["n15075141"] == 999
    a, r = imagenet_a_mask(), imagenet_r_mask()
    assert a.dtype == bool and a.sum() == 200 and r.sum() == 200
    assert list(np.flatnonzero(a)[:10]) == [6, 11, 13, 15, 17, 22, 23, 27, 30, 37]
    assert list(np.flatnonzero(r)[:3]) == [1, 2, 4]
    assert (a & r).sum() == 86
    a[:] = False  # callers get a copy; the cached mask must survive
    assert imagenet_a_mask().sum() == 200


def test_val_file_name() -> None:
    assert val_file_name("/d/val/n01/ILSVRC2012_val_00000001.JPEG") == "ILSVRC2012_val_00000001.JPEG"
    assert val_file_name("ILSVRC2012_val_00000001_n01751748.JPEG") == "ILSVRC2012_val_00000001.JPEG"


def test_masking_is_needed_for_200_class_sets() -> None:
    """Each image's true class scores 5, but an out-of-subset class (index >= 200) scores 10: the
    unmasked argmax is never a label of the 200-class space, the masked one always is."""
    mask = imagenet_a_mask()
    inside, outside = np.flatnonzero(mask), np.flatnonzero(~mask)
    labels = np.arange(200)
    logits = np.zeros((200, 1000))
    logits[labels, inside[labels]] = 5.0
    logits[labels, outside[-1 - labels]] = 10.0
    assert top1(logits, labels) == 0.0
    assert top1(logits, labels, class_mask=mask) == 1.0
    assert topk(logits, labels, k=1, class_mask=mask) == 1.0
    assert topk(logits, labels, k=2) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="boolean"):
        top1(logits, labels, class_mask=mask.astype(int))
    with pytest.raises(ValueError, match="masked space"):
        top1(logits, labels + 200, class_mask=mask)


def test_top1_and_topk_plain() -> None:
    logits = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
    assert top1(logits, [1, 1, 2]) == pytest.approx(2 / 3)
    assert topk(logits, [1, 1, 0], k=2) == pytest.approx(2 / 3)


def test_multilabel_top1() -> None:
    """Sets [3, 5], [], [7, -1, -1] (padding), [-1] (empty after padding), [2]:
    3 images used; hits on 5 and 7 → 2/3."""
    sets = [[3, 5], [], [7, -1, -1], [-1], [2]]
    result = multilabel_top1(np.array([5, 1, 7, 0, 4]), sets)
    assert result.accuracy == pytest.approx(2 / 3) and result.n == 3
    logits = np.eye(10)[[5, 1, 7, 0, 4]]
    assert multilabel_top1(logits, sets) == result
    with pytest.raises(ValueError, match="empty"):
        multilabel_top1([1], [[]])


def test_real_labels() -> None:
    labels = real_labels()
    assert len(labels) == 50_000
    assert sum(1 for v in labels.values() if not v) == 3_163
    assert labels["ILSVRC2012_val_00000002.JPEG"] == (970, 795)
    names = list(labels)
    first = [v[0] if v else 0 for v in labels.values()]
    result = real_accuracy([f"val/x/{n}" for n in names], first)
    assert result.accuracy == 1.0 and result.n == 46_837


def _constant_c(value: float) -> dict[tuple[str, int], float]:
    return {(c, s): value for c in IMAGENET_C_CORRUPTIONS for s in range(1, 6)}


def test_imagenet_c_hand_computed() -> None:
    """gaussian_noise accs .9 .8 .7 .6 .5 → mean .7, Σerr 1.5, CE 1.5 / (5·0.886428);
    brightness .95 .9 .9 .85 .8 → mean .88, Σerr .6, CE .6 / (5·0.564592);
    the other 13 at .5 → CE .5 / alex_mean. Extras are reported but not averaged."""
    acc = _constant_c(0.5)
    for s, a in enumerate([0.9, 0.8, 0.7, 0.6, 0.5], start=1):
        acc[("gaussian_noise", s)] = a
    for s, a in enumerate([0.95, 0.9, 0.9, 0.85, 0.8], start=1):
        acc[("brightness", s)] = a
    for s in range(1, 6):
        acc[("saturate", s)] = 0.0
    out = imagenet_c_summary(acc)
    assert out["per_corruption"]["gaussian_noise"] == pytest.approx(0.7)
    assert out["per_corruption"]["brightness"] == pytest.approx(0.88)
    assert out["per_corruption"]["saturate"] == 0.0
    assert out["ce"]["gaussian_noise"] == pytest.approx(1.5 / 4.43214)
    assert out["ce"]["brightness"] == pytest.approx(0.6 / 2.82296)
    assert "saturate" not in out["ce"]
    assert out["mean_accuracy"] == pytest.approx((0.7 + 0.88 + 13 * 0.5) / 15)
    others = [0.5 / ALEXNET_IMAGENET_C_MEAN_ERROR[c] for c in IMAGENET_C_CORRUPTIONS
              if c not in ("gaussian_noise", "brightness")]
    expected_mce = (1.5 / 4.43214 + 0.6 / 2.82296 + sum(others)) / 15
    assert out["mCE"] == pytest.approx(expected_mce)


def test_imagenet_c_constants() -> None:
    assert len(IMAGENET_C_CORRUPTIONS) == 15 and len(IMAGENET_C_EXTRA) == 4
    assert set(ALEXNET_IMAGENET_C_MEAN_ERROR) == set(IMAGENET_C_CORRUPTIONS)
    # A model exactly as bad as AlexNet everywhere has mCE 1.
    acc = {(c, s): 1 - ALEXNET_IMAGENET_C_MEAN_ERROR[c] for c in IMAGENET_C_CORRUPTIONS
           for s in range(1, 6)}
    assert imagenet_c_summary(acc)["mCE"] == pytest.approx(1.0)


def test_imagenet_c_validation() -> None:
    acc = _constant_c(0.5)
    del acc[("fog", 3)]
    with pytest.raises(ValueError, match="fog severity 3"):
        imagenet_c_summary(acc)
    acc = _constant_c(0.5)
    acc[("spatter", 1)] = 0.5
    with pytest.raises(ValueError, match="spatter severity 2"):
        imagenet_c_summary(acc)
    acc = _constant_c(0.5)
    acc[("blur", 1)] = 0.5
    with pytest.raises(ValueError, match="blur"):
        imagenet_c_summary(acc)
    with pytest.raises(ValueError, match="fraction"):
        imagenet_c_summary(_constant_c(50.0))


def test_real_labels_other_than_the_published_file_are_refused(tmp_path, monkeypatch):
    import json

    import beyond_imagenet.metrics.robustness as robustness

    tampered = tmp_path / "imagenet_real_labels.json"
    tampered.write_text(json.dumps([[0]] * 50_000))  # right length, wrong labels
    monkeypatch.setattr(robustness, "package_data_path", lambda *parts: tampered)
    robustness._real_label_table.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="not that of the published real.json"):
            robustness.real_labels()
    finally:
        robustness._real_label_table.cache_clear()


# ------------------------------------------------------------------------ effective robustness
def _sig(x: float) -> float:
    return 1 / (1 + np.exp(-x))


def test_logit_clips_away_from_0_and_1() -> None:
    assert logit(0.5) == 0.0
    assert logit(_sig(2.0)) == pytest.approx(2.0)
    assert logit(0.0) == pytest.approx(np.log(1e-4 / (1 - 1e-4)))
    assert logit(1.0) == pytest.approx(-logit(0.0))


def test_three_models_on_an_exact_line() -> None:
    # logit(clean) = 0, 1, 2 and logit(shifted) = 2 * logit(clean) - 1 = -1, 1, 3.
    clean = np.array([_sig(0), _sig(1), _sig(2)])
    shifted = np.array([_sig(-1), _sig(1), _sig(3)])
    a, c = logit_linear_fit(clean, shifted)
    assert a == pytest.approx(2.0) and c == pytest.approx(-1.0)
    er, predicted = effective_robustness(clean, shifted, a, c)
    np.testing.assert_allclose(er, 0.0, atol=1e-12)
    np.testing.assert_allclose(predicted, shifted)


def test_a_model_above_the_line_has_positive_effective_robustness() -> None:
    # x = 0, 1, 2; y = 0, 1, 3. x̄ = 1, ȳ = 4/3; Σ dx dy = (-1)(-4/3) + 0 + (1)(5/3) = 3, Σ dx² = 2
    # -> a = 3/2, c = 4/3 - 3/2 = -1/6. Third model: predicted sigmoid(3 - 1/6) = sigmoid(17/6),
    # ER = sigmoid(3) - sigmoid(17/6) = 0.952574 - 0.944451 ≈ 0.008123; the middle one is below the line.
    clean = np.array([_sig(0), _sig(1), _sig(2)])
    shifted = np.array([_sig(0), _sig(1), _sig(3)])
    a, c = logit_linear_fit(clean, shifted)
    assert a == pytest.approx(1.5) and c == pytest.approx(-1 / 6)
    er, predicted = effective_robustness(clean, shifted, a, c)
    assert predicted[2] == pytest.approx(1 / (1 + np.exp(-17 / 6)))
    assert er[2] == pytest.approx(_sig(3) - _sig(17 / 6)) and er[2] == pytest.approx(0.008123, abs=1e-6)
    assert er[0] == pytest.approx(0.5 - _sig(-1 / 6)) and er[0] > 0
    assert er[1] == pytest.approx(_sig(1) - _sig(4 / 3)) and er[1] < 0


def test_logit_linear_fit_refuses_undetermined_lines() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        logit_linear_fit([0.7], [0.5])
    with pytest.raises(ValueError, match="same clean accuracy"):
        logit_linear_fit([0.7, 0.7, 0.7], [0.5, 0.6, 0.4])
    with pytest.raises(ValueError, match="NaN"):
        logit_linear_fit([0.7, 0.8, np.nan], [0.5, 0.6, 0.4])


def _table_rows(accuracies: dict[str, dict[str, float]]) -> tuple[list[dict], dict[str, dict]]:
    """Rows as the robustness table has them: per model, a top1 per benchmark (ImageNet-C with a
    per-corruption row too, which must not enter)."""
    models = {m: {"model": m, "label": m.upper()} for m in accuracies}
    rows = []
    for m, accs in accuracies.items():
        for benchmark, value in accs.items():
            dataset = "" if benchmark == "average" else benchmark
            rows.append({**models[m], "dataset": dataset, "benchmark": benchmark, "corruption": "", "severity": "",
                         "metric": "top1", "value": value})
            rows.append({**models[m], "dataset": dataset, "benchmark": benchmark, "corruption": "", "severity": "",
                         "metric": "n_images", "value": 10})
        rows.append({**models[m], "dataset": "imagenet_c", "benchmark": "imagenet_c", "corruption": "fog",
                     "severity": "", "metric": "top1", "value": 0.01})
    return rows, models


def test_effective_robustness_rows(caplog) -> None:
    from beyond_imagenet.evaluations.robustness import effective_robustness_rows

    accuracies = {
        "m1": {"imagenet_val": _sig(0), "imagenet_r": _sig(0), "average": _sig(-1)},
        "m2": {"imagenet_val": _sig(1), "imagenet_r": _sig(1), "average": _sig(1)},
        "m3": {"imagenet_val": _sig(2), "imagenet_r": _sig(3), "average": _sig(3)},
        "m4": {"imagenet_r": 0.9},  # no clean top-1: neither fitted nor reported
    }
    rows, models = _table_rows(accuracies)
    got = effective_robustness_rows(rows, models, {"effective_robustness_min_models": 3})
    assert {(r["benchmark"], r["metric"]) for r in got} == {
        (b, m) for b in ("imagenet_r", "average") for m in ("effective_robustness", "predicted_top1")}
    assert all(r["corruption"] == "" and r["severity"] == "" and r["dataset"] == "" for r in got)
    value = {(r["model"], r["benchmark"], r["metric"]): r["value"] for r in got}
    assert value[("m3", "imagenet_r", "effective_robustness")] == pytest.approx(_sig(3) - _sig(17 / 6))
    assert value[("m3", "imagenet_r", "predicted_top1")] == pytest.approx(_sig(17 / 6))
    for m in ("m1", "m2", "m3"):  # average: on the exact line 2x - 1
        assert value[(m, "average", "effective_robustness")] == pytest.approx(0.0, abs=1e-12)
    assert got[0]["label"] == "M1" and not any(r["model"] == "m4" for r in got)

    # Fewer models than the setting: no rows, and a warning naming the benchmark and the reason.
    with caplog.at_level("WARNING"):
        assert effective_robustness_rows(rows, models, {"effective_robustness_min_models": 4}) == []
    assert "imagenet_r: 3 model(s)" in caplog.text and "effective_robustness_min_models" in caplog.text
    caplog.clear()
    two = {m: accuracies[m] for m in ("m1", "m2")}
    with caplog.at_level("WARNING"):
        assert effective_robustness_rows(*_table_rows(two), {"effective_robustness_min_models": 3}) == []
    assert "average: 2 model(s)" in caplog.text


def test_effective_robustness_skips_nan_and_undetermined_fits(caplog) -> None:
    from beyond_imagenet.evaluations.robustness import effective_robustness_rows

    accuracies = {f"m{i}": {"imagenet_val": 0.7, "imagenet_real": 0.6 + i / 100, "imagenet_a": np.nan}
                  for i in range(3)}
    rows, models = _table_rows(accuracies)
    with caplog.at_level("WARNING"):
        assert effective_robustness_rows(rows, models, {"effective_robustness_min_models": 3}) == []
    assert "imagenet_real: the 3 models have only 1 distinct imagenet_val top-1s" in caplog.text
    assert "imagenet_a: 0 model(s)" in caplog.text


def test_effective_robustness_needs_distinct_clean_accuracies(caplog) -> None:
    """Three models, two at the same ImageNet accuracy (e.g. random weights at 0): a line through
    two points fits every model exactly, so no effective robustness is reported (and it says why)."""
    from beyond_imagenet.evaluations.robustness import effective_robustness_rows

    accuracies = {"r1": {"imagenet_val": 0.0, "imagenet_v2": 0.0}, "r2": {"imagenet_val": 0.0, "imagenet_v2": 0.01},
                  "real": {"imagenet_val": 0.9, "imagenet_v2": 0.8}}
    rows, models = _table_rows(accuracies)
    with caplog.at_level("WARNING"):
        assert effective_robustness_rows(rows, models, {"effective_robustness_min_models": 3}) == []
    assert "only 2 distinct imagenet_val top-1s" in caplog.text


def test_robustness_table_adds_effective_robustness(monkeypatch) -> None:
    import types

    from beyond_imagenet.evaluations import robustness as evaluation
    from beyond_imagenet.workflow import reduce_outputs

    rng = np.random.default_rng(0)
    items = []
    for m, (clean, sketch) in {"m1": (0.5, 0.2), "m2": (0.7, 0.3), "m3": (0.9, 0.6)}.items():
        for dataset, acc in (("imagenet_val", clean), ("imagenet_sketch", sketch)):
            labels = rng.integers(0, 1000, 10)
            predicted = np.where(np.arange(10) < round(acc * 10), labels, (labels + 1) % 1000)
            out = {"logits": np.eye(1000)[predicted], "labels": labels, "ids": [f"i{k}" for k in range(10)],
                   "attrs": {}}
            items.append(({"model": m, "dataset": dataset, "kind": dataset, "class_space": "imagenet1k"},
                          {"root": ""}, out))
    monkeypatch.setattr(evaluation, "read_items", lambda job, per_image: iter(
        (item, manifest, reduce_outputs(out, item, manifest, per_image)) for item, manifest, out in items))
    job = types.SimpleNamespace(params=types.SimpleNamespace(
        settings={"real": False, "effective_robustness_min_models": 3},
        models={m: {"model": m} for m in ("m1", "m2", "m3")}))
    rows = evaluation.table(job)
    er = {(r["model"], r["benchmark"]): r["value"] for r in rows if r["metric"] == "effective_robustness"}
    assert set(er) == {(m, b) for m in ("m1", "m2", "m3") for b in ("imagenet_sketch", "average")}
    a, c = logit_linear_fit([0.5, 0.7, 0.9], [0.2, 0.3, 0.6])
    assert er[("m2", "imagenet_sketch")] == pytest.approx(effective_robustness([0.7], [0.3], a, c)[0][0])

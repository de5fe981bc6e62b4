"""Tests for the batched CLIP_benchmark-style linear probe (beyond_imagenet.metrics.transfer)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from beyond_imagenet.metrics.transfer import (
    ProbeConfig,
    fit_linear_probe,
    fit_linear_probes,
    l2_normalize,
    select_and_evaluate,
    select_weight_decay,
)

# A coarse grid keeps the tests fast; the protocol's 97-point grid only adds members.
SMALL_GRID = tuple(float(w) for w in np.logspace(-6, 2, 9))


def gaussian_classes(
    rng: np.random.Generator, n: int, n_classes: int, dim: int, sep: float, means: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Isotropic unit-variance Gaussian classes whose means have norm ``sep``; returns means too."""
    if means is None:
        means = rng.normal(size=(n_classes, dim))
        means *= sep / np.linalg.norm(means, axis=1, keepdims=True)
    labels = rng.integers(0, n_classes, size=n)
    features = means[labels] + rng.normal(size=(n, dim))
    return features.astype(np.float32), labels.astype(np.int64), means


def task(seed: int, n_classes: int, dim: int, sep: float, sizes=(400, 200, 1000)):
    """train / val / trainval / test splits from one distribution (trainval = train + val)."""
    rng = np.random.default_rng(seed)
    x, y, means = gaussian_classes(rng, sum(sizes), n_classes, dim, sep)
    a, b = sizes[0], sizes[0] + sizes[1]
    train, val, test = (x[:a], y[:a]), (x[a:b], y[a:b]), (x[b:], y[b:])
    trainval = (x[:b], y[:b])
    return train, val, trainval, test, means


def test_l2_normalize_upcasts_and_handles_zero_rows() -> None:
    x = np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float16)
    out = l2_normalize(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]], atol=1e-6)


def test_separable_classes_are_learned_near_perfectly() -> None:
    train, val, trainval, test, _ = task(seed=1, n_classes=5, dim=64, sep=12.0)
    result = select_and_evaluate(train, val, trainval, test, 5, ProbeConfig(weight_decays=SMALL_GRID))
    assert result["test_top1"] >= 0.98
    assert result["val_top1_best"] >= 0.98
    assert result["weight_decay"] in SMALL_GRID
    assert len(result["val_top1_per_wd"]) == len(SMALL_GRID)


def test_choice_depends_on_val_never_on_test() -> None:
    config = ProbeConfig(weight_decays=SMALL_GRID)
    train, val, trainval, test, means = task(seed=2, n_classes=6, dim=32, sep=2.5)
    rng = np.random.default_rng(3)
    shuffled_test = (test[0], rng.permutation(test[1]))
    first = select_and_evaluate(train, val, trainval, test, 6, config)
    second = select_and_evaluate(train, val, trainval, shuffled_test, 6, config)
    assert first["weight_decay"] == second["weight_decay"]
    assert first["val_top1_per_wd"] == second["val_top1_per_wd"]
    assert first["val_top1_best"] == second["val_top1_best"]
    assert second["test_top1"] < first["test_top1"]  # the test set really was different

    # A validation set on which another grid member is right exactly where the chosen one is wrong
    # must move the choice away from it.
    sweep = fit_linear_probes(train[0], train[1], 6, SMALL_GRID, config)
    chosen = SMALL_GRID.index(first["weight_decay"])
    pool, _, _ = gaussian_classes(rng, 4000, 6, 32, 2.5, means)
    preds = sweep.predict(pool)
    other = next(
        w for w in range(len(SMALL_GRID))
        if w != chosen and not sweep.diverged[w] and (preds[w] != preds[chosen]).sum() >= 20
    )
    disagree = preds[other] != preds[chosen]
    other_val = (pool[disagree], preds[other][disagree])
    third = select_and_evaluate(train, other_val, trainval, test, 6, config)
    assert third["weight_decay"] != first["weight_decay"]
    assert third["val_top1_per_wd"][chosen] == 0.0
    assert third["val_top1_best"] == 1.0


def test_ties_go_to_the_smaller_weight_decay() -> None:
    assert select_weight_decay(np.array([5, 9, 9, 2]), [1e-3, 1e-2, 1e-1, 1.0]) == 1
    assert select_weight_decay(np.array([9, 5, 9]), [1.0, 1e-1, 1e-2]) == 2


def test_a_diverging_refit_falls_back_to_the_next_weight_decay(monkeypatch) -> None:
    import beyond_imagenet.metrics.transfer as probes

    train, val, trainval, test, _ = task(seed=5, n_classes=4, dim=8, sep=3.0, sizes=(200, 50, 200))
    config = ProbeConfig(weight_decays=SMALL_GRID)
    reference = select_and_evaluate(train, val, trainval, test, 4, config)
    real_fit = probes.fit_linear_probes

    def refit_blows_up_at_the_chosen_wd(features, labels, n_classes, wds, cfg, device="cpu"):
        fitted = real_fit(features, labels, n_classes, wds, cfg, device)
        if len(wds) == 1 and wds[0] == reference["weight_decay"]:
            return probes.ProbeSet(torch.full_like(fitted.weight, float("nan")), fitted.bias,
                                   fitted.weight_decays, fitted.n_classes, fitted.normalize)
        return fitted

    monkeypatch.setattr(probes, "fit_linear_probes", refit_blows_up_at_the_chosen_wd)
    result = select_and_evaluate(train, val, trainval, test, 4, config)
    assert result["refit_diverged"] == [reference["weight_decay"]]
    assert result["weight_decay"] != reference["weight_decay"]
    assert result["test_top1"] > 0.5  # scored with the fallback probe, not as a diverged 0


def test_agrees_with_sklearn_logistic_regression() -> None:
    n_classes, dim = 10, 32
    train, val, trainval, test, _ = task(seed=4, n_classes=n_classes, dim=dim, sep=2.0, sizes=(800, 200, 2000))
    result = select_and_evaluate(
        train, val, trainval, test, n_classes, ProbeConfig(weight_decays=SMALL_GRID)
    )

    # sklearn reference: multinomial logistic regression on the same normalised features, its C
    # chosen on the same val split from a grid, refit on trainval.
    def fit(split, c):
        return LogisticRegression(C=c, max_iter=2000).fit(l2_normalize(split[0]), split[1])

    cs = np.logspace(-2, 4, 13)
    val_acc = [fit(train, c).score(l2_normalize(val[0]), val[1]) for c in cs]
    best_c = cs[int(np.argmax(val_acc))]
    sk_test = fit(trainval, best_c).score(l2_normalize(test[0]), test[1])

    # Overlapping classes: well above chance (0.1) yet far from perfect, so the check has teeth.
    assert 0.4 < sk_test < 0.9
    assert abs(result["test_top1"] - sk_test) <= 0.05, (result["test_top1"], sk_test)


def test_batched_member_equals_single_adamw_fit() -> None:
    rng = np.random.default_rng(5)
    x, y, _ = gaussian_classes(rng, 300, 7, 24, 3.0)
    config = ProbeConfig(epochs=4, batch_size=32)
    grid = (1e-4, 1e-1, 3.0)
    sweep = fit_linear_probes(x, y, 7, grid, config)
    assert sweep.weight.shape == (3, 24, 7)
    assert sweep.bias.shape == (3, 7)
    for w, wd in enumerate(grid):
        single = fit_linear_probe(x, y, 7, wd, config)
        torch.testing.assert_close(sweep.weight[w], single.weight, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(sweep.bias[w], single.bias, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(sweep.predict(x)[w], single.predict(x))
    # The members did differ: the decay really is per member.
    assert not torch.allclose(sweep.weight[0], sweep.weight[2], atol=1e-3)


def test_deterministic_on_cpu() -> None:
    train, val, trainval, test, _ = task(seed=6, n_classes=4, dim=16, sep=2.0)
    config = ProbeConfig(weight_decays=SMALL_GRID)
    assert select_and_evaluate(train, val, trainval, test, 4, config) == select_and_evaluate(
        train, val, trainval, test, 4, config
    )
    a = fit_linear_probes(train[0], train[1], 4, SMALL_GRID, config)
    b = fit_linear_probes(train[0], train[1], 4, SMALL_GRID, config)
    # Bitwise, NaN included (SMALL_GRID's largest weight decay diverges).
    assert torch.allclose(a.weight, b.weight, rtol=0, atol=0, equal_nan=True)
    assert torch.allclose(a.bias, b.bias, rtol=0, atol=0, equal_nan=True)
    # A different seed changes init and shuffle, hence the weights.
    c = fit_linear_probes(train[0], train[1], 4, SMALL_GRID, ProbeConfig(weight_decays=SMALL_GRID, seed=1))
    assert not torch.equal(a.weight, c.weight)


def test_init_is_nn_linear_default_under_seed() -> None:
    """Same starting point as CLIP_benchmark's ``torch.manual_seed(0); nn.Linear(D, C)``."""
    x = np.random.default_rng(9).normal(size=(10, 12)).astype(np.float32)
    sweep = fit_linear_probes(x, np.zeros(10, dtype=np.int64), 3, (0.0,), ProbeConfig(epochs=0))
    torch.manual_seed(0)
    layer = torch.nn.Linear(12, 3)
    assert torch.equal(sweep.weight[0], layer.weight.detach().t())
    assert torch.equal(sweep.bias[0], layer.bias.detach())


def test_float16_input_and_missing_class() -> None:
    train, val, trainval, test, _ = task(seed=7, n_classes=3, dim=16, sep=8.0)
    # Declare 5 classes although only 3 occur: outputs must still have 5 columns.
    sweep = fit_linear_probes(train[0].astype(np.float16), train[1], 5, (1e-4,), ProbeConfig(epochs=2))
    assert sweep.weight.dtype == torch.float32 and sweep.weight.shape == (1, 16, 5)
    assert sweep.accuracy(test[0].astype(np.float16), test[1])[0] >= 0.95
    with pytest.raises(ValueError):
        fit_linear_probes(train[0], train[1], 2, (1e-4,), ProbeConfig(epochs=1))


def test_divergent_members_are_never_correct() -> None:
    # lr * wd = 1e5: the decoupled decay multiplies the weights by ~-1e5 per step, so float32
    # overflows within a few steps (the protocol's wd = 100 overflows too, after ~60 steps).
    train, *_ = task(seed=8, n_classes=3, dim=8, sep=4.0)
    sweep = fit_linear_probes(train[0], train[1], 3, (1e-4, 1e6), ProbeConfig(epochs=3))
    assert list(sweep.diverged) == [False, True]
    assert (sweep.predict(train[0])[1] == -1).all()
    assert sweep.accuracy(train[0], train[1])[1] == 0.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_sweep_agrees_with_the_cpu_sweep() -> None:
    train, val, trainval, test, _ = task(seed=10, n_classes=5, dim=32, sep=2.5)
    config = ProbeConfig(weight_decays=SMALL_GRID)
    cpu = select_and_evaluate(train, val, trainval, test, 5, config, "cpu")
    gpu = select_and_evaluate(train, val, trainval, test, 5, config, "cuda")
    assert gpu["weight_decay"] == cpu["weight_decay"]
    assert abs(gpu["test_top1"] - cpu["test_top1"]) <= 0.01

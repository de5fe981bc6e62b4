"""Tests for linear CKA and the minibatch CKA accumulator (docs/evaluations.md §9)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from beyond_imagenet.metrics.cka import (
    MinibatchCKA,
    gram_linear,
    hsic_biased,
    hsic_unbiased,
    linear_cka,
)


def _rand(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _latent_pair(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two representations sharing an 8-d latent (one of them through a nonlinearity) plus noise,
    so that CKA is clearly between 0 and 1 (~0.7) and well determined."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 8, generator=g)
    x = z @ torch.randn(8, 64, generator=g) + 0.5 * torch.randn(n, 64, generator=g)
    y = torch.tanh(z @ torch.randn(8, 32, generator=g)) + 0.5 * torch.randn(n, 32, generator=g)
    return x, y


# --- HSIC by hand -----------------------------------------------------------------------------

def test_hsic_unbiased_hand_computed() -> None:
    # n = 4, K̃ = L̃ with a single off-diagonal pair (1,2) = 1. By the formula:
    # tr(K̃L̃) = 2; 1ᵀK̃1·1ᵀL̃1/((n-1)(n-2)) = 2·2/6 = 2/3; 1ᵀK̃L̃1 = (K̃1)·(L̃1) = [1,1,0,0]·[1,1,0,0] = 2,
    # times 2/(n-2) = 1 -> 2. HSIC = (2 + 2/3 - 2) / (4·1) = 1/6.
    # The diagonal (here 5 and 7) must be ignored.
    k = torch.zeros(4, 4, dtype=torch.float64)
    k[0, 1] = k[1, 0] = 1.0
    k.fill_diagonal_(5.0)
    l = k.clone()
    l.fill_diagonal_(7.0)
    assert float(hsic_unbiased(k, l)) == pytest.approx(1 / 6, abs=1e-15)
    # A constant kernel carries no information: tr = 12, 12·12/6 = 24, 2/2·(3·1)·(3·1) = 36 -> 0.
    ones = torch.ones(4, 4, dtype=torch.float64)
    assert float(hsic_unbiased(ones, ones)) == pytest.approx(0.0, abs=1e-15)


def test_hsic_unbiased_matches_u_statistic_bruteforce() -> None:
    """Independent check of the closed form against its definition as a U-statistic
    (Song et al. 2012): mean over distinct ordered (i, j, q, r) of K_ij L_ij + K_ij L_qr - 2 K_ij L_iq."""
    x, y = _rand(7, 3, 0), _rand(7, 2, 1)
    k, l = gram_linear(x).numpy(), gram_linear(y).numpy()
    terms = [
        k[i, j] * l[i, j] + k[i, j] * l[q, r] - 2 * k[i, j] * l[i, q]
        for i, j, q, r in itertools.permutations(range(7), 4)
    ]
    assert float(hsic_unbiased(torch.from_numpy(k), torch.from_numpy(l))) == pytest.approx(np.mean(terms), rel=1e-10)


def test_hsic_biased_matches_explicit_centering() -> None:
    x, y = _rand(9, 4, 2), _rand(9, 5, 3)
    k, l = gram_linear(x), gram_linear(y)
    h = torch.eye(9, dtype=torch.float64) - 1.0 / 9
    expected = torch.trace(k @ h @ l @ h) / 8**2
    assert float(hsic_biased(k, l)) == pytest.approx(float(expected), rel=1e-12)


def test_unbiased_needs_four_samples() -> None:
    with pytest.raises(ValueError):
        hsic_unbiased(torch.eye(3), torch.eye(3))


# --- linear CKA properties --------------------------------------------------------------------

@pytest.mark.parametrize("unbiased", [True, False])
def test_cka_self_is_one(unbiased: bool) -> None:
    x = _rand(50, 20, 0)
    assert linear_cka(x, x, unbiased=unbiased) == pytest.approx(1.0, abs=1e-12)


def test_cka_accepts_numpy_and_float32_and_extra_dims() -> None:
    x = _rand(30, 12, 4)
    ref = linear_cka(x, x[:, :6])
    assert linear_cka(x.numpy().astype(np.float32), x[:, :6].numpy()) == pytest.approx(ref, abs=1e-6)
    assert linear_cka(x.reshape(30, 3, 4), x[:, :6]) == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("unbiased", [True, False])
def test_cka_invariant_to_orthogonal_transform_and_isotropic_scaling(unbiased: bool) -> None:
    x, y = _latent_pair(200, 0)
    x, y = x.double(), y.double()
    q, _ = torch.linalg.qr(_rand(64, 64, 5))
    ref = linear_cka(x, y, unbiased=unbiased)
    assert 0.3 < ref < 0.95  # non-trivial value, so invariance is not vacuous
    assert linear_cka(x @ q, y, unbiased=unbiased) == pytest.approx(ref, abs=1e-10)
    assert linear_cka(x * 37.5, y * 0.01, unbiased=unbiased) == pytest.approx(ref, abs=1e-10)


def test_cka_not_invariant_to_anisotropic_scaling() -> None:
    """CKA is *not* invariant to general invertible linear maps; this shows the invariance test can fail."""
    x = _rand(200, 16, 6)
    scale = torch.ones(16, dtype=torch.float64)
    scale[0] = 20.0
    cka = linear_cka(x, x * scale)
    assert cka < 0.5  # one direction dominates the Gram of the scaled copy


def test_biased_and_unbiased_differ_on_small_n() -> None:
    """Independent random matrices: unbiased CKA ≈ 0, biased CKA strongly inflated when N ≪ D."""
    x, y = _rand(20, 200, 7), _rand(20, 200, 8)
    biased = linear_cka(x, y, unbiased=False)
    unbiased = linear_cka(x, y, unbiased=True)
    assert biased > 0.5
    assert abs(unbiased) < 0.2
    assert biased - unbiased > 0.3


# --- minibatch accumulator --------------------------------------------------------------------

def test_minibatch_single_batch_equals_full_unbiased() -> None:
    x, y = _latent_pair(300, 1)
    acc = MinibatchCKA()
    acc.update([x], [y])
    assert acc.compute()[0, 0] == pytest.approx(linear_cka(x, y), abs=1e-10)


def test_minibatch_close_to_full_batch() -> None:
    """N = 1000 in 10 batches of 100 vs the full-batch unbiased estimate.

    Both estimate the same population CKA (averaged per-batch unbiased HSICs are unbiased), so
    they differ only by sampling noise. Over 20 seeds of this data (CKA ≈ 0.69) the difference had
    sd 0.0022 and max 0.006; a tolerance of 0.02 is ~9 sd, robust yet far below the spread of
    CKA values that matter in a heatmap.
    """
    x, y = _latent_pair(1000, 2)
    acc = MinibatchCKA()
    for i in range(0, 1000, 100):
        acc.update([x[i:i + 100]], [y[i:i + 100]])
    assert acc.n_batches == 10 and acc.n_samples == 1000
    assert acc.compute()[0, 0] == pytest.approx(linear_cka(x, y), abs=0.02)


def test_minibatch_matrix_shape_and_within_model() -> None:
    x, y = _latent_pair(256, 3)
    layers_a = [x, x[:, :32] ** 2, x.reshape(256, 8, 8)]  # mixed shapes are flattened per layer
    layers_b = [y, -y]
    cross, within = MinibatchCKA(), MinibatchCKA()
    for i in range(0, 256, 64):
        cross.update([a[i:i + 64] for a in layers_a], [b[i:i + 64] for b in layers_b])
        within.update([a[i:i + 64] for a in layers_a])
    c = cross.compute()
    assert c.shape == (3, 2)
    assert c[:, 0] == pytest.approx(c[:, 1], abs=1e-12)  # sign flip is orthogonal
    w = within.compute()
    assert w.shape == (3, 3)
    np.testing.assert_allclose(np.diag(w), 1.0, atol=1e-12)
    np.testing.assert_allclose(w, w.T, atol=1e-12)
    assert w[0, 2] == pytest.approx(1.0, abs=1e-12)  # reshape of the same activations


def test_minibatch_state_does_not_grow() -> None:
    acc = MinibatchCKA()
    layers = 4

    def feed(k: int, seed: int) -> None:
        for s in range(k):
            acts = [_rand(8, 10, seed + s + j) for j in range(layers)]
            acc.update(acts, acts[:2])

    feed(10, 0)
    state10 = {k: (tuple(v.shape), v.element_size() * v.nelement()) for k, v in acc.state_dict().items()}
    feed(90, 1000)
    state100 = {k: (tuple(v.shape), v.element_size() * v.nelement()) for k, v in acc.state_dict().items()}
    assert acc.n_batches == 100
    assert state10 == state100
    assert sum(b for _, b in state100.values()) == 8 * (layers * 2 + layers + 2)
    assert all(v.dtype == torch.float64 for v in acc.state_dict().values())


def test_minibatch_errors() -> None:
    acc = MinibatchCKA()
    with pytest.raises(RuntimeError):
        acc.compute()
    with pytest.raises(ValueError):
        acc.update([_rand(3, 5, 0)])  # < 4 samples
    acc.update([_rand(8, 5, 0)], [_rand(8, 5, 1)])
    with pytest.raises(ValueError):
        acc.update([_rand(8, 5, 0)])  # mode change
    with pytest.raises(ValueError):
        acc.update([_rand(8, 5, 0)], [_rand(6, 5, 1)])  # batch size mismatch
    with pytest.raises(ValueError):
        acc.update([_rand(8, 5, 0), _rand(8, 5, 2)], [_rand(8, 5, 1)])  # layer count change


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_minibatch_on_cuda() -> None:
    x, y = _latent_pair(200, 4)
    acc = MinibatchCKA()
    acc.update([x.cuda().float()], [y.cuda().float()])
    assert all(v.is_cuda and v.dtype == torch.float64 for v in acc.state_dict().values())
    assert acc.compute()[0, 0] == pytest.approx(linear_cka(x, y), abs=1e-6)


def test_minibatch_batch_terms_survive_growing_their_storage() -> None:
    """The per-batch terms are kept in preallocated rows (grown when full): all batches come back,
    in order, whatever the initial capacity, and reset forgets them."""
    xs = [(_rand(8, 5, seed=k), _rand(8, 3, seed=100 + k)) for k in range(7)]
    small, large = MinibatchCKA(expected_batches=1), MinibatchCKA(expected_batches=64)
    for x, y in xs:
        small.update([x, x * 2], [y])
        large.update([x, x * 2], [y])
    for name, values in small.batch_terms().items():
        assert values.shape[0] == 7
        np.testing.assert_array_equal(values, large.batch_terms()[name])
    one = MinibatchCKA()
    one.update([xs[3][0], xs[3][0] * 2], [xs[3][1]])
    np.testing.assert_array_equal(small.batch_terms()["ab"][3], one.batch_terms()["ab"][0])
    small.reset()
    assert small.batch_terms() == {} and small.n_batches == 0

"""Representation similarity: linear CKA (docs/evaluations.md §9).

Two estimators live here:

* :func:`linear_cka` - full-batch linear CKA for two activation matrices that fit in memory,
  with either the unbiased HSIC estimator (Song et al. 2012, as used by Nguyen et al. 2021) or
  the classic biased, centred-Gram estimator (Kornblith et al. 2019). The unbiased one is the
  default because the biased estimator is inflated for small N / large D (two independent random
  matrices get a CKA far from 0), which would make layer×layer heatmaps look more similar than
  they are.
* :class:`MinibatchCKA` - the minibatch estimator of Nguyen et al. 2021 used by the workflow:
  unbiased HSIC is computed per minibatch and averaged over minibatches, so a whole validation
  pass is summarised by O(n_layers_a · n_layers_b) scalars and never stores activations.

Everything is computed in float64: Gram entries are sums of up to ~10^5 products and the
unbiased HSIC subtracts terms of similar magnitude, so float32 loses most significant digits.
"""

from __future__ import annotations

import logging
import math
from typing import Sequence, Union

import numpy as np
import torch

__all__ = ["gram_linear", "hsic_unbiased", "hsic_biased", "linear_cka", "MinibatchCKA"]

logger = logging.getLogger(__name__)

ArrayLike = Union[np.ndarray, torch.Tensor]


def _as_2d_float64(x: ArrayLike) -> torch.Tensor:
    """Return ``x`` as a float64 torch tensor of shape (N, -1), on its current device.

    Flattening all non-batch dimensions is what CKA on feature maps / token sequences means:
    every (position, channel) is one feature.
    """
    t = torch.as_tensor(x)
    if t.ndim == 0:
        raise ValueError("activations must have a batch dimension")
    return t.detach().reshape(t.shape[0], -1).to(torch.float64)


def gram_linear(x: ArrayLike) -> torch.Tensor:
    """Linear-kernel Gram matrix K = X Xᵀ (float64) of activations flattened to (N, -1)."""
    x2 = _as_2d_float64(x)
    return x2 @ x2.T


def _zero_diag(k: torch.Tensor) -> torch.Tensor:
    """Copy of ``k`` with its diagonal set to 0 (the unbiased estimator ignores self-similarity)."""
    k = k.clone()
    k.fill_diagonal_(0.0)
    return k


def _check_n_unbiased(n: int) -> None:
    """The unbiased estimator divides by n(n-3) and (n-1)(n-2): it needs at least 4 samples."""
    if n < 4:
        raise ValueError(f"unbiased HSIC needs at least 4 samples, got {n}")


def hsic_unbiased(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    """Unbiased HSIC estimator (Song et al. 2012, eq. 5) of two n×n Gram matrices.

    With K̃, L̃ the Grams with zeroed diagonals::

        HSIC_u = [tr(K̃L̃) + 1ᵀK̃1·1ᵀL̃1 / ((n-1)(n-2)) - 2/(n-2) · 1ᵀK̃L̃1] / (n(n-3))

    Diagonals of the inputs are ignored. Returns a 0-d float64 tensor; it can be slightly
    negative (it is unbiased, not non-negative).
    """
    if k.shape != l.shape or k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"need two square Gram matrices of equal size, got {tuple(k.shape)}, {tuple(l.shape)}")
    n = k.shape[0]
    _check_n_unbiased(n)
    kt = _zero_diag(k.to(torch.float64))
    lt = _zero_diag(l.to(torch.float64))
    # tr(K̃L̃) = Σ_ij K̃_ij L̃_ji = Σ_ij K̃_ij L̃_ij for symmetric matrices; 1ᵀK̃L̃1 = (K̃1)·(L̃1).
    trace_term = (kt * lt.T).sum()
    sum_k, sum_l = kt.sum(), lt.sum()
    cross = (kt.sum(dim=1) * lt.sum(dim=0)).sum()
    return (trace_term + sum_k * sum_l / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * cross) / (n * (n - 3))


def hsic_biased(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    """Biased HSIC estimator tr(K H L H) / (n-1)² (Gretton et al. 2005), H the centring matrix."""
    if k.shape != l.shape or k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"need two square Gram matrices of equal size, got {tuple(k.shape)}, {tuple(l.shape)}")
    n = k.shape[0]
    if n < 2:
        raise ValueError(f"HSIC needs at least 2 samples, got {n}")
    kc = _center_gram(k.to(torch.float64))
    lc = _center_gram(l.to(torch.float64))
    # tr(HKH · HLH) = tr(KHLH) since H is idempotent.
    return (kc * lc.T).sum() / ((n - 1) ** 2)


def _center_gram(k: torch.Tensor) -> torch.Tensor:
    """H K H without materialising H: subtract row and column means, add back the grand mean."""
    return k - k.mean(dim=0, keepdim=True) - k.mean(dim=1, keepdim=True) + k.mean()


def _cka_from_hsic(hsic_xy: float, hsic_xx: float, hsic_yy: float) -> float:
    """CKA = HSIC(K,L)/√(HSIC(K,K)·HSIC(L,L)); NaN (with a warning) if the denominator is ≤ 0.

    A non-positive self-HSIC happens only for degenerate inputs (constant activations) or, for
    the unbiased estimator, tiny N; returning NaN keeps a heatmap honest instead of raising.
    """
    denom = hsic_xx * hsic_yy
    if not denom > 0.0:
        logger.warning("CKA undefined: self-HSIC product %.3g <= 0 (constant activations or too few samples)", denom)
        return float("nan")
    return float(hsic_xy / math.sqrt(denom))


def linear_cka(x: ArrayLike, y: ArrayLike, unbiased: bool = True) -> float:
    """Linear CKA between activations ``x`` (N, D1) and ``y`` (N, D2) (extra dims are flattened).

    ``unbiased=True`` (default, docs/evaluations.md §9) uses :func:`hsic_unbiased`; ``unbiased=False`` the classic
    biased centred-Gram estimator, kept for comparison with older papers.
    """
    kx = gram_linear(x)
    ly = gram_linear(y)
    if kx.shape[0] != ly.shape[0]:
        raise ValueError(f"x and y need the same number of samples, got {kx.shape[0]} and {ly.shape[0]}")
    ly = ly.to(kx.device)
    hsic = hsic_unbiased if unbiased else hsic_biased
    return _cka_from_hsic(float(hsic(kx, ly)), float(hsic(kx, kx)), float(hsic(ly, ly)))


class MinibatchCKA:
    """Running (n_layers_a × n_layers_b) linear-CKA matrix, minibatch estimator of Nguyen et al. 2021.

    For every minibatch each layer's activations are flattened to (B, -1), their Gram matrix is
    formed and the unbiased HSIC of every (a, b) pair and of every layer with itself is added to
    running sums. :meth:`compute` returns ``mean HSIC_ab / sqrt(mean HSIC_aa · mean HSIC_bb)``.
    Averaging per-batch unbiased HSICs gives an unbiased estimate of the population HSIC, so the
    result does not depend on the batch size except through its variance; the biased estimator
    would be biased differently for every batch size, which is why it is not offered here.

    The state is only the sums (n_a·n_b + n_a + n_b float64 scalars) and a batch counter, so
    memory is constant in the number of images; the sums live on the activations' device (CUDA
    works) so no per-batch host sync is needed. Each minibatch is weighted equally (as in the
    reference method); batches need at least 4 samples, so use ``drop_last`` or a divisible
    number of images rather than letting a tiny final batch through.

    Example::

        acc = MinibatchCKA()
        for images in loader:
            acts_a = run_hooks(model_a, images)   # list of (B, ...) tensors, one per layer
            acts_b = run_hooks(model_b, images)
            acc.update(acts_a, acts_b)            # or acc.update(acts_a) for within-model
        cka = acc.compute()                       # np.ndarray (len(acts_a), len(acts_b))
    """

    def __init__(self, expected_batches: int = 16) -> None:
        self._hsic_ab: torch.Tensor | None = None  # (n_a, n_b) running sum
        self._hsic_aa: torch.Tensor | None = None  # (n_a,) running sum
        self._hsic_bb: torch.Tensor | None = None  # (n_b,) running sum
        self._within: bool | None = None
        self.n_batches: int = 0
        self.n_samples: int = 0
        # Per-batch HSIC terms (host float64; n_a·n_b + n_a + n_b numbers a batch), for the
        # bootstrap over minibatches (docs/evaluations.md §11); not part of the running state.
        # Kept in arrays of ``expected_batches`` rows (doubled when full), not one small array per
        # batch: thousands of small long-lived allocations between each batch's large temporary
        # Grams fragment glibc's heap, and a pairs job's resident memory then grew with the batches.
        self._capacity = max(1, int(expected_batches))
        self._per_batch: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def reset(self) -> None:
        """Forget all accumulated batches."""
        self.__init__(self._capacity)

    @staticmethod
    def _gram_stats(acts: Sequence[ArrayLike], device: torch.device | None,
                    are_grams: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """Per-layer zero-diagonal Grams stacked (L, B, B), their row sums (L, B) and totals (L,).

        These three quantities are all the unbiased HSIC needs, and they make every pair's HSIC
        a pair of matrix products instead of a Python double loop.
        """
        if len(acts) == 0:
            raise ValueError("need at least one layer of activations")
        grams = []
        n = None
        for a in acts:
            t = torch.as_tensor(a)
            if device is not None:
                t = t.to(device)
            if are_grams and (t.ndim != 2 or t.shape[0] != t.shape[1]):
                raise ValueError(f"grams=True needs square (B, B) Gram matrices, got {tuple(t.shape)}")
            g = _zero_diag(t.to(torch.float64) if are_grams else gram_linear(t))
            if n is None:
                n = g.shape[0]
            elif g.shape[0] != n:
                raise ValueError(f"all layers must share the batch size, got {n} and {g.shape[0]}")
            grams.append(g)
        assert n is not None
        _check_n_unbiased(n)
        k = torch.stack(grams)  # (L, B, B)
        row = k.sum(dim=2)  # (L, B) = K̃1
        tot = row.sum(dim=1)  # (L,) = 1ᵀK̃1
        return k, row, tot, n

    @staticmethod
    def _pairwise_hsic(
        ka: torch.Tensor, ra: torch.Tensor, sa: torch.Tensor,
        kb: torch.Tensor, rb: torch.Tensor, sb: torch.Tensor, n: int,
    ) -> torch.Tensor:
        """Unbiased HSIC for all (a, b) layer pairs at once, shape (L_a, L_b)."""
        trace = ka.flatten(1) @ kb.flatten(1).T  # tr(K̃L̃) for symmetric Grams
        cross = ra @ rb.T  # 1ᵀK̃L̃1
        return (trace + torch.outer(sa, sb) / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * cross) / (n * (n - 3))

    @staticmethod
    def _self_hsic(k: torch.Tensor, r: torch.Tensor, s: torch.Tensor, n: int) -> torch.Tensor:
        """Unbiased HSIC of each layer with itself, shape (L,) (the diagonal of the pairwise form)."""
        trace = (k * k).flatten(1).sum(dim=1)
        cross = (r * r).sum(dim=1)
        return (trace + s * s / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * cross) / (n * (n - 3))

    @torch.no_grad()
    def update(self, acts_a: Sequence[ArrayLike], acts_b: Sequence[ArrayLike] | None = None,
               *, grams: bool = False) -> None:
        """Add one minibatch: ``acts_a[i]`` is layer i of model a, shape (B, ...); ``acts_b`` likewise.

        ``acts_b=None`` accumulates the within-model matrix (a vs itself). Layer counts must stay
        the same across calls, and within/cross mode cannot change mid-way. ``grams=True``: the
        inputs are already the (B, B) Gram matrices X Xᵀ of the flattened activations (e.g. formed
        in a forward hook, so that no layer's activations outlive its forward call).
        """
        within = acts_b is None
        if self._within is not None and within != self._within:
            raise ValueError("cannot mix within-model (acts_b=None) and cross-model updates")
        device = self._hsic_aa.device if self._hsic_aa is not None else torch.as_tensor(acts_a[0]).device
        ka, ra, sa, n = self._gram_stats(acts_a, device, grams)
        haa = self._self_hsic(ka, ra, sa, n)
        if within:
            hab = self._pairwise_hsic(ka, ra, sa, ka, ra, sa, n)
            hbb = haa
        else:
            kb, rb, sb, nb = self._gram_stats(acts_b, device, grams)  # type: ignore[arg-type]
            if nb != n:
                raise ValueError(f"acts_a and acts_b need the same batch size, got {n} and {nb}")
            hab = self._pairwise_hsic(ka, ra, sa, kb, rb, sb, n)
            hbb = self._self_hsic(kb, rb, sb, n)
        if self._hsic_ab is None:
            self._hsic_ab = torch.zeros_like(hab)
            self._hsic_aa = torch.zeros_like(haa)
            self._hsic_bb = torch.zeros_like(hbb)
            self._within = within
        elif hab.shape != self._hsic_ab.shape:
            raise ValueError(f"layer counts changed: expected {tuple(self._hsic_ab.shape)}, got {tuple(hab.shape)}")
        self._hsic_ab += hab
        self._hsic_aa += haa
        self._hsic_bb += hbb
        terms = (hab.cpu().numpy(), haa.cpu().numpy(), hbb.cpu().numpy())
        if self._per_batch is None or self.n_batches == len(self._per_batch[0]):
            grown = tuple(np.empty((max(self._capacity, 2 * self.n_batches), *t.shape)) for t in terms)
            if self._per_batch is not None:
                for new, old in zip(grown, self._per_batch):
                    new[: self.n_batches] = old
            self._per_batch = grown  # type: ignore[assignment]
        for store, t in zip(self._per_batch, terms):  # type: ignore[arg-type]
            store[self.n_batches] = t
        self.n_batches += 1
        self.n_samples += n

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The accumulated sums (all the state there is), e.g. to checkpoint or to check its size."""
        if self._hsic_ab is None:
            return {}
        return {"hsic_ab": self._hsic_ab, "hsic_aa": self._hsic_aa, "hsic_bb": self._hsic_bb}  # type: ignore[dict-item]

    def batch_terms(self) -> dict[str, np.ndarray]:
        """Each batch's unbiased HSICs: ``ab`` (n_batches, n_a, n_b), ``aa`` (n_batches, n_a), ``bb``
        (n_batches, n_b); :func:`cka_from_batch_terms` of them is :meth:`compute`."""
        if self._per_batch is None or not self.n_batches:
            return {}
        return {name: store[: self.n_batches].copy() for name, store in zip(("ab", "aa", "bb"), self._per_batch)}

    def compute(self) -> np.ndarray:
        """The CKA matrix (n_layers_a, n_layers_b) as float64 numpy; NaN where a self-HSIC is ≤ 0."""
        if self._hsic_ab is None or self.n_batches == 0:
            raise RuntimeError("MinibatchCKA.compute() called before any update()")
        # Means over batches; the 1/n_batches factors cancel in the ratio but keep the definition literal.
        hab = (self._hsic_ab / self.n_batches).cpu().numpy()
        haa = (self._hsic_aa / self.n_batches).cpu().numpy()  # type: ignore[operator]
        hbb = (self._hsic_bb / self.n_batches).cpu().numpy()  # type: ignore[operator]
        denom = np.outer(haa, hbb)
        out = np.full_like(hab, np.nan)
        ok = denom > 0
        if not ok.all():
            logger.warning("CKA undefined for %d layer pair(s): non-positive self-HSIC", int((~ok).sum()))
        out[ok] = hab[ok] / np.sqrt(denom[ok])
        return out


def cka_from_batch_terms(ab: np.ndarray, aa: np.ndarray, bb: np.ndarray) -> np.ndarray:
    """The minibatch CKA matrix from per-batch HSIC terms (first axis: batches), as
    :meth:`MinibatchCKA.compute` forms it: mean HSIC_ab / sqrt(mean HSIC_aa · mean HSIC_bb); NaN
    where a self-HSIC mean is <= 0. The bootstrap over minibatches resamples the first axis."""
    hab, haa, hbb = ab.mean(axis=0), aa.mean(axis=0), bb.mean(axis=0)
    denom = np.outer(haa, hbb)
    out = np.full_like(hab, np.nan)
    ok = denom > 0
    out[ok] = hab[ok] / np.sqrt(denom[ok])
    return out

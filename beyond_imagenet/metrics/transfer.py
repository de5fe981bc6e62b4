"""VTAB linear probes following CLIP_benchmark's protocol (docs/evaluations.md §7).

Protocol: L2-normalised features; one linear layer with bias; AdamW (lr 0.1, betas (0.9, 0.999),
eps 1e-8, decoupled weight decay on weight *and* bias, as CLIP_benchmark passes
``model.parameters()``); 10 epochs; batch 64 with the last partial batch kept (DataLoader default);
cosine learning rate ``0.5 * (1 + cos(pi * t / T)) * lr`` for steps ``t = 0 .. T-1`` with no
warm-up; mean cross-entropy; seed 0. The weight decay is chosen on ``val200`` from
``logspace(-6, 2, 97)``, the probe is retrained on ``train800val200`` with it and ``test`` top-1 is
reported.

Why a batched sweep: the 97 fits differ only in their weight decay, see the same minibatches and
start from the same initialisation, so they are trained together as one model with a ``(W, D, C)``
weight and a ``(W, C)`` bias (stored internally as W stacked ``nn.Linear`` weights, ``(W*C, D)``).
One GEMM per minibatch produces all ``W`` logit sets, the gradient of each member's *own* mean
cross-entropy, ``(softmax - onehot) / B``, is written out by hand (no cross-member terms, no
per-step allocation of the 30 MB gradient) and one GEMM gives all weight gradients. The Adam
moments are elementwise and therefore already per-member; only the decoupled decay differs, and it
is applied by hand (``p *= 1 - lr_t * wd_w``) before a fused ``torch.optim.AdamW(weight_decay=0)``
step, which is the order torch's AdamW uses internally. ``fit_linear_probe`` is the one-at-a-time
reference with ``nn.Linear``, autograd and ``torch.optim.AdamW``; tests check that both agree.

Deviations from CLIP_benchmark, on purpose:

* CLIP_benchmark searches the weight-decay grid coarse-to-fine (7 points, then bisection around
  the peak). docs/evaluations.md §7 asks for the grid, and the batched sweep makes the full 97-point grid cheap,
  so every value is evaluated; the result is the grid's argmax rather than a local peak.
* Ties in validation accuracy go to the *smaller* weight decay, as in CLIP_benchmark (its search
  replaces the best only on a strict improvement, scanning the grid upwards). Ties are common on
  200 validation images, and the top of a tied run sits next to the unstable region below
  (``lr * wd > 2``), where a fit that happened to stay finite on train800 can blow up on the
  larger train800val200.
* A final refit on train800val200 whose parameters are not finite is not scored as 0: the next
  weight decay in validation order (accuracy down, then weight decay up) is refit instead, and
  the result records every weight decay that was passed over.
* Initialisation is ``nn.Linear``'s default (``U(-1/sqrt(D), 1/sqrt(D))`` for weight and bias)
  drawn from a seeded ``torch.Generator`` -- bit-identical to ``torch.manual_seed(seed);
  nn.Linear(D, C)``, which is what CLIP_benchmark does (not zero init). All members share it,
  just as each of CLIP_benchmark's fits re-seeds before building its layer.
  The shuffle order comes from the same generator, one permutation per epoch, shared by members.
* With lr 0.1 the decay factor ``1 - lr_t * wd`` drops below -1 while ``lr_t * wd > 2``, so for
  wd > 20 the weights grow geometrically early on, and for wd of roughly 50-100 and above they
  overflow float32 (exactly as they would in CLIP_benchmark). Members whose parameters are not
  finite predict ``-1`` (never correct) instead of an arbitrary argmax over NaNs.

Accuracies are fractions in [0, 1].
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

Split = tuple[np.ndarray, np.ndarray]

#: Rows x members x classes of logits materialised at once in prediction; bounds memory.
_PREDICT_ELEMENTS = 1 << 25


def _default_weight_decays() -> tuple[float, ...]:
    return tuple(float(w) for w in np.logspace(-6, 2, 97))


@dataclass
class ProbeConfig:
    """Hyper-parameters of the CLIP_benchmark linear probe (defaults: docs/evaluations.md §7)."""

    lr: float = 0.1
    epochs: int = 10
    batch_size: int = 64
    weight_decays: Sequence[float] = field(default_factory=_default_weight_decays)
    seed: int = 0
    #: L2-normalise features inside fit/predict. Idempotent, so pre-normalised input is fine.
    normalize: bool = True


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation in float32 (float16 caches are upcast; zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, np.finfo(np.float32).tiny)


def _prepare(features: np.ndarray, normalize: bool) -> np.ndarray:
    features = np.asarray(features)
    if features.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {features.shape}")
    return l2_normalize(features) if normalize else np.asarray(features, dtype=np.float32)


def _check_labels(labels: np.ndarray, n: int, n_classes: int) -> np.ndarray:
    labels = np.asarray(labels).astype(np.int64, copy=False).reshape(-1)
    if labels.shape[0] != n:
        raise ValueError(f"{labels.shape[0]} labels for {n} feature rows")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes}), got [{labels.min()}, {labels.max()}]")
    return labels


def _init_params(gen: torch.Generator, dim: int, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``nn.Linear(dim, n_classes)`` default init from ``gen``: weight (C, D) then bias (C,)."""
    bound = 1.0 / math.sqrt(dim) if dim > 0 else 0.0
    weight = torch.empty(n_classes, dim).uniform_(-bound, bound, generator=gen)
    bias = torch.empty(n_classes).uniform_(-bound, bound, generator=gen)
    return weight, bias


def _schedule(n: int, config: ProbeConfig) -> list[tuple[int, float]]:
    """(epoch, lr_t) for every step: cosine over all steps, no warm-up (CLIP_benchmark cosine_lr)."""
    steps_per_epoch = math.ceil(n / config.batch_size)
    total = config.epochs * steps_per_epoch
    return [
        (t // steps_per_epoch, 0.5 * (1.0 + math.cos(math.pi * t / total)) * config.lr)
        for t in range(total)
    ]


def _batches(n: int, config: ProbeConfig, gen: torch.Generator):
    """Yield (lr_t, index tensor) per step; one seeded permutation per epoch, shared by members."""
    steps_per_epoch = math.ceil(n / config.batch_size)
    schedule = _schedule(n, config)
    for epoch in range(config.epochs):
        order = torch.randperm(n, generator=gen)
        for i in range(steps_per_epoch):
            _, lr_t = schedule[epoch * steps_per_epoch + i]
            yield lr_t, order[i * config.batch_size : (i + 1) * config.batch_size]


@dataclass
class ProbeSet:
    """``W`` linear probes trained jointly, one per weight decay.

    ``weight`` is ``(W, D, C)`` and ``bias`` ``(W, C)``, on the device they were trained on.
    """

    weight: torch.Tensor
    bias: torch.Tensor
    weight_decays: np.ndarray
    n_classes: int
    normalize: bool = True

    @functools.cached_property
    def diverged(self) -> np.ndarray:
        """(W,) bool: members whose parameters are not all finite."""
        finite = torch.isfinite(self.weight).flatten(1).all(1) & torch.isfinite(self.bias).all(1)
        return (~finite).cpu().numpy()

    @torch.no_grad()
    def predict(self, features: np.ndarray) -> np.ndarray:
        """(W, N) int64 class predictions; diverged members predict -1 (never correct)."""
        x_all = _prepare(features, self.normalize)
        n_members = self.weight.shape[0]
        out = np.empty((n_members, x_all.shape[0]), dtype=np.int64)
        chunk = max(1, _PREDICT_ELEMENTS // max(1, n_members * self.n_classes))
        for start in range(0, x_all.shape[0], chunk):
            x = torch.from_numpy(x_all[start : start + chunk]).to(self.weight.device)
            logits = torch.einsum("nd,wdc->wnc", x, self.weight) + self.bias[:, None, :]
            out[:, start : start + chunk] = logits.argmax(-1).cpu().numpy()
        out[self.diverged] = -1
        return out

    def accuracy(self, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """(W,) top-1 accuracy of every member."""
        return self.correct(features, labels) / max(1, len(labels))

    def correct(self, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """(W,) number of correct predictions; integer counts make ties exact."""
        labels = _check_labels(labels, len(features), self.n_classes)
        return (self.predict(features) == labels[None, :]).sum(1)

    def member(self, index: int) -> Probe:
        """Member ``index`` as a standalone :class:`Probe` (weight (D, C), bias (C,))."""
        return Probe(
            weight=self.weight[index].detach().clone(),
            bias=self.bias[index].detach().clone(),
            weight_decay=float(self.weight_decays[index]),
            n_classes=self.n_classes,
            normalize=self.normalize,
        )


@dataclass
class Probe:
    """A single linear probe: ``weight`` (D, C), ``bias`` (C,)."""

    weight: torch.Tensor
    bias: torch.Tensor
    weight_decay: float
    n_classes: int
    normalize: bool = True

    def as_set(self) -> ProbeSet:
        return ProbeSet(
            self.weight[None], self.bias[None], np.array([self.weight_decay]), self.n_classes,
            self.normalize,
        )

    def predict(self, features: np.ndarray) -> np.ndarray:
        """(N,) int64 predictions (-1 if the fit diverged)."""
        return self.as_set().predict(features)[0]

    def accuracy(self, features: np.ndarray, labels: np.ndarray) -> float:
        return float(self.as_set().accuracy(features, labels)[0])


def _adamw(params: list[torch.Tensor], lr: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW without its own decay (applied per member by the caller).

    The fused kernel is ~15x faster than the default on CPU for a 7M-parameter sweep and exists
    for CPU and CUDA; elsewhere fall back to the default implementation.
    """
    fused = device.type in ("cpu", "cuda")
    return torch.optim.AdamW(params, lr=lr, weight_decay=0.0, fused=fused or None)


def _training_arrays(features, labels, n_classes: int, config) -> tuple[np.ndarray, np.ndarray]:
    """Features (normalised as configured) and checked labels; refuses an empty training set."""
    x_np = _prepare(features, config.normalize)
    y_np = _check_labels(labels, x_np.shape[0], n_classes)
    if x_np.shape[0] == 0:
        raise ValueError("cannot fit a probe on zero samples")
    return x_np, y_np


def fit_linear_probes(
    features: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    weight_decays: Sequence[float],
    config: ProbeConfig,
    device: str | torch.device = "cpu",
) -> ProbeSet:
    """Train one probe per weight decay, all at once as a single batched model.

    Every member sees the same initialisation and minibatch order, so member ``w`` equals a
    separate fit at ``weight_decays[w]`` (see module docstring); the batch just turns 97 sets of
    tiny matmuls into one large one per step.
    """
    device = torch.device(device)
    x_np, y_np = _training_arrays(features, labels, n_classes, config)
    n, dim = x_np.shape
    wds = np.asarray(list(weight_decays), dtype=np.float64).reshape(-1)
    n_members = wds.shape[0]

    gen = torch.Generator().manual_seed(config.seed)
    w0, b0 = _init_params(gen, dim, n_classes)
    # Stored as (W*C, D), i.e. W stacked nn.Linear weights: the forward is one (B, D) x (D, W*C)
    # GEMM and the weight gradient one (W*C, B) x (B, D) GEMM, instead of a bmm that broadcasts x
    # over W. The (W, D, C) tensor of the API is produced once at the end.
    weight = w0.repeat(n_members, 1).to(device)
    bias = b0.repeat(n_members).to(device)
    weight.grad = torch.zeros_like(weight)
    bias.grad = torch.zeros_like(bias)
    decay = torch.tensor(wds, dtype=torch.float32, device=device)

    x = torch.from_numpy(x_np).to(device)
    y = torch.from_numpy(y_np).to(device)
    optimizer = _adamw([weight, bias], config.lr, device)

    with torch.no_grad():
        for lr_t, idx in _batches(n, config, gen):
            idx = idx.to(device)
            xb, yb = x[idx], y[idx]
            batch = xb.shape[0]
            # Gradient of each member's mean cross-entropy, written out by hand ((softmax - onehot)
            # / B) so it lands in preallocated buffers: autograd's per-step allocation of the
            # 30 MB gradient cost more than the GEMM itself on CPU. Members never mix, because
            # every column of the GEMM output depends on one member's weights only.
            logits = torch.addmm(bias, xb, weight.t()).view(batch, n_members, n_classes)
            dlogits = torch.softmax(logits, dim=-1)
            dlogits[torch.arange(batch, device=device), :, yb] -= 1.0
            dlogits = dlogits.view(batch, n_members * n_classes).div_(batch)
            torch.mm(dlogits.t(), xb, out=weight.grad)
            torch.sum(dlogits, dim=0, out=bias.grad)
            # Decoupled weight decay per member, before the Adam step as in torch's AdamW.
            factor = 1.0 - lr_t * decay
            weight.view(n_members, n_classes, dim).mul_(factor[:, None, None])
            bias.view(n_members, n_classes).mul_(factor[:, None])
            for group in optimizer.param_groups:
                group["lr"] = lr_t
            optimizer.step()

    weight = weight.view(n_members, n_classes, dim).transpose(1, 2).contiguous()
    bias = bias.view(n_members, n_classes)
    probes = ProbeSet(weight, bias, wds, n_classes, config.normalize)
    if probes.diverged.any():
        logger.info(
            "%d of %d weight decays diverged (largest finite wd %.3g)",
            int(probes.diverged.sum()), n_members,
            float(wds[~probes.diverged].max()) if (~probes.diverged).any() else float("nan"),
        )
    return probes


def fit_linear_probe(
    features: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    weight_decay: float,
    config: ProbeConfig,
    device: str | torch.device = "cpu",
) -> Probe:
    """One probe the CLIP_benchmark way: ``nn.Linear`` + ``torch.optim.AdamW``.

    Kept as the reference the batched sweep is tested against and as the baseline of
    ``benchmarks/probe_sweep.py``; it shares the initialisation and shuffle of the batched path.
    """
    device = torch.device(device)
    x_np, y_np = _training_arrays(features, labels, n_classes, config)
    n, dim = x_np.shape

    gen = torch.Generator().manual_seed(config.seed)
    w0, b0 = _init_params(gen, dim, n_classes)
    model = torch.nn.Linear(dim, n_classes)
    with torch.no_grad():
        model.weight.copy_(w0)
        model.bias.copy_(b0)
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=weight_decay)

    x = torch.from_numpy(x_np).to(device)
    y = torch.from_numpy(y_np).to(device)
    for lr_t, idx in _batches(n, config, gen):
        idx = idx.to(device)
        for group in optimizer.param_groups:
            group["lr"] = lr_t
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        optimizer.step()

    return Probe(
        model.weight.detach().t().contiguous(), model.bias.detach().clone(),
        float(weight_decay), n_classes, config.normalize,
    )


def weight_decay_order(val_correct: np.ndarray, weight_decays: Sequence[float]) -> np.ndarray:
    """Grid indices from best to worst: validation count down, then weight decay up."""
    wds = np.asarray(list(weight_decays), dtype=np.float64)
    return np.lexsort((wds, -np.asarray(val_correct)))


def select_weight_decay(val_correct: np.ndarray, weight_decays: Sequence[float]) -> int:
    """Index of the best validation count; ties go to the smaller weight decay."""
    return int(weight_decay_order(val_correct, weight_decays)[0])


def select_and_evaluate(
    train: Split,
    val: Split,
    trainval: Split,
    test: Split,
    n_classes: int,
    config: ProbeConfig,
    device: str | torch.device = "cpu",
) -> dict:
    """Full §7 protocol for one task: sweep on train→val, refit on trainval, score test.

    ``test`` is touched only after the weight decay is fixed, so it cannot influence the choice.
    Returns ``test_top1``, ``test_correct`` (0/1 per test image), ``val_top1_best``, ``weight_decay``, ``val_top1_per_wd`` (fractions) and
    ``refit_diverged`` (weight decays whose refit on trainval was not finite, in the order tried).
    """
    wds = list(config.weight_decays)
    sweep = fit_linear_probes(train[0], train[1], n_classes, wds, config, device)
    val_correct = sweep.correct(val[0], val[1])
    val_acc = val_correct / max(1, len(val[1]))
    passed_over: list[float] = []
    final = None
    for best in weight_decay_order(val_correct, wds):
        if sweep.diverged[best]:
            continue
        weight_decay = float(wds[best])
        logger.info("chose weight decay %.3g (val top-1 %.4f)", weight_decay, val_acc[best])
        final = fit_linear_probes(trainval[0], trainval[1], n_classes, [weight_decay], config, device)
        if not final.diverged[0]:
            break
        logger.warning("the refit on train800val200 at weight decay %.3g diverged; trying the next one",
                       weight_decay)
        passed_over.append(weight_decay)
        final = None
    if final is None:
        raise RuntimeError(f"every weight decay of the grid diverged ({len(wds)} tried); "
                           "the features may contain non-finite values")
    test_top1 = float(final.accuracy(test[0], test[1])[0])
    return {
        "test_top1": test_top1,
        # per test image, 1 if the probe is right (the bootstrap of docs/evaluations.md §11 resamples it)
        "test_correct": (final.predict(test[0])[0] == np.asarray(test[1])).astype(int).tolist(),
        "val_top1_best": float(val_acc[best]),
        "weight_decay": weight_decay,
        "val_top1_per_wd": [float(a) for a in val_acc],
        "refit_diverged": passed_over,
    }

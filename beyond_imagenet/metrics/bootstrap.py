"""Bootstrap intervals and paired tests over images (docs/evaluations.md §11). Pure numpy / scipy.

* :func:`resample_indices`: seeded resamples of ``n`` images (with replacement), optionally
  stratified (each stratum keeps its size: e.g. an ImageNet-C condition, a PUG subset);
* :func:`unit_seed`: the seed of one set of images, from the study seed and its name, so that two
  models scored on the same images get *identical* resamples (the pairing of :func:`paired_difference`);
* :func:`percentile_interval`: the percentile interval at a level (NaN replicates left out);
* :func:`paired_difference`: difference of a statistic of two models on the same resamples;
* :func:`mcnemar_exact`: McNemar's exact test on two per-image correct vectors.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Sequence

import numpy as np

__all__ = ["unit_seed", "resample_indices", "percentile_interval", "paired_difference", "mcnemar_exact"]


def unit_seed(seed: int, name: str) -> np.random.SeedSequence:
    """The seed of the resamples of one named set of images (e.g. ``imagenet_val``): stable across
    runs and processes (crc32, not Python's salted ``hash``)."""
    return np.random.SeedSequence([int(seed), zlib.crc32(name.encode("utf-8"))])


def resample_indices(n: int, resamples: int, seed: int | np.random.SeedSequence,
                     strata: Sequence | np.ndarray | None = None) -> Iterator[np.ndarray]:
    """``resamples`` index arrays of length ``n``, each drawn uniformly with replacement.

    With ``strata`` (one label per image) every stratum is resampled within itself, so each
    resample has as many images of each stratum as the data. The same ``(n, resamples, seed,
    strata)`` always gives the same arrays (one ``numpy.random.Generator`` per call), one at a time
    (a (resamples, n) matrix for 1,000 x 750,000 ImageNet-C images would not fit in memory).
    """
    if n < 0 or resamples < 0:
        raise ValueError("n and resamples must be >= 0")
    rng = np.random.default_rng(seed)
    if strata is None:
        for _ in range(resamples):
            yield rng.integers(0, n, size=n) if n else np.zeros(0, dtype=np.int64)
        return
    strata = np.asarray(strata)
    if strata.shape != (n,):
        raise ValueError(f"need one stratum per image; got {strata.shape} for {n} images")
    _, codes = np.unique(strata, return_inverse=True)
    members = [np.flatnonzero(codes == k) for k in range(codes.max() + 1)] if n else []
    for _ in range(resamples):
        out = np.empty(n, dtype=np.int64)
        for group in members:
            out[group] = group[rng.integers(0, len(group), size=len(group))]
        yield out


def percentile_interval(replicates: Sequence[float] | np.ndarray, level: float = 0.95,
                        axis: int = 0) -> tuple[np.ndarray | float, np.ndarray | float]:
    """The percentile bootstrap interval: the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles
    of the replicates (linear interpolation), NaN replicates left out; NaN where all are NaN."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    values = np.asarray(replicates, dtype=np.float64)
    if values.size == 0:
        return np.nan, np.nan
    with np.errstate(invalid="ignore"), _quiet_all_nan():
        low, high = np.nanquantile(values, [(1 - level) / 2, (1 + level) / 2], axis=axis)
    if np.ndim(low) == 0:
        return float(low), float(high)
    return low, high


def paired_difference(statistic: Callable[[np.ndarray], float], a: np.ndarray, b: np.ndarray,
                      resamples: int, seed: int | np.random.SeedSequence, level: float = 0.95,
                      strata=None) -> tuple[float, float, float]:
    """``statistic(a) - statistic(b)`` for two models' per-image values on the same images (row i
    of ``a`` and ``b`` is the same image), and its percentile interval from *identical* resamples of
    both. A model against itself gives 0 with a zero-width interval."""
    a, b = np.asarray(a), np.asarray(b)
    if len(a) != len(b):
        raise ValueError(f"paired data need the same images; got {len(a)} and {len(b)}")
    point = float(statistic(a) - statistic(b))
    replicates = [statistic(a[idx]) - statistic(b[idx]) for idx in resample_indices(len(a), resamples, seed, strata)]
    low, high = percentile_interval(replicates, level)
    return point, low, high


def mcnemar_exact(correct_a: Sequence[bool] | np.ndarray, correct_b: Sequence[bool] | np.ndarray) -> float:
    """McNemar's exact test (two-sided) that two classifiers are equally accurate on the same images.

    Only the discordant images count: ``n01`` = a right and b wrong, ``n10`` = a wrong and b right;
    under the null each discordant image is a fair coin, so the p-value is the two-sided binomial
    test of ``n01`` successes in ``n01 + n10`` trials at p = 0.5 (1.0 without discordant images).
    """
    from scipy.stats import binomtest

    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"need two 1-D correct vectors over the same images; got {a.shape} and {b.shape}")
    n01 = int(np.sum(a & ~b))
    n10 = int(np.sum(~a & b))
    if n01 + n10 == 0:
        return 1.0
    return float(binomtest(n01, n01 + n10, 0.5, alternative="two-sided").pvalue)


class _quiet_all_nan:
    """Silence numpy's "All-NaN slice" warning (an all-NaN row is a documented NaN interval)."""

    def __enter__(self):
        import warnings

        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._catch.__exit__(*exc)

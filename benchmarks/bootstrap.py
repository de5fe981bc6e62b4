"""Time of the bootstrap of one table per evaluation on a synthetic 50,000-image output.

    PYTHONPATH=. python benchmarks/bootstrap.py [--images 50000] [--resamples 1000]

Per evaluation: the reduction of the output to per-image data is done once (not timed: it is the
table's own pass); timed is what the bootstrap adds for one (model, dataset) output: every row
recomputed on ``resamples`` resamples (uncertainty.model_replicates).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from beyond_imagenet.evaluations import Sample
from beyond_imagenet.uncertainty import model_replicates


def synthetic(n: int, rng) -> dict[str, Sample]:
    from beyond_imagenet.evaluations.calibration import calibration_rows
    from beyond_imagenet.evaluations.imagenet_x import factor_rows
    from beyond_imagenet.evaluations.pug import subset_rows
    from beyond_imagenet.evaluations.robustness import imagenet_c_rows
    from beyond_imagenet.evaluations.shape_bias import bias_rows
    from beyond_imagenet.metrics.pug import PUG_SUBSETS
    from beyond_imagenet.metrics.robustness import IMAGENET_C_CORRUPTIONS
    from beyond_imagenet.metrics.shape_bias import CATEGORIES

    ids = np.asarray([f"img{k}" for k in range(n)], dtype=object)
    correct = rng.random(n) < 0.75
    # ImageNet-X: one top factor per image (the real file has a few images with none or several)
    patterns, pattern = np.eye(16), rng.integers(0, 16, n)
    conditions = [(c, s) for c in IMAGENET_C_CORRUPTIONS for s in range(1, 6)]
    code = rng.integers(0, len(conditions), n)
    subset = rng.integers(0, len(PUG_SUBSETS), n)
    category = rng.integers(0, len(CATEGORIES), n)
    conflict = rng.random(n) < 0.9
    hit = rng.random(n)

    def c_rows(d):
        sums = np.bincount(d["condition"], weights=d["correct"], minlength=len(conditions))
        counts = np.bincount(d["condition"], minlength=len(conditions))
        return imagenet_c_rows({cond: sums[k] / counts[k] for k, cond in enumerate(conditions)})

    return {
        "accuracy": Sample("m", "d", ids, {"correct1": correct, "correct5": correct | (rng.random(n) < 0.5)},
                           lambda d: [{"metric": "top1", "value": d["correct1"].mean()},
                                      {"metric": "top5", "value": d["correct5"].mean()}]),
        "calibration": Sample("m", "d", ids, {"confidence": rng.random(n), "correct": correct},
                              lambda d: calibration_rows(d, 15)),
        "imagenet_x": Sample("m", "d", ids, {"correct": correct, "pattern": pattern},
                             lambda d: factor_rows(d, patterns)),
        "robustness (ImageNet-C, 75 strata)": Sample("m", "d", ids, {"correct": correct.astype(float),
                                                                     "condition": code}, c_rows, strata=code),
        "pug (10 strata)": Sample("m", "d", ids, {"correct": correct, "subset": subset},
                                  lambda d: subset_rows(d, "membership"), strata=subset),
        "shape_bias": Sample("m", "d", ids, {"conflict": conflict, "hit_shape": conflict & (hit < 0.3),
                                             "hit_texture": conflict & (hit > 0.6), "correct16": hit < 0.3,
                                             "category": category}, bias_rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    uncertainty = {"level": 0.95, "resamples": args.resamples, "seed": 0}
    print(f"{args.images} images, {args.resamples} resamples, one (model, dataset) output")
    for name, sample in synthetic(args.images, np.random.default_rng(0)).items():
        start = time.perf_counter()
        entries = model_replicates([sample], uncertainty)
        print(f"  {name:38s} {time.perf_counter() - start:7.2f} s  ({len(entries)} rows)")


if __name__ == "__main__":
    main()

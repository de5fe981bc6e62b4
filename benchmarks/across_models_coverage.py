"""How often the across-model intervals (beyond_imagenet/across_models.py) exclude 0 where nothing
is planted: the false-positive rate against the nominal 1 - level, for a few study sizes.

    PYTHONPATH=. python benchmarks/across_models_coverage.py [--seeds 200] [--level 0.95]

Rank correlation: top-1 and an independent property. Group difference: a group of the more
accurate models whose property follows accuracy only (a raw comparison would find a difference).
"""

from __future__ import annotations

import argparse

import numpy as np

from beyond_imagenet.across_models import group_difference, rank_correlation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--level", type=float, default=0.95)
    parser.add_argument("--resamples", type=int, default=400)
    args = parser.parse_args()
    print(f"level {args.level} (nominal false-positive rate {1 - args.level:.3f}), {args.seeds} simulated studies each")
    for n, k in [(8, 4), (12, 4), (30, 10), (45, 15)]:
        rho_fp = group_fp = 0
        for seed in range(args.seeds):
            rng = np.random.default_rng(seed)
            top1, value = rng.uniform(60, 85, n), rng.normal(size=n)
            _, low, high = rank_correlation(top1, value, args.resamples, seed, args.level)
            rho_fp += low > 0 or high < 0
            member = np.arange(n) < k
            top1 = np.where(member, rng.uniform(75, 88, n), rng.uniform(60, 80, n))
            value = 2 * top1 + rng.normal(scale=3, size=n)
            _, low, high, _ = group_difference(top1, value, member, args.resamples, seed, args.level)
            group_fp += low > 0 or high < 0
        print(f"{n:3d} models (group of {k:2d}): rank correlation {rho_fp / args.seeds:.3f}, "
              f"group difference {group_fp / args.seeds:.3f}")


if __name__ == "__main__":
    main()

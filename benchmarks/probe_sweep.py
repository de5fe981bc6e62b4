"""Benchmark: batched weight-decay sweep vs. one probe per weight decay (docs/evaluations.md §7).

Runs the full linear-probe protocol twice on the same features -- once with the batched sweep
(``fit_linear_probes``) and once fitting ``fit_linear_probe`` per weight decay with
``torch.optim.AdamW`` as CLIP_benchmark does -- and checks that both pick a probe of the same
quality (best-val and test top-1 within 0.5 points), then reports the wall times and their ratio.

Example::

    python benchmarks/probe_sweep.py --n-train 800 --n-val 200 --n-test 2000 --dim 768 \\
        --classes 100 --device cpu --n-wd 97 --json probe_sweep.json
    # on the workflow's cached features of one VTAB task (train800val200 = train800 + val200):
    python benchmarks/probe_sweep.py --features results/extracted/vit_sup/vtab-dtd-{train800,val200,test}.h5
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from beyond_imagenet.metrics.transfer import (  # noqa: E402
    ProbeConfig,
    fit_linear_probe,
    select_and_evaluate,
    select_weight_decay,
)

TOLERANCE = 0.005  # 0.5 points of top-1


def synthetic_splits(args: argparse.Namespace):
    """Overlapping Gaussian classes, so that the weight decay matters and accuracy is not 100%."""
    rng = np.random.default_rng(args.seed)
    means = rng.normal(size=(args.classes, args.dim))
    means *= args.separation / np.linalg.norm(means, axis=1, keepdims=True)
    n = args.n_train + args.n_val + args.n_test
    labels = rng.integers(0, args.classes, size=n)
    features = (means[labels] + rng.normal(size=(n, args.dim))).astype(np.float32)
    return features, labels


def _read_cache(path: Path):
    import h5py

    with h5py.File(path, "r") as f:
        return np.asarray(f["features"], dtype=np.float32), np.asarray(f["labels"], dtype=np.int64)


def file_splits(args: argparse.Namespace):
    """Features from HDF5 caches (datasets ``features`` and ``labels``).

    One file: randomly split into the requested sizes. Three files: the workflow's train800, val200
    and test extractions of one VTAB task, used as they are (``--n-*`` are ignored); returned
    concatenated, with ``args.n_train`` / ``args.n_val`` / ``args.n_test`` set to their sizes.
    """
    if len(args.features) == 3:
        parts = [_read_cache(p) for p in args.features]
        args.n_train, args.n_val, args.n_test = (len(labels) for _, labels in parts)
        return np.concatenate([f for f, _ in parts]), np.concatenate([y for _, y in parts])
    if len(args.features) != 1:
        raise SystemExit("--features takes one HDF5 file (randomly split) or three (train, val, test)")
    features, labels = _read_cache(args.features[0])
    n = args.n_train + args.n_val + args.n_test
    if n > len(labels):
        raise SystemExit(f"{args.features[0]} holds {len(labels)} rows, {n} requested")
    order = np.random.default_rng(args.seed).permutation(len(labels))[:n]
    return features[order], labels[order]


def one_by_one(train, val, trainval, test, n_classes, config, device) -> dict:
    """The protocol with a separate torch.optim.AdamW fit per weight decay (the slow baseline)."""
    wds = list(config.weight_decays)
    val_correct = np.array([
        (fit_linear_probe(*train, n_classes, wd, config, device).predict(val[0]) == val[1]).sum()
        for wd in wds
    ])
    best = select_weight_decay(val_correct, wds)
    final = fit_linear_probe(*trainval, n_classes, wds[best], config, device)
    return {
        "test_top1": final.accuracy(*test),
        "val_top1_best": float(val_correct[best] / len(val[1])),
        "weight_decay": float(wds[best]),
        "val_top1_per_wd": [float(c / len(val[1])) for c in val_correct],
    }


def timed(fn, device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-train", type=int, default=800)
    parser.add_argument("--n-val", type=int, default=200)
    parser.add_argument("--n-test", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--separation", type=float, default=6.0, help="norm of the synthetic class means")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--n-wd", type=int, default=97, help="points of logspace(-6, 2, n)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0, help="data seed (the probe seed stays 0)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--features", type=Path, nargs="+", default=None,
                        help="HDF5 with features, labels (randomly split), or three: train, val, test "
                             "(e.g. results/extracted/<model>/vtab-<task>-{train800,val200,test}.h5)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    features, labels = file_splits(args) if args.features else synthetic_splits(args)
    n_classes = int(labels.max()) + 1 if args.features else args.classes
    if args.features and len(args.features) == 3:
        from beyond_imagenet.datasets.vtab import TASKS  # the task's class count, if the names say which task

        task = next((t for t in TASKS if f"-{t}-" in args.features[0].name), None)
        n_classes = max(n_classes, TASKS[task].n_classes) if task else n_classes
    a, b = args.n_train, args.n_train + args.n_val
    train, val, test = (features[:a], labels[:a]), (features[a:b], labels[a:b]), (features[b:], labels[b:])
    trainval = (features[:b], labels[:b])
    config = ProbeConfig(epochs=args.epochs, weight_decays=tuple(float(w) for w in np.logspace(-6, 2, args.n_wd)))

    # Warm-up so one-time kernel/thread-pool start-up is not billed to whichever runs first.
    warm = ProbeConfig(epochs=1, weight_decays=(1e-3,))
    select_and_evaluate(train, val, trainval, test, n_classes, warm, device)
    fit_linear_probe(*train, n_classes, 1e-3, warm, device)

    batched, t_batched = timed(lambda: select_and_evaluate(train, val, trainval, test, n_classes, config, device), device)
    single, t_single = timed(lambda: one_by_one(train, val, trainval, test, n_classes, config, device), device)

    d_val = abs(batched["val_top1_best"] - single["val_top1_best"])
    d_test = abs(batched["test_top1"] - single["test_top1"])
    ok = d_val <= TOLERANCE and d_test <= TOLERANCE
    print(f"device={device} torch_threads={torch.get_num_threads()} n_train={args.n_train} n_val={args.n_val} "
          f"n_test={args.n_test} dim={features.shape[1]} classes={n_classes} n_wd={args.n_wd} epochs={args.epochs}")
    for name, r, t in (("batched", batched, t_batched), ("one-by-one", single, t_single)):
        print(f"{name:>10}: val_top1_best={r['val_top1_best']:.4f} test_top1={r['test_top1']:.4f} "
              f"wd={r['weight_decay']:.3g} wall={t:.2f}s")
    print(f"speed-up (one-by-one / batched): {t_single / t_batched:.2f}x")
    print(f"{'PASS' if ok else 'FAIL'}: |d val|={100 * d_val:.2f} pts, |d test|={100 * d_test:.2f} pts (tol 0.5)")

    if args.json:
        args.json.write_text(json.dumps({
            "args": {k: ([str(p) for p in v] if k == "features" and v else str(v) if isinstance(v, Path) else v)
                     for k, v in vars(args).items()},
            "device": str(device), "torch_threads": torch.get_num_threads(),
            "batched": {**batched, "wall_s": t_batched},
            "one_by_one": {**single, "wall_s": t_single},
            "speedup": t_single / t_batched, "pass": ok,
        }, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

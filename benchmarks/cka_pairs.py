"""Size of a CKA pass file and peak RSS / time of the pairs job (compute_cka) at the paper's sizes.

    PYTHONPATH=. python benchmarks/cka_pairs.py [--images 2048] [--batch 64] [--layers 12] [--models 4 8]

Synthetic pass files (passes.write_grams: per batch each layer's float64 B x B Gram matrix, here of
random 32-dimensional activations) for each model count, then pairs_from_grams over every pair
(within and cross, the ``cross_pairs: all`` worst case) in a fresh process, whose peak RSS and wall
time are printed. No model is built: the pairs job's memory is one batch's Gram matrices of the
models plus the pairs' per-batch HSIC terms, independent of the models' sizes.
"""

from __future__ import annotations

import argparse
import itertools
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def write_files(folder: Path, models: int, images: int, batch: int, layers: int) -> dict[str, Path]:
    from beyond_imagenet.evaluations.cka.passes import write_grams

    files = {}
    ids = [f"img{i}" for i in range(images // batch * batch)]
    def grams(seed: int):
        g = torch.Generator().manual_seed(seed)
        for _ in range(images // batch):
            yield [(x := torch.randn(batch, 32, generator=g, dtype=torch.float64)) @ x.T for _ in range(layers)]

    for m in range(models):
        name = f"m{m}"
        files[name] = folder / f"{name}.h5"
        write_grams(files[name], [f"blocks.{i}" for i in range(layers)], grams(m),
                    lambda name=name: ({"model": name}, ids, []))
    return files


def measure(folder: Path, models: int) -> tuple[float, float]:
    """(peak RSS MiB, seconds) of pairs_from_grams over every pair, in a fresh process."""
    code = f"""
import itertools, resource, time, torch
torch.set_num_threads(1)  # as compute_cka (its job's threads)
from beyond_imagenet.evaluations.cka.passes import pairs_from_grams
names = [f"m{{i}}" for i in range({models})]
pairs = [(m, m) for m in names] + list(itertools.combinations(names, 2))
start = time.perf_counter()
found = pairs_from_grams({{m: r"{folder}/" + m + ".h5" for m in names}}, pairs, {{m: {{"model": m}} for m in names}})
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, time.perf_counter() - start)
"""
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    return float(out[0]), float(out[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--models", type=int, nargs="+", default=[4, 8, 16])
    args = parser.parse_args()
    torch.set_num_threads(1)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.images} images in batches of {args.batch}, {args.layers} layers per model")
    print(f"{'models':>6} {'pairs':>6} {'MB/file':>8} {'peak RSS MiB':>13} {'seconds':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for models in args.models:
            folder = Path(tmp) / str(models)
            start = time.perf_counter()
            files = write_files(folder, models, args.images, args.batch, args.layers)
            size = next(iter(files.values())).stat().st_size / 1e6
            rss, seconds = measure(folder, models)
            n_pairs = models + len(list(itertools.combinations(range(models), 2)))
            print(f"{models:>6} {n_pairs:>6} {size:>8.1f} {rss:>13.0f} {seconds:>8.1f}"
                  f"   (writing the files: {time.perf_counter() - start:.1f} s)")
    print(f"(this process's own peak RSS, for scale: {baseline:.0f} MiB)")


if __name__ == "__main__":
    main()

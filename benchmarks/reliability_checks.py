"""What the issue-24 checks add: the finiteness check of an output's arrays, and hashing a checkpoint
as it is loaded (against the sha256 its run was planned with).

    PYTHONPATH=. python benchmarks/reliability_checks.py [--images 50000] [--checkpoint-mb 100]

Printed beside what the same step costs anyway: reading the logits of an ImageNet-val-sized output
back from HDF5 (every metric job does), and ``torch.load`` of the checkpoint. Ratios are what to
compare; absolute times depend on the machine's load.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from beyond_imagenet.checkpoints import read_checkpoint
from beyond_imagenet.extract import nonfinite_rows
from beyond_imagenet.io import sha256_file


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--checkpoint-mb", type=int, default=100)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        logits = rng.standard_normal((args.images, 1000), dtype=np.float32)
        path = Path(tmp) / "out.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("logits", data=logits)

        def read():
            with h5py.File(path, "r") as f:
                return f["logits"][()]

        t_read = best_of(read)
        t_check = best_of(lambda: nonfinite_rows(logits))
        print(f"{args.images} x 1000 logits: read from HDF5 {t_read:.3f} s, finiteness check {t_check:.3f} s "
              f"({t_check / t_read:.2f}x the read)")

        n = args.checkpoint_mb * (1 << 20) // 4
        checkpoint = Path(tmp) / "w.pth"
        torch.save({"w": torch.from_numpy(rng.standard_normal(n, dtype=np.float32))}, checkpoint)
        sha = sha256_file(checkpoint)
        t_load = best_of(lambda: read_checkpoint(checkpoint))
        t_verified = best_of(lambda: read_checkpoint(checkpoint, expected_sha256=sha))
        print(f"{args.checkpoint_mb} MB checkpoint: torch.load {t_load:.3f} s, hashed then loaded "
              f"{t_verified:.3f} s ({t_verified / t_load:.2f}x)")


if __name__ == "__main__":
    main()

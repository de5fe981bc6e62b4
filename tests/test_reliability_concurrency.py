"""Two extractions at the same time into one folder never touch each other's files (issue #7).

The workflow test (test_reliability_workflow.py) runs two extraction jobs with two GPU slots, but a
job's few images take well under a second, so their writes rarely overlap. Here two extractions
run in two threads with a slow network, one checkpoint shard per image, started together: their
checkpoint folders, shards and temporary files are in use at the same time, and each output must
equal the one the same extraction writes alone.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import torch
from PIL import Image

from beyond_imagenet.extract import extract

N = 6


class SlowNet(torch.nn.Module):
    """(logits, features) from the pixels, 30 ms per batch so that two runs interleave."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def forward(self, x):
        time.sleep(0.03)
        flat = x.flatten(1).float()
        return flat[:, :10] * self.scale, flat[:, :4]


def to_tensor(image):
    return torch.from_numpy(np.asarray(image.resize((8, 8)), dtype=np.uint8).copy()).permute(2, 0, 1)


def run(model: str, folder, root, samples):
    return extract(SlowNet(1.0 if model == "a" else -2.0), to_tensor, root, samples, folder / f"{model}.h5",
                   {"model": model}, batch_size=1, shard_size=1, num_workers=0, progress=False)


def test_two_extractions_into_one_folder_at_once(tmp_path):
    root = tmp_path / "data"
    (root / "cls").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(N):
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(root / "cls" / f"{k}.png")
    samples = [(f"cls/{k}.png", 0) for k in range(N)]

    alone = tmp_path / "alone"
    for model in ("a", "b"):
        run(model, alone, root, samples)

    together = tmp_path / "together"
    together.mkdir()
    start, errors = threading.Barrier(2), []

    def worker(model):
        try:
            start.wait()
            run(model, together, root, samples)
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(m,)) for m in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert sorted(p.name for p in together.iterdir()) == ["a.h5", "b.h5"]  # no shards or temporaries left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alone", "data", "together"]
    for model in ("a", "b"):
        assert (together / f"{model}.h5").read_bytes() == (alone / f"{model}.h5").read_bytes()

"""The cached CLIP zero-shot head: built once per model, checked against the model's identity."""

from __future__ import annotations

import os
from typing import Any

import h5py
import numpy as np
import torch

from beyond_imagenet.extract import check_attrs
from beyond_imagenet.io import atomic_path, write_h5_attrs


def write_head(path: str | os.PathLike, head: torch.Tensor, attrs: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("weights", data=head.numpy().astype(np.float32), track_times=False)
            write_h5_attrs(f.attrs, attrs)


def read_head(path: str | os.PathLike, expected: dict[str, Any]) -> torch.Tensor:
    check_attrs(path, expected)
    with h5py.File(path, "r") as f:
        return torch.from_numpy(f["weights"][()])

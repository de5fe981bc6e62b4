"""ImageNet-1k class lists and val file-name helpers.

Every evaluation indexes classes by the rank of the WordNet id in sorted order (``n01440764`` = 0 …
``n15075141`` = 999); that is what ``ImageFolder`` over wnid folders yields and what timm ships in
``timm/data/_info/imagenet_synsets.txt``. The 200-class subsets of ImageNet-A and ImageNet-R are read
from timm's bundled copies of Hendrycks' lists, so no list is retyped here (a retyped list is the
classic way to get A/R accuracy silently wrong).
"""

from __future__ import annotations

import importlib.util
import re
from functools import lru_cache
from pathlib import Path, PurePath

import numpy as np

__all__ = [
    "imagenet_wnids",
    "wnid_to_index",
    "imagenet_a_wnids",
    "imagenet_r_wnids",
    "imagenet_a_mask",
    "imagenet_r_mask",
    "subset_mask",
    "val_file_name",
    "package_data_path",
]


def package_data_path(package: str, *parts: str) -> Path:
    """Path of a data file shipped inside an installed package, without importing the package.

    ``importlib.resources.files("timm.data")`` would execute timm's ``__init__`` and so import torch
    (seconds); locating the package through its import spec keeps these pure metric helpers light.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"package {package!r} is not installed")
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    if not path.is_file():
        raise FileNotFoundError(f"{package} does not ship {'/'.join(parts)}")
    return path


def _read_timm_info(name: str) -> tuple[str, ...]:
    """Read one of timm's bundled class lists (one entry per line), so versions stay pinned by timm."""
    text = package_data_path("timm", "data", "_info", name).read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip())


@lru_cache(maxsize=None)
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k wnids in sorted order: position = class index used everywhere."""
    wnids = _read_timm_info("imagenet_synsets.txt")
    if len(wnids) != 1000 or list(wnids) != sorted(wnids):
        raise RuntimeError("timm's imagenet_synsets.txt is not the 1000 sorted wnids")
    return wnids


@lru_cache(maxsize=None)
def wnid_to_index() -> dict[str, int]:
    """Map wnid → ImageNet-1k class index (sorted-wnid rank)."""
    return {wnid: i for i, wnid in enumerate(imagenet_wnids())}


def _subset_wnids(name: str) -> tuple[str, ...]:
    wnids = _read_timm_info(name)
    known = wnid_to_index()
    unknown = [w for w in wnids if w not in known]
    if len(wnids) != 200 or unknown or list(wnids) != sorted(wnids):
        raise RuntimeError(f"timm's {name} is not 200 sorted ImageNet-1k wnids")
    return wnids


@lru_cache(maxsize=None)
def imagenet_a_wnids() -> tuple[str, ...]:
    """The 200 ImageNet-A wnids, sorted (= label order 0..199 of an ImageFolder over the set)."""
    return _subset_wnids("imagenet_a_synsets.txt")


@lru_cache(maxsize=None)
def imagenet_r_wnids() -> tuple[str, ...]:
    """The 200 ImageNet-R wnids, sorted (= label order 0..199 of an ImageFolder over the set)."""
    return _subset_wnids("imagenet_r_synsets.txt")


def subset_mask(wnids: tuple[str, ...] | list[str]) -> np.ndarray:
    """Boolean mask over the 1000 sorted classes selecting ``wnids``.

    Because both the mask and an ImageFolder over the subset follow sorted-wnid order, column j of
    ``logits[:, mask]`` is label j of the subset.
    """
    index = wnid_to_index()
    mask = np.zeros(1000, dtype=bool)
    try:
        mask[[index[w] for w in wnids]] = True
    except KeyError as err:
        raise ValueError(f"not an ImageNet-1k wnid: {err.args[0]}") from None
    return mask


@lru_cache(maxsize=None)
def _imagenet_a_mask() -> np.ndarray:
    return subset_mask(imagenet_a_wnids())


@lru_cache(maxsize=None)
def _imagenet_r_mask() -> np.ndarray:
    return subset_mask(imagenet_r_wnids())


def imagenet_a_mask() -> np.ndarray:
    """Boolean (1000,) mask of the ImageNet-A classes (a fresh copy: callers may modify it)."""
    return _imagenet_a_mask().copy()


def imagenet_r_mask() -> np.ndarray:
    """Boolean (1000,) mask of the ImageNet-R classes (a fresh copy: callers may modify it)."""
    return _imagenet_r_mask().copy()


_VAL_NAME = re.compile(r"^(ILSVRC2012_val_\d{8})(?:_n\d{8})?(\.jpe?g)$", re.IGNORECASE)


def val_file_name(path: str | PurePath) -> str:
    """Canonical ImageNet val file name (``ILSVRC2012_val_00000001.JPEG``) from a path or name.

    ImageNet-X and ReaL join on the original basename; this strips directories and the ``_nXXXXXXXX``
    wnid suffix that the Hugging Face copy adds, so any of the usual layouts join correctly. Names
    that do not look like val files are returned as their basename unchanged.
    """
    base = str(path).replace("\\", "/").rsplit("/", 1)[-1]
    match = _VAL_NAME.match(base)
    if match is None:
        return base
    return f"{match.group(1)}.JPEG"

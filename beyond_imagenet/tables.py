"""Tidy metric tables: one row per (model, dataset, [group], metric) with a ``value`` column."""

from __future__ import annotations

import os
from typing import Any, Iterable

import pandas as pd

from beyond_imagenet.io import atomic_path


def write_table(rows: Iterable[dict[str, Any]], path: str | os.PathLike, sort_by: list[str] | None = None) -> pd.DataFrame:
    """Write rows as CSV atomically, in a deterministic order and number format."""
    frame = pd.DataFrame(list(rows))
    if sort_by:
        frame = frame.sort_values(sort_by, kind="stable").reset_index(drop=True)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.10g")
    return frame


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=False, na_values=[""])

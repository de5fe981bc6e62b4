"""Small file helpers: every output is written under a temporary name and renamed when complete."""

from __future__ import annotations

import contextlib
import glob
import os
from pathlib import Path

from beyond_imagenet import faults

# Names of the files atomic_path writes, for fault injection (beyond_imagenet.faults).
_KINDS = {".csv": "table", ".h5": "hdf5", ".json": "manifest", ".npz": "shard"}


def tmp_name(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def remove_stale_tmp(path: str | os.PathLike) -> None:
    """Delete temporary files a killed writer left next to ``path`` (SIGKILL skips ``finally``).

    Every output has one writer at a time (one Snakemake job), so any ``.<name>.tmp-<pid>`` found
    before writing is a leftover; for a multi-GB HDF5 file it would otherwise stay forever.
    """
    path = Path(path)
    if path.parent.is_dir():
        for old in path.parent.glob(f".{glob.escape(path.name)}.tmp-*"):
            if old.is_file() and not old.is_symlink():
                old.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path next to ``path``; rename it to ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    remove_stale_tmp(path)
    try:
        yield tmp
        if faults.FAULT:
            faults.at(f"{_KINDS.get(path.suffix, path.suffix)}:before-rename")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)

"""Infrastructure helpers, each written once: atomic files and folders (written under a temporary
name, renamed when complete), file hashing, lock files, and the HDF5 attribute codec.

Stays free of h5py: the attribute codec works on any attribute mapping (an ``h5py`` file's or
group's ``.attrs``), so the many small importers of this module (tables, plots, scripts) do not
load HDF5.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import IO, Any

from beyond_imagenet import faults

# Names of the files atomic_path writes, for fault injection (beyond_imagenet.faults).
_KINDS = {".csv": "table", ".h5": "hdf5", ".json": "manifest", ".npz": "shard"}

#: bytes read at a time when hashing a file (multi-GB archives and checkpoints never fit in memory)
CHUNK_SIZE = 1 << 20


def tmp_name(path: str | os.PathLike, hidden: bool = True) -> Path:
    """The temporary name of ``path`` in this process: ``.<name>.tmp-<pid>`` next to it (without
    the leading dot when not ``hidden``)."""
    path = Path(path)
    return path.with_name(f"{'.' if hidden else ''}{path.name}.tmp-{os.getpid()}")


log = logging.getLogger(__name__)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # an earlier attempt of this very process: a leftover
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def remove_leftovers(folder: str | os.PathLike, pattern: str) -> None:
    """Delete ``<...>.tmp-<pid>...`` files and folders matching ``pattern`` in ``folder`` that a
    killed writer left (SIGKILL skips ``finally``): a multi-GB HDF5 file or a half-unpacked
    ImageNet-C would otherwise stay forever. Those of a live process (another writer) are kept."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for old in folder.glob(pattern):
        found = re.search(r"\.tmp-(\d+)", old.name)
        if not found or old.is_symlink() or _alive(int(found.group(1))):
            continue
        log.warning("removing %s, left by an interrupted writer", old)
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


def remove_stale_tmp(path: str | os.PathLike, hidden: bool = True) -> None:
    """Leftover ``.<name>.tmp-<pid>`` files of ``path`` (see :func:`remove_leftovers`)."""
    path = Path(path)
    remove_leftovers(path.parent, f"{'.' if hidden else ''}{glob.escape(path.name)}.tmp-*")


def fsync_folder(folder: str | os.PathLike) -> None:
    """Make a rename in ``folder`` durable (after a power loss the new entry is there or not)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, durable: bool = False):
    """Yield a temporary path next to ``path``; rename it to ``path`` only if the block succeeds.

    ``durable``: the temporary file's data is fsynced before the rename and the folder after it,
    so after a power loss ``path`` is whole or absent (extraction shards and outputs)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    remove_stale_tmp(path)
    try:
        yield tmp
        if durable:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        if faults.FAULT:
            faults.at(f"{_KINDS.get(path.suffix, path.suffix)}:before-rename")
        os.replace(tmp, path)
        if durable:
            fsync_folder(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str | None = None) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, *, hidden: bool = True, replace: bool = True) -> Iterator[Path]:
    """Yield a new empty folder next to ``path``; rename it to ``path`` only if the block succeeds.

    Whatever happens, nothing is left under the temporary name (:func:`tmp_name`), nor in scratch
    folders named ``<temporary name>-<anything>`` (e.g. one per archive, merged into it); leftovers
    of killed writers are removed first. ``replace``: an existing ``path`` is removed just before
    the rename; otherwise the rename fails on it (another writer finished it meanwhile) with
    :class:`FileExistsError`, after the temporary folder is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path, hidden)
    remove_stale_tmp(path, hidden)
    try:
        tmp.mkdir()
        yield tmp
        if replace and path.exists():
            shutil.rmtree(path)
        try:
            os.rename(tmp, path)
        except OSError as err:
            if not replace and (path.exists() or path.is_symlink()):
                raise FileExistsError(errno.EEXIST, f"{path} appeared while {tmp} was written", str(path)) from err
            raise
    finally:
        for leftover in (tmp, *tmp.parent.glob(f"{glob.escape(tmp.name)}-*")):
            shutil.rmtree(leftover, ignore_errors=True)


# ------------------------------------------------------------------------------------- hashing
def file_chunks(path: str | os.PathLike, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """The bytes of a file, ``chunk_size`` at a time."""
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            yield chunk


def file_digest(path: str | os.PathLike, algorithm: str = "sha256", chunk_size: int = CHUNK_SIZE) -> str:
    """Hex digest of a file, read in chunks so multi-GB files do not need to fit in memory."""
    h = hashlib.new(algorithm, usedforsecurity=algorithm != "md5")
    for chunk in file_chunks(path, chunk_size):
        h.update(chunk)
    return h.hexdigest()


def sha256_file(path: str | os.PathLike, chunk_size: int = CHUNK_SIZE) -> str:
    """Hex sha256 of a file (downloads, checkpoints, images), read in chunks."""
    return file_digest(path, "sha256", chunk_size)


def md5_file(path: str | os.PathLike, chunk_size: int = CHUNK_SIZE) -> str:
    """Hex md5 of a file (to check published md5 sums, not for security), read in chunks."""
    return file_digest(path, "md5", chunk_size)


# --------------------------------------------------------------------------------------- locks
class LockFile:
    """A non-blocking exclusive ``flock`` on a lock file, which names the holder's pid.

    ``lock``: the lock file's path (opened, created if need be) or an already open file (read and
    write, e.g. mode ``a+``). The kernel drops the lock when the process dies, so a killed holder
    frees it. :meth:`acquire` returns False where another open file holds it (another process, or
    another :class:`LockFile` of this one), after reading the holder's pid into :attr:`holder`;
    the file is then closed. Used as a context manager, a held lock raises ``BlockingIOError``."""

    def __init__(self, lock: str | os.PathLike | IO[str]):
        self.handle: IO[str] = open(lock, "a+") if isinstance(lock, (str, os.PathLike)) else lock
        self.holder: str | None = None
        self.held = False

    def acquire(self) -> bool:
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.seek(0)
            self.holder = self.handle.read().strip() or "unknown"
            self.handle.close()
            return False
        self.held = True
        try:
            self.handle.seek(0)
            self.handle.truncate()
            self.handle.write(f"{os.getpid()}\n")
            self.handle.flush()
        except BaseException:
            self.release()
            raise
        return True

    def release(self) -> None:
        if self.held:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.held = False
        self.handle.close()

    def __enter__(self) -> LockFile:
        if not self.acquire():
            raise BlockingIOError(errno.EAGAIN, f"{self.handle.name} is held by pid {self.holder}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# ----------------------------------------------------------------------- HDF5 attribute codec
# How a value is stored as an HDF5 attribute (extraction outputs, zero-shot heads, CKA files):
# dicts, lists and tuples as JSON with sorted keys (anything JSON cannot encode as its str),
# None as "", everything else (str, int, float, bool, numpy scalars) as it is. Read back, a
# string attribute is a str (bytes decoded), and JSON stays a string for the caller to parse.
# Changing any of this changes the stored attributes, and so refuses every cached output.
def h5_attr(value: Any) -> Any:
    """``value`` as it is stored in (and compared with) an HDF5 attribute."""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True, default=str)
    if value is None:
        return ""
    return value


def write_h5_attrs(attrs: MutableMapping[str, Any], values: Mapping[str, Any]) -> None:
    """Store ``values`` in ``attrs`` (an h5py ``.attrs``) through :func:`h5_attr`, in key order."""
    for key in sorted(values):
        attrs[key] = h5_attr(values[key])


def read_h5_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """An h5py ``.attrs`` as a dict, byte strings decoded to str."""
    return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in attrs.items()}

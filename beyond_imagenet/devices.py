"""GPU leasing: a job takes a free device itself, because Snakemake's ``gpu`` resource only counts.

Snakemake never sets ``CUDA_VISIBLE_DEVICES`` for local jobs (docs/workflow-notes.md §2.2), so two GPU jobs
would otherwise both land on ``cuda:0``. Each visible device has a lock file keyed by its UUID
(stable whatever ``CUDA_VISIBLE_DEVICES`` a job sees); a job holds a non-blocking ``flock`` on one
for its lifetime. The kernel drops the lock when the process dies, so a killed job frees its GPU.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Iterator

import torch

from beyond_imagenet.io import LockFile

log = logging.getLogger(__name__)


def default_lock_dir() -> Path:
    return Path(tempfile.gettempdir()) / "beyond_imagenet_gpu_locks"


def _device_key(index: int) -> str:
    props = torch.cuda.get_device_properties(index)
    uuid = getattr(props, "uuid", None)
    return str(uuid) if uuid is not None else f"index-{index}"


def _shared_folder(folder: Path) -> None:
    """The lock folder, writable by every user (sticky, like /tmp): the leases of all users' jobs on
    a machine must meet in one place, or two users' jobs would share a GPU."""
    if not folder.is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(PermissionError):
            folder.chmod(0o1777)


def _shared_lock_file(path: Path):
    """Open (creating it readable and writable by all) a lock file another user may have made."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    with contextlib.suppress(PermissionError):
        if os.fstat(fd).st_uid == os.getuid():
            os.fchmod(fd, 0o666)  # the umask narrowed it
    return os.fdopen(fd, "a+")


@contextlib.contextmanager
def lease_device(requested: str = "auto", lock_dir: str | os.PathLike | None = None,
                 poll_seconds: float = 5.0) -> Iterator[torch.device]:
    """Yield a device this process holds exclusively: a free GPU, or the CPU where there is none.

    ``requested``: ``auto`` (GPU if any, else CPU), ``cpu``, or ``cuda`` (fail without a GPU).
    Waits, logging once, while every visible GPU is leased by another job.
    """
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        log.info("running on CPU (%s)", "requested" if requested == "cpu" else "no CUDA device visible")
        yield torch.device("cpu")
        return
    if not torch.cuda.is_available():
        raise RuntimeError("extraction.device is 'cuda' but no CUDA device is visible to this job")
    folder = Path(lock_dir) if lock_dir else default_lock_dir()
    _shared_folder(folder)
    waited = False
    while True:
        for index in range(torch.cuda.device_count()):
            lock = LockFile(_shared_lock_file(folder / f"gpu-{_device_key(index)}.lock"))
            if not lock.acquire():
                continue
            try:
                log.info("leased cuda:%d (%s)", index, torch.cuda.get_device_name(index))
                torch.cuda.set_device(index)
                yield torch.device("cuda", index)
            finally:
                lock.release()
            return
        if not waited:
            log.warning("all %d visible GPUs are leased by other jobs; waiting (locks in %s)",
                        torch.cuda.device_count(), folder)
            waited = True
        time.sleep(poll_seconds)

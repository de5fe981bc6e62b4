"""GPU leasing: a job takes a free device itself, because Snakemake's ``gpu`` resource only counts.

Snakemake never sets ``CUDA_VISIBLE_DEVICES`` for local jobs (docs/workflow-notes.md §2.2), so two GPU jobs
would otherwise both land on ``cuda:0``. Each visible device has a lock file keyed by its UUID
(stable whatever ``CUDA_VISIBLE_DEVICES`` a job sees); a job holds a non-blocking ``flock`` on one
for its lifetime. The kernel drops the lock when the process dies, so a killed job frees its GPU.

A job that was *given* a GPU (SLURM ``--gpus``, ``CUDA_VISIBLE_DEVICES``, an NVIDIA driver on the
machine) and whose torch cannot use it stops at once (:class:`DeviceError`, naming torch's CUDA
build, the driver and the torch to install) instead of running an 8-hour GPU job on the CPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from beyond_imagenet.io import LockFile

log = logging.getLogger(__name__)

#: Where the loaded NVIDIA kernel module says its version (module-level so tests can fake it).
NVIDIA_PROC_VERSION = Path("/proc/driver/nvidia/version")
#: Environment variables through which a scheduler or a user hands a job GPUs: device lists
#: (an index or UUID names a GPU, "0" included) and counts (SLURM's, possibly "h100:2"; 0 is none).
GPU_LIST_VARS = ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_GPUS", "SLURM_STEP_GPUS")
GPU_COUNT_VARS = ("SLURM_GPUS", "SLURM_GPUS_ON_NODE", "SLURM_GPUS_PER_NODE", "SLURM_GPUS_PER_TASK")
# Device lists meaning "no GPU": SLURM writes NoDevFiles, users write "" or -1 to hide every device.
_NO_GPU_LIST = {"", "-1", "nodevfiles", "none"}
#: The oldest driver each CUDA major version's wheels run on (NVIDIA's minor-version
#: compatibility table), newest first: what a torch build needs, and which build a driver takes.
CUDA_MIN_DRIVER = ((13, (580, 65)), (12, (525, 60)), (11, (450, 80)))
#: The PyTorch wheel index for each CUDA major version (the newest minor of the series).
TORCH_INDEX = {13: "cu130", 12: "cu126", 11: "cu118"}


class DeviceError(RuntimeError):
    """The job cannot get the device it needs; the message says what was found and what to do."""


@dataclasses.dataclass(frozen=True)
class GpuEnvironment:
    """What the machine and the scheduler say about GPUs, independent of torch."""

    given_by: tuple[str, ...]  # e.g. ("SLURM_JOB_GPUS=0", "NVIDIA driver 535.104.05")
    driver: str | None  # the NVIDIA driver version, None when no driver is loaded
    gpus: tuple[str, ...] = ()  # names nvidia-smi lists

    @property
    def has_gpu(self) -> bool:
        return bool(self.given_by)


def _driver_from_proc(path: Path) -> str | None:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    match = re.search(r"Kernel Module(?: for [^ ]+)?\s+(\d+\.\d+(?:\.\d+)?)", text) or \
        re.search(r"\b(\d{3,}\.\d+(?:\.\d+)?)\b", text)
    return match.group(1) if match else "unknown version"


def _nvidia_smi() -> tuple[str | None, tuple[str, ...]]:
    """(driver version, GPU names) from nvidia-smi, or (None, ()) without it or when it fails."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None, ()
    try:
        out = subprocess.run([exe, "--query-gpu=driver_version,name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None, ()
    rows = [[c.strip() for c in line.split(",", 1)] for line in out.splitlines() if line.strip()]
    return (rows[0][0] if rows else None), tuple(r[1] for r in rows if len(r) == 2)


def _gives_gpu(var: str, value: str) -> bool:
    value = value.strip().lower()
    if var in GPU_LIST_VARS:
        return value not in _NO_GPU_LIST
    counts = re.findall(r"(\d+)(?:\(|,|$)", value)  # "2", "h100:2", "2(x2)"
    return any(int(c) > 0 for c in counts)


def gpu_environment(environ: dict[str, str] | None = None) -> GpuEnvironment:
    """Whether this job was given a GPU: the scheduler's variables, ``CUDA_VISIBLE_DEVICES``, a
    loaded NVIDIA driver (``/proc/driver/nvidia/version``) or GPUs listed by ``nvidia-smi``. A
    job whose ``CUDA_VISIBLE_DEVICES`` hides every device was given none, driver or not."""
    environ = os.environ if environ is None else environ
    hidden = environ.get("CUDA_VISIBLE_DEVICES")
    if hidden is not None and hidden.strip().lower() in _NO_GPU_LIST:
        return GpuEnvironment((), None)
    given = [f"{var}={environ[var]}" for var in (*GPU_LIST_VARS, *GPU_COUNT_VARS)
             if var in environ and _gives_gpu(var, environ[var])]
    smi_driver, gpus = _nvidia_smi()
    driver = _driver_from_proc(NVIDIA_PROC_VERSION) or smi_driver
    if driver is not None:
        given.append(f"NVIDIA driver {driver} loaded")
    if gpus:
        given.append(f"nvidia-smi lists {len(gpus)} GPU(s): {', '.join(gpus)}")
    return GpuEnvironment(tuple(given), driver, gpus)


def _version_tuple(text: str | None) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text or "")[:2])


def matching_torch_hint(driver: str | None) -> str:
    """Which torch build a driver runs, as a pip command."""
    found = _version_tuple(driver)
    for major, minimum in CUDA_MIN_DRIVER:
        if found and found >= minimum:
            index = TORCH_INDEX[major]
            return (f"this driver runs CUDA {major} builds: pip install 'torch==<the version you need>' "
                    f"--index-url https://download.pytorch.org/whl/{index} (with the torchvision of the same "
                    "release), or use the torch of your site module / NGC container and install this "
                    "project into it without replacing torch (README: Bring your own torch)")
    return ("no CUDA build of current torch supports this driver (CUDA 11.8 needs >= 450.80): update the "
            "driver, or use your site's torch module / an NGC container that matches it (README: Bring your own torch)")


def no_usable_cuda_message(env: GpuEnvironment, requested: str) -> str:
    build = torch.version.cuda
    major = int(build.split(".")[0]) if build else None
    need = dict(CUDA_MIN_DRIVER).get(major)
    build_text = (f"torch {torch.__version__} is a CUDA {build} build" + (
        f" (needs NVIDIA driver >= {need[0]}.{need[1]})" if need else "")) if build else \
        f"torch {torch.__version__} is a CPU-only build (torch.version.cuda is None)"
    return (
        f"extraction.device is {requested!r} and this job was given a GPU ({'; '.join(env.given_by)}), but torch "
        f"cannot use it: {build_text}; driver: {env.driver or 'not found'}. Stopping instead of running on the "
        f"CPU. Fix: {matching_torch_hint(env.driver)}. To run on the CPU on purpose, set `extraction.device: cpu`."
    )


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
    ``auto`` and ``cuda`` stop (:class:`DeviceError`) when the job was given a GPU that torch
    cannot use; ``auto`` on a machine without any GPU runs on the CPU with a warning.
    Waits, logging once, while every visible GPU is leased by another job.
    """
    if requested == "cpu":
        log.info("running on CPU (requested: extraction.device cpu)")
        yield torch.device("cpu")
        return
    if not torch.cuda.is_available():
        env = gpu_environment()
        if env.has_gpu:
            raise DeviceError(no_usable_cuda_message(env, requested))
        if requested == "cuda":
            raise DeviceError("extraction.device is 'cuda' but this machine has no GPU (no NVIDIA driver, no "
                              "CUDA_VISIBLE_DEVICES, no SLURM GPU allocation); run where there is one, or set "
                              "`extraction.device: cpu`")
        log.warning("running on CPU: extraction.device is 'auto' and this machine has no GPU (no NVIDIA driver, "
                    "no GPU allocation); set `extraction.device: cpu` to say so, or run where there is one")
        yield torch.device("cpu")
        return
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

"""One forward pass per (model, dataset, variant) -> the HDF5 output contract.

Streaming and resumable: batches are decoded by DataLoader workers, outputs are flushed every
``shard_rows`` images to a checkpoint shard (written atomically) next to the output, and a killed
job resumes after its last shard. Shards start at multiples of the batch size, so the resumed run
computes exactly the same batches as an uninterrupted one, and the final HDF5 is assembled in one
go from the shards: the file is identical either way. Memory is bounded by one shard.

Bad images (undecodable, truncated, empty, not an image) are collected over the whole pass, so
the error names every one of them, and with ``on_bad_image='error'`` nothing is written.

A split extraction (``extraction.split``) computes the same shards in K part jobs
(:func:`extract_part`: a contiguous run of shards each, in a folder of its own, resumable the same
way) and assembles them in one merge job (:func:`merge_parts`) with the same writer: the same file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import h5py
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from beyond_imagenet import faults
from beyond_imagenet.io import LockFile, atomic_path, atomic_write_text, h5_attr, read_h5_attrs, write_h5_attrs

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
#: The large per-image arrays an output may hold; a study stores only those some evaluation of it
#: reads (``Study.stored_arrays``), recorded in the ``arrays`` attribute. Files without it (older
#: ones) hold both. ``labels``, ``ids`` and the skipped lists are always stored.
LARGE_ARRAYS = ("logits", "features")


def arrays_attr(arrays: Sequence[str]) -> str:
    """The ``arrays`` attribute of an output holding ``arrays``: sorted names, comma-separated."""
    unknown = sorted(set(arrays) - set(LARGE_ARRAYS))
    if unknown:
        raise ValueError(f"unknown output array(s) {unknown}; an output holds {' and/or '.join(LARGE_ARRAYS)}")
    return ",".join(sorted(set(arrays)))


def stored_arrays(attrs: dict[str, Any]) -> set[str]:
    """The large arrays an output holds, from its attributes (all of them in a file that predates
    the ``arrays`` attribute)."""
    value = attrs.get("arrays")
    return set(LARGE_ARRAYS) if value is None else {a for a in str(value).split(",") if a}


class BadImagesError(RuntimeError):
    """Some images could not be read; lists every one of them."""

    def __init__(self, root: str, bad: list[tuple[str, str]]):
        self.bad = bad
        lines = "\n".join(f"  {root}/{sid}: {reason}" for sid, reason in bad)
        super().__init__(
            f"{len(bad)} image(s) could not be read, nothing was written:\n{lines}\n"
            "Replace or remove these files and rerun (a manual dataset folder is listed again "
            "automatically; for a folder the workflow generated or unpacked, add --forcerun "
            "build_manifest), or set extraction.on_bad_image: skip to record them as skipped."
        )


class StaleOutputError(RuntimeError):
    """An output file was made for another model, weights, preprocessing or image list."""


class CorruptOutputError(StaleOutputError):
    """An output file cannot be read (truncated) or its arrays no longer match their checksums."""


class NonFiniteOutputError(RuntimeError):
    """A model gave NaN or infinite logits or features: its numbers would be wrong, not missing."""


def nonfinite_rows(block: np.ndarray) -> np.ndarray:
    """Which rows (images) of a 2-D logits/features array, or a chunk of one, hold a NaN or an
    infinity. Row-wise so a streamed read can call it per chunk and add the counts."""
    block = np.asarray(block)
    if block.ndim != 2 or block.size == 0:
        return np.zeros(len(block), dtype=bool)
    if block.dtype != np.float32:
        return ~np.isfinite(block).all(axis=1)
    # One BLAS pass (several times faster than isfinite over every value; benchmarks/reliability_checks.py):
    # a NaN or inf anywhere in a row makes its sum NaN or inf. Rows flagged are checked exactly, since
    # a sum of huge finite values can also overflow.
    out = np.zeros(len(block), dtype=bool)
    with np.errstate(invalid="ignore", over="ignore"):  # the NaN/inf sums are what is looked for
        suspect = ~np.isfinite(block @ np.ones(block.shape[1], dtype=np.float32))
    if suspect.any():
        out[suspect] = ~np.isfinite(block[suspect]).all(axis=1)
    return out


def nonfinite_output(path, name: str, count: int, n_rows: int) -> NonFiniteOutputError:
    """Refuse an output file (written before extraction checked this) whose ``name`` array has
    ``count`` of ``n_rows`` rows with NaN or inf (argmax would score all-NaN rows as class 0, the
    ECE would be NaN while the accuracy ignores them), and remove it so a rerun re-extracts it."""
    path = Path(path)
    removed = _discard(path)
    then = ("It was removed: rerun the same snakemake command" if removed else
            f"Delete it (rm {path}) and rerun the same snakemake command")
    return NonFiniteOutputError(
        f"{path}: {count} of its {n_rows} images have NaN or infinite {name}, so every metric computed from "
        "it would be wrong (an all-NaN row is scored as a prediction of class 0); it was written before "
        f"extraction refused such outputs. {then} once the model's weights are fixed (a diverged or NaN "
        "checkpoint is the usual cause): the extraction recomputes it, and stops naming the model, the "
        "dataset and the count of images if its outputs are still not finite."
    )


class DiskFullError(OSError):
    """No space left while writing an extraction file; says what was kept and how to resume."""


_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


def _is_disk_full(err: BaseException) -> bool:
    # h5py reports HDF5's write failures as OSError/RuntimeError with the errno in the text only.
    return getattr(err, "errno", None) in _DISK_FULL or "No space left on device" in str(err) \
        or "Disk quota exceeded" in str(err)


def _disk_full(path: Path, err: BaseException, resume: str) -> DiskFullError:
    return DiskFullError(
        errno.ENOSPC,
        f"No space left on device while writing {path} ({type(err).__name__}: {err}). Nothing half-written "
        f"was kept: the partial file was removed. Free space on {path.parent} (df -h {path.parent}) and rerun "
        f"the same command: {resume}",
    )


# Transforms resize the short side to a fixed size (256 px, up to 3 x 256 for the scale variants),
# so the long side grows with the aspect ratio: a 1 x 4,000 px PNG of 101 bytes would become
# 256 x 1,024,000 px (about 1 GB). Real photographs, panoramas included, stay far below this.
MAX_ASPECT_RATIO = 100


def _grey_to_8bit(image: Image.Image) -> np.ndarray:
    """A 16-bit, 32-bit integer or 32-bit float greyscale image as 8 bits. PIL's convert() clips
    each of them at 255: a [0, 1] float image came out black, a 16- or 32-bit one saturated.

    * integers: 0 is black; white is 65,535 when every value fits 16 bits (16-bit PNG / TIFF /
      PGM, and 16-bit data stored as 32-bit: both give the same pixels), else 2**31 - 1 (the full
      signed 32-bit range that PIL reads). Negative values have no defined black: refused.
    * floats: [0, 1] is scaled to [0, 255] (the convention of float images: scikit-image,
      tifffile, microscopy); values in [0, 255] but not within [0, 1] are taken as 8-bit levels
      (PIL's own reading of float images). Anything else (negative, above 255, NaN, inf: depth
      maps, HDR, raw sensor values) has no intensity mapping that holds for every file: refused,
      naming the range, so the image is converted by someone who knows what it holds.
    A refused image is a bad image (named at extraction; ``extraction.on_bad_image``)."""
    array = np.asarray(image).astype(np.float64)
    low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    if image.mode == "F":
        if not (np.isfinite(low) and np.isfinite(high)) or low < 0 or high > 255:
            raise ValueError(
                f"32-bit float image with values in [{low:g}, {high:g}]; only [0, 1] (scaled to 0-255) and "
                "[0, 255] have a defined meaning. Convert it to an 8- or 16-bit image with the intensity "
                "mapping that suits your data"
            )
        scale = 255.0 if high <= 1.0 else 1.0
    else:
        if low < 0:
            raise ValueError(
                f"integer image with negative values (down to {low:g}); 0 must be black. Convert it to an "
                "8- or 16-bit image with the intensity mapping that suits your data"
            )
        scale = 255.0 / (65535.0 if high <= 65535 else float(2**31 - 1))
    return np.clip(np.round(array * scale), 0, 255).astype(np.uint8)


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Decode fully (truncation raises) and convert odd-but-valid modes to 8-bit RGB.

    Refused (a bad image, named by the caller): a symlink that leads nowhere, and an image whose
    sides differ more than ``MAX_ASPECT_RATIO`` times (checked on the header, before decoding), as
    resizing its short side would cost memory without bound."""
    if os.path.islink(path) and not os.path.exists(path):
        raise FileNotFoundError(f"a symlink that leads nowhere (dangling or a loop): -> {os.readlink(path)}")
    with Image.open(path) as image:
        width, height = image.size
        if min(width, height) < 1 or max(width, height) > MAX_ASPECT_RATIO * min(width, height):
            raise ValueError(
                f"image is {width} x {height} px, more than {MAX_ASPECT_RATIO}:1; resizing its short side "
                "would need memory without bound, so it is refused"
            )
        image.load()
        if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            return Image.fromarray(_grey_to_8bit(image), mode="L").convert("RGB")
        if image.mode == "RGB":
            return image.copy()
        # CMYK, grayscale, palette, RGBA (alpha dropped, as torchvision's loader does).
        return image.convert("RGB")


class ImageList(Dataset):
    def __init__(self, root: str | os.PathLike, ids: Sequence[str], transform: Callable, start: int = 0,
                 stop: int | None = None):
        self.root = Path(root)
        self.ids = ids
        self.transform = transform
        self.start = start
        self.stop = len(ids) if stop is None else stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, i: int):
        index = self.start + i
        try:
            image = self.transform(load_rgb(self.root / self.ids[index]))
            return image, index, ""
        except Exception as err:  # any decode/transform failure is reported per file
            return None, index, f"{type(err).__name__}: {err}"


def collate(batch):
    good = [(img, idx) for img, idx, err in batch if img is not None]
    bad = [(idx, err) for img, idx, err in batch if img is None]
    images = torch.stack([img for img, _ in good]) if good else None
    return images, [idx for _, idx in good], bad


class DeviceNormalize(torch.nn.Module):
    """``ToTensor`` + ``Normalize`` done on the device from uint8: the same float32 arithmetic."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).clone().view(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).clone().view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float().div_(255.0) - self.mean) / self.std


def split_transform(transform: Callable) -> tuple[Callable, DeviceNormalize | None]:
    """Split ``Compose([..., ToTensor, Normalize])`` into a uint8 geometry part for the workers and
    the normalisation for the device (4x less data between processes, no float work in workers).
    Transforms of another shape are returned unchanged (normalised in the workers)."""
    from torchvision import transforms as T

    steps = list(getattr(transform, "transforms", []))
    if len(steps) < 2 or not isinstance(steps[-1], T.Normalize):
        return transform, None
    to_tensor = steps[-2]
    if type(to_tensor).__name__ not in ("ToTensor", "MaybeToTensor"):
        return transform, None
    return T.Compose(steps[:-2] + [T.PILToTensor()]), DeviceNormalize(steps[-1].mean, steps[-1].std)


def _shard_path(parts: Path, k: int) -> Path:
    return parts / f"shard-{k:06d}.npz"


def _save_shard(path: Path, **arrays: np.ndarray) -> None:
    """Write a checkpoint shard durably: the file's data reaches the disk before its rename, and
    the rename before the next shard (after a power loss a shard is whole or absent)."""
    try:
        with atomic_path(path, durable=True) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
    except OSError as err:
        if _is_disk_full(err):
            raise _disk_full(path, err, f"the extraction resumes after the {int(path.stem.split('-')[1])} "
                                        "checkpoint shard(s) already written next to it.") from None
        raise


def _shard_ok(path: Path, rows: int) -> str:
    """Empty if the shard at ``path`` is whole and holds ``rows`` images; else what is wrong."""
    try:
        with np.load(path) as z:
            arrays = {k: z[k] for k in ("logits", "features", "index", "bad_index", "bad_reason")}  # CRC-checked
    except Exception as err:  # zipfile.BadZipFile, EOFError, KeyError, ValueError, OSError
        return f"{type(err).__name__}: {err}"
    n_good, n_bad = len(arrays["index"]), len(arrays["bad_index"])
    if n_good + n_bad != rows or len(arrays["bad_reason"]) != n_bad:
        return f"holds {n_good} + {n_bad} images, expected {rows}"
    if n_good and (len(arrays["logits"]) != n_good or len(arrays["features"]) != n_good):
        return "its arrays have different lengths"
    return ""


class _Forward:
    """Runs the network, halving the sub-batch on CUDA OOM and keeping the smaller size."""

    def __init__(self, network: torch.nn.Module, device: torch.device, normalize: torch.nn.Module | None = None):
        self.network = network
        self.device = device
        self.normalize = normalize.to(device) if normalize is not None else None
        self.max_rows: int | None = None

    def __call__(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        while True:
            rows = self.max_rows or images.shape[0]
            try:
                outs = [self._run(images[i : i + rows]) for i in range(0, images.shape[0], rows)]
                return (np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs]))
            except torch.cuda.OutOfMemoryError:
                if rows == 1:
                    raise
                self.max_rows = max(1, rows // 2)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                log.warning("CUDA out of memory at %d images per forward pass; continuing with %d", rows, self.max_rows)

    def _run(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        images = images.to(self.device, non_blocking=True)
        with torch.inference_mode():
            if self.normalize is not None:
                images = self.normalize(images)
            if self.device.type == "cuda":
                images = images.contiguous(memory_format=torch.channels_last)
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    logits, features = self.network(images)
            else:
                logits, features = self.network(images)
        return logits.float().cpu().numpy(), features.float().cpu().numpy()


def extract(
    network: torch.nn.Module,
    transform: Callable,
    root: str | os.PathLike,
    samples: Sequence[tuple[str, int]],
    out_path: str | os.PathLike,
    attrs: dict[str, Any],
    *,
    device: torch.device = torch.device("cpu"),
    batch_size: int = 64,
    num_workers: int = 2,
    shard_size: int = 4096,
    features_dtype: str = "float16",
    on_bad_image: str = "error",
    progress: bool = True,
    reuse: bool = False,
    timings: dict[str, float] | None = None,
    arrays: Sequence[str] | None = None,
) -> Path:
    """Run ``network`` (returning ``(logits, features)``) over ``samples`` and write ``out_path``.

    ``reuse``: keep the extraction key next to the file (``<out_path>.key``) and return an existing
    ``out_path`` whose key is this call's (same attrs, images, batch size, device, dtype and
    bad-image policy) without computing it again. ``timings``: filled with the wall-clock time of
    the first batch (``first_batch``, time.time()), the seconds spent in forward passes
    (``forward_s``) and in the first one (``first_forward_s``: where ``torch.compile`` compiles).
    ``arrays``: which of :data:`LARGE_ARRAYS` the file holds (default: what ``attrs["arrays"]``
    says, else both); the network computes both, what no reader needs is not written (ImageNet-C's
    features would be 5.8 GB per model)."""
    out_path = Path(out_path)
    run = _Run(samples, out_path, attrs, device=device, batch_size=batch_size, shard_size=shard_size,
                    features_dtype=features_dtype, on_bad_image=on_bad_image, arrays=arrays)
    if reuse and run.reusable():
        log.info("reusing %s: made by the same extraction (key %s)", out_path, run.reuse_key[:16])
        return out_path
    parts = out_path.parent / f".{out_path.name}.parts"
    with _sole_writer(parts, out_path):
        if reuse:
            run.key_file.unlink(missing_ok=True)  # no key while the file is being replaced
        _extract(network, transform, root, run, parts, 0, run.n_shards, device=device, batch_size=batch_size,
                 num_workers=num_workers, progress=progress, timings=timings if timings is not None else {})
        written = _assemble([_shard_path(parts, k) for k in range(run.n_shards)], [parts], out_path, run.ids,
                            run.labels, run.attrs, on_bad_image, root)
        if reuse:
            atomic_write_text(run.key_file, run.reuse_key)
        return written


class _Run:
    """What one extraction of ``out_path`` computes: its images, identity, shard layout and keys.
    A split extraction's parts and its merge (:func:`extract_part`, :func:`merge_parts`) share it
    with the unsplit one, which is why their files are the same bytes."""

    def __init__(self, samples, out_path: Path, attrs: dict[str, Any], *, device, batch_size: int,
                 shard_size: int, features_dtype: str, on_bad_image: str, arrays):
        # How the numbers were computed is part of the file and of the checkpoint key: a job killed on
        # a GPU (bf16 autocast) and resumed on the CPU (float32) starts over instead of mixing shards.
        attrs = {**attrs, "batch_size": int(batch_size), "device_type": device.type,
                 "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                 "autocast": "bfloat16 (classifier in float32)" if device.type == "cuda" else "none"}
        self.out_path = out_path
        self.ids = [sid for sid, _ in samples]
        self.labels = np.asarray([label for _, label in samples], dtype=np.int64)
        self.n = len(self.ids)
        self.batch_size = batch_size
        self.shard_rows = shard_rows(batch_size, shard_size)
        self.n_shards = math.ceil(self.n / self.shard_rows)
        self.features_dtype = features_dtype
        stored = arrays_attr(stored_arrays(attrs) if arrays is None else arrays)
        self.attrs = {**attrs, "arrays": stored}
        self.ids_sha256 = hashlib.sha256("\n".join(self.ids).encode()).hexdigest()
        key = {"attrs": self.attrs, "batch_size": batch_size, "shard_rows": self.shard_rows,
               "features_dtype": features_dtype, "ids": self.ids_sha256}
        self.run_key = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
        self.reuse_key = hashlib.sha256(f"{self.run_key}\non_bad_image={on_bad_image}\n".encode()).hexdigest()
        self.key_file = out_path.with_name(out_path.name + ".key")

    def reusable(self) -> bool:
        return _key_matches(self.out_path, self.reuse_key)


def _key_matches(out_path: Path, reuse_key: str) -> bool:
    key_file = out_path.with_name(out_path.name + ".key")
    return out_path.is_file() and key_file.is_file() and key_file.read_text() == reuse_key


def shard_rows(batch_size: int, shard_size: int) -> int:
    """Images per checkpoint shard: ``shard_size`` rounded up to whole batches."""
    return math.ceil(shard_size / batch_size) * batch_size


# --------------------------------------------------------------- split extraction (parts, merge)
# extraction.split: {<dataset>: K} extracts one file in K jobs: part k of K computes a contiguous run
# of the unsplit extraction's checkpoint shards (same batches, same shard boundaries, same numbers)
# into its own folder, resumable the same way; one merge job assembles all shards with the same
# code as the unsplit extraction, so the file is the same bytes.
def split_folder(out_path: str | os.PathLike) -> Path:
    """Where the parts of a split extraction of ``out_path`` keep their checkpoint shards."""
    out_path = Path(out_path)
    return out_path.parent / f".{out_path.name}.split"


def part_folder(out_path: str | os.PathLike, part: int, parts: int) -> Path:
    return split_folder(out_path) / f"part-{part}-of-{parts}"


def part_shards(n_images: int, batch_size: int, shard_size: int, part: int, parts: int) -> tuple[int, int]:
    """The checkpoint shards ``[first, end)`` part ``part`` (1-based) of ``parts`` computes: contiguous,
    disjoint, together all shards of the unsplit extraction, sizes differing by at most one shard
    (a part with none when there are fewer shards than parts)."""
    if not 1 <= part <= parts:
        raise ValueError(f"part {part} of {parts}: parts are numbered 1 to {parts}")
    n_shards = math.ceil(n_images / shard_rows(batch_size, shard_size))
    return (part - 1) * n_shards // parts, part * n_shards // parts


def empty_part_record(out_path, part: int, parts: int, n_images: int, batch_size: int, shard_size: int) -> dict:
    """The record of a part with no shard (fewer shards than parts): nothing to compute, no model."""
    first, end = part_shards(n_images, batch_size, shard_size, part, parts)
    assert first == end
    return {"output": str(out_path), "part": part, "parts": parts, "first_shard": first, "end_shard": end,
            "n_images": n_images, "empty": True}


def extract_part(network: torch.nn.Module, transform: Callable, root: str | os.PathLike,
                 samples: Sequence[tuple[str, int]], out_path: str | os.PathLike, attrs: dict[str, Any], *,
                 part: int, parts: int, device: torch.device = torch.device("cpu"), batch_size: int = 64,
                 num_workers: int = 2, shard_size: int = 4096, features_dtype: str = "float16",
                 on_bad_image: str = "error", progress: bool = True, timings: dict[str, float] | None = None,
                 arrays: Sequence[str] | None = None) -> dict[str, Any]:
    """Part ``part`` of ``parts`` of :func:`extract` (same arguments, ``reuse`` always on): compute
    its shards (:func:`part_shards`) into :func:`part_folder`, resuming after its last whole shard
    like the unsplit extraction. Nothing is written at ``out_path``: :func:`merge_parts` does that
    from every part's record, which this returns (JSON-able). A finished ``out_path`` whose key is
    this extraction's is reused: nothing computed, the record says ``reused``."""
    out_path = Path(out_path)
    run = _Run(samples, out_path, attrs, device=device, batch_size=batch_size, shard_size=shard_size,
                    features_dtype=features_dtype, on_bad_image=on_bad_image, arrays=arrays)
    first, end = part_shards(run.n, batch_size, shard_size, part, parts)
    folder = part_folder(out_path, part, parts)
    record = {"output": str(out_path), "part": part, "parts": parts, "first_shard": first, "end_shard": end,
              "n_images": run.n, "n_shards": run.n_shards, "shard_rows": run.shard_rows,
              "run_key": run.run_key, "reuse_key": run.reuse_key, "ids_sha256": run.ids_sha256,
              "attrs": encode_attrs(run.attrs), "folder": str(folder),
              "shards": [_shard_path(folder, k).name for k in range(first, end)], "reused": False}
    if run.reusable():
        log.info("reusing %s: made by the same extraction (key %s); part %d of %d computes nothing",
                 out_path, run.reuse_key[:16], part, parts)
        return {**record, "shards": [], "reused": True}
    with _sole_writer(folder, out_path):
        _extract(network, transform, root, run, folder, first, end, device=device, batch_size=batch_size,
                 num_workers=num_workers, progress=progress, timings=timings if timings is not None else {})
    log.info("part %d of %d of %s: shards %d to %d of %d in %s", part, parts, out_path, first, end - 1,
             run.n_shards, folder)
    return record


class PartsMissingError(RuntimeError):
    """Parts of a split extraction whose shards are gone or damaged: they must be computed again."""

    def __init__(self, message: str, parts: list[int]):
        super().__init__(message)
        self.parts = parts


def unmergeable_parts(records: Sequence[dict[str, Any]]) -> list[int]:
    """The parts whose shards are not all there and whole (a reused part has none): cheap (stats and
    reads the shards' zip directories)."""
    missing = []
    for record in records:
        if record.get("empty"):
            continue
        if record.get("reused") or not _part_shards_ok(record):
            missing.append(record["part"])
    return missing


def _part_shards_ok(record: dict[str, Any]) -> bool:
    folder = Path(record["folder"])
    key = folder / "run-key"
    if not key.is_file() or key.read_text() != record["run_key"]:
        return False
    n, rows = record["n_images"], record["shard_rows"]
    for k in range(record["first_shard"], record["end_shard"]):
        expected = rows if k < record["n_shards"] - 1 else n - k * rows
        if _shard_ok(_shard_path(folder, k), expected):
            return False
    return True


def merge_parts(records: Sequence[dict[str, Any]], samples: Sequence[tuple[str, int]], out_path: str | os.PathLike,
                expected: dict[str, Any], *, on_bad_image: str = "error", root: str | os.PathLike = "") -> bool:
    """Write ``out_path`` from the records of all parts of its split extraction (:func:`extract_part`),
    byte-identical to the unsplit :func:`extract`, then remove the parts' shards; keep its key beside
    it (as ``reuse=True``). ``samples``: the image list the parts were given (checked against their
    key); ``expected``: what the file must record (its identity: checked against the parts' attrs).
    Returns True where the file was already there under the same key (every part reused it).

    Raises :class:`PartsMissingError` naming the parts to compute again where some part's shards are
    gone; :class:`BadImagesError` and :class:`NonFiniteOutputError` as the unsplit extraction, after
    removing every shard (the parts must run again once the images or weights are fixed)."""
    out_path = Path(out_path)
    records = sorted(records, key=lambda r: r["part"])
    _check_parts(records, samples, out_path, expected)
    full = [r for r in records if not r.get("empty")]
    if not full:
        raise ValueError(f"{out_path}: no part of the split extraction holds an image (an empty dataset)")
    reuse_key = full[0]["reuse_key"]
    if _key_matches(out_path, reuse_key):
        log.info("reusing %s: made by the same extraction (key %s)", out_path, reuse_key[:16])
        shutil.rmtree(split_folder(out_path), ignore_errors=True)
        return True
    missing = unmergeable_parts(full)
    if missing:
        raise PartsMissingError(
            f"{out_path}: the checkpoint shards of part(s) {', '.join(map(str, missing))} of {full[0]['parts']} "
            f"are missing or damaged (removed after an earlier merge or by hand) and {out_path} is not there "
            "to reuse; those parts are computed again when you rerun the same snakemake command.", missing)
    attrs = decode_attrs(full[0]["attrs"])
    key_file = out_path.with_name(out_path.name + ".key")
    folder = split_folder(out_path)
    ids = [sid for sid, _ in samples]
    labels = np.asarray([label for _, label in samples], dtype=np.int64)
    with contextlib.ExitStack() as locks:  # no part may still be writing (an orphaned job)
        for record in full:
            locks.enter_context(_sole_writer(Path(record["folder"]), out_path))
        key_file.unlink(missing_ok=True)
        shards = [_shard_path(Path(r["folder"]), k) for r in full for k in range(r["first_shard"], r["end_shard"])]
        _assemble(shards, [folder], out_path, ids, labels, attrs, on_bad_image, root)
        atomic_write_text(key_file, reuse_key)
    return False


def _check_parts(records, samples, out_path: Path, expected: dict[str, Any]) -> None:
    """The records are the parts 1..K of one extraction of ``samples``, computed the same way."""
    parts = records[0]["parts"] if records else 0
    if [r["part"] for r in records] != list(range(1, parts + 1)) or any(r["parts"] != parts for r in records):
        raise ValueError(f"{out_path}: the parts given are {[(r['part'], r['parts']) for r in records]}, "
                         f"not parts 1 to {parts} of {parts}")
    for a, b in zip(records, records[1:]):
        if a["end_shard"] != b["first_shard"]:
            raise ValueError(f"{out_path}: parts {a['part']} and {b['part']} are not contiguous")
    full = [r for r in records if not r.get("empty")]
    ids_sha256 = hashlib.sha256("\n".join(sid for sid, _ in samples).encode()).hexdigest()
    for record in full:
        if record["ids_sha256"] != ids_sha256 or record["n_images"] != len(samples):
            raise ValueError(f"{out_path}: part {record['part']} was computed on another image list "
                             "(its manifest changed since); rerun the workflow to recompute it")
    keys = {r["run_key"] for r in full}
    if len(keys) > 1:
        # e.g. parts run on different kinds of GPU: a file records one device and its numbers
        differ = sorted({k for r in full for k, v in r["attrs"].items() if v != full[0]["attrs"].get(k)})
        seen = "; ".join(f"part {r['part']}: " + ", ".join(f"{k}={decode_attrs(r['attrs']).get(k)!r}" for k in differ)
                         for r in full)
        raise PartsMissingError(
            f"{out_path}: the parts of its split extraction were not computed the same way ({seen}). One file "
            "records one device and batch size: run every part on one kind of GPU (e.g. "
            "BEYOND_IMAGENET_SLURM_GPU_MODEL on SLURM) or on the CPU. The parts that differ from part 1 are "
            "computed again when you rerun the same snakemake command.",
            [r["part"] for r in full if r["run_key"] != full[0]["run_key"]])
    if full:
        attrs = decode_attrs(full[0]["attrs"])
        wrong = [k for k, v in expected.items() if str(h5_attr(v)) != str(h5_attr(attrs.get(k)))]
        if wrong:
            raise ValueError(f"{out_path}: its parts were computed for something else ({', '.join(wrong)} differ); "
                             "rerun the workflow to recompute them")


def encode_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """An output's attributes as JSON, exactly as they are stored (:func:`decode_attrs` gives back
    values that :func:`write_h5_attrs` writes as the same bytes: numpy scalars keep their dtype)."""
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        value = h5_attr(value)
        if isinstance(value, np.generic):
            out[key] = {"numpy": value.dtype.str, "value": value.item()}
        elif isinstance(value, (str, bool, int, float)):
            out[key] = value
        else:
            raise TypeError(f"attribute {key}={value!r} ({type(value).__name__}) cannot be passed between jobs")
    return out


def decode_attrs(encoded: dict[str, Any]) -> dict[str, Any]:
    return {key: np.dtype(value["numpy"]).type(value["value"]) if isinstance(value, dict) else value
            for key, value in encoded.items()}


@contextlib.contextmanager
def _sole_writer(parts: Path, out_path: Path):
    """Hold an exclusive lock on the output's checkpoint folder while writing it.

    One Snakemake job writes each output, but a job outlives a Snakemake killed on its own (kill -9
    of the snakemake PID only): the rerun's job would then share the checkpoint shards with the
    orphan. It fails at once instead, naming the process to wait for or kill."""
    parts.mkdir(parents=True, exist_ok=True)
    lock = LockFile(parts / "writer.lock")
    if not lock.acquire():
        holder = lock.holder
        raise RuntimeError(
            f"{out_path} is being written by another process (pid {holder}), e.g. a job left running by a "
            f"Snakemake that was killed on its own. Wait for it to finish or kill it (kill {holder}), then rerun."
        )
    try:
        yield
    finally:
        lock.release()


def _extract(network, transform, root, run: _Run, parts: Path, first: int, end: int, *, device,
             batch_size: int, num_workers: int, progress: bool, timings: dict[str, float]) -> None:
    """Compute the checkpoint shards ``[first, end)`` of ``run`` into ``parts``, resuming after the
    last whole one there."""
    n, ids, shard_rows = run.n, run.ids, run.shard_rows
    stored = stored_arrays(run.attrs)
    features_dtype = run.features_dtype
    done = _resume_point(parts, run.run_key, first, end, run.n_shards, shard_rows, n)
    if done > first:
        log.info("resuming %s after %d of %d checkpoint shards", run.out_path, done - first, end - first)

    network.eval().to(device)
    transform, normalize = split_transform(transform)
    forward = _Forward(network, device, normalize)
    start, stop = done * shard_rows, min(n, end * shard_rows)
    if start < stop:
        loader = DataLoader(
            ImageList(root, ids, transform, start=start, stop=stop), batch_size=batch_size, shuffle=False,
            num_workers=num_workers, collate_fn=collate, pin_memory=device.type == "cuda",
            persistent_workers=False, prefetch_factor=4 if num_workers else None,
        )
        buffer: dict[str, list] = {"logits": [], "features": [], "index": [], "bad": []}
        shard = done
        bar = tqdm(total=stop - first * shard_rows, initial=start - first * shard_rows, unit="img",
                   desc=run.out_path.stem, disable=not progress, mininterval=5)
        timings.setdefault("forward_s", 0.0)
        for images, good_idx, bad in loader:
            timings.setdefault("first_batch", time.time())
            if images is not None:
                t0 = time.perf_counter()
                logits, features = forward(images)  # returns host arrays: the device is done
                timings.setdefault("first_forward_s", time.perf_counter() - t0)  # incl. a lazy torch.compile
                timings["forward_s"] += time.perf_counter() - t0
                # An array not stored is kept as (rows, 0): the checkpoint shards keep one layout.
                buffer["logits"].append(logits if "logits" in stored else logits[:, :0])
                buffer["features"].append((features if "features" in stored else features[:, :0]).astype(features_dtype))
                buffer["index"].extend(good_idx)
            buffer["bad"].extend(bad)
            bar.update(len(good_idx) + len(bad))
            filled = len(buffer["index"]) + len(buffer["bad"])
            if filled == shard_rows or shard * shard_rows + filled == stop:
                _flush(parts, shard, buffer)
                if faults.FAULT:
                    faults.at(f"extract-shard:{shard}")
                shard += 1
                buffer = {"logits": [], "features": [], "index": [], "bad": []}
        bar.close()


def _resume_point(parts: Path, run_key: str, first: int, end: int, n_shards: int, shard_rows: int, n: int) -> int:
    """The first checkpoint shard of ``[first, end)`` still to compute: those of another run are
    deleted, and so is the first damaged one and everything after it."""
    key_file = parts / "run-key"
    if not key_file.exists() or key_file.read_text() != run_key:
        stale = sorted(parts.glob("shard-*.npz"))
        if stale:
            log.info("discarding %d checkpoint shards of a different run in %s", len(stale), parts)
        for path in stale:  # the folder itself stays: it holds this writer's lock
            path.unlink()
        key_file.write_text(run_key)
    done = first
    while done < end and _shard_path(parts, done).exists():
        rows = shard_rows if done < n_shards - 1 else n - done * shard_rows
        problem = _shard_ok(_shard_path(parts, done), rows)
        if problem:
            # An empty or truncated shard (a power loss before it reached the disk, a copy): it and
            # every later one are recomputed.
            later = sorted(p for p in parts.glob("shard-*.npz") if p.name >= _shard_path(parts, done).name)
            log.warning("checkpoint shard %s is damaged (%s); recomputing from it (%d shard(s) discarded)",
                        _shard_path(parts, done), problem, len(later))
            for path in later:
                path.unlink()
            break
        done += 1
    return done


def _flush(parts: Path, shard: int, buffer: dict[str, list]) -> None:
    bad = buffer["bad"]
    _save_shard(
        _shard_path(parts, shard),
        logits=np.concatenate(buffer["logits"]) if buffer["logits"] else np.zeros((0, 0), np.float32),
        features=np.concatenate(buffer["features"]) if buffer["features"] else np.zeros((0, 0), np.float16),
        index=np.asarray(buffer["index"], dtype=np.int64),
        bad_index=np.asarray([i for i, _ in bad], dtype=np.int64),
        bad_reason=np.asarray([r for _, r in bad], dtype=str),
    )


def _assemble(shards: list[Path], folders: list[Path], out_path: Path, ids: list[str], labels: np.ndarray,
              attrs: dict[str, Any], on_bad_image: str, root) -> Path:
    """Write ``out_path`` from the checkpoint ``shards`` (in image order), then remove ``folders``
    (where they are); an extraction that must not be written removes them too."""
    bad: list[tuple[int, str]] = []
    n_good, n_classes, dim, fdtype = 0, 0, 0, np.float16
    nonfinite: dict[str, list[int]] = {"logits": [], "features": []}  # image indices, per array
    for path in shards:
        with np.load(path) as z:
            bad += list(zip(z["bad_index"].tolist(), z["bad_reason"].tolist()))
            n_good += len(z["index"])
            if len(z["index"]):
                n_classes, dim, fdtype = z["logits"].shape[1], z["features"].shape[1], z["features"].dtype
                for name in nonfinite:
                    nonfinite[name] += z["index"][nonfinite_rows(z[name])].tolist()

    def remove_folders():
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)

    if nonfinite["logits"] or nonfinite["features"]:
        remove_folders()  # nothing of this run is kept: the weights or the settings must change first
        raise _nonfinite_extraction(attrs, ids, nonfinite, fdtype, out_path)
    if bad and on_bad_image == "error":
        remove_folders()
        raise BadImagesError(str(root), [(ids[i], reason) for i, reason in bad])
    if n_good == 0:
        remove_folders()
        raise BadImagesError(str(root), [(ids[i], reason) for i, reason in bad] or [("(none)", "dataset is empty")])
    try:
        _write_output(shards, out_path, ids, labels, attrs, bad, n_good, n_classes, dim, fdtype)
    except (OSError, RuntimeError) as err:
        if _is_disk_full(err):
            raise _disk_full(out_path, err, "the checkpoint shards are kept, so only this file is assembled "
                                            "again (no forward pass).") from None
        raise
    remove_folders()
    if bad:
        log.warning("%d unreadable image(s) skipped and recorded in %s", len(bad), out_path)
    log.info("wrote %s (%d images)", out_path, n_good)
    return out_path


def _nonfinite_extraction(attrs: dict[str, Any], ids: list[str], nonfinite: dict[str, list[int]], fdtype,
                          out_path: Path) -> NonFiniteOutputError:
    """Why an extraction stopped: which model, dataset and how many images gave NaN/inf, and what to do."""
    what = " and ".join(f"{name} of {len(set(rows))} image(s)" for name, rows in nonfinite.items() if rows)
    affected = sorted(set(nonfinite["logits"]) | set(nonfinite["features"]))
    examples = ", ".join(ids[i] for i in affected[:5]) + (", ..." if len(affected) > 5 else "")
    variant = f" ({attrs['variant']})" if attrs.get("variant") else ""
    if not nonfinite["logits"] and np.dtype(fdtype) == np.float16:
        hint = ("Only the features are affected and they are stored as float16, which overflows above 65,504: "
                "set extraction.features_dtype: float32 and rerun.")
    else:
        hint = ("Check the model's weights (a diverged fine-tune or a checkpoint saved after its loss became "
                "NaN gives NaN for every image); if only a few images are affected on a GPU, the bfloat16 "
                "autocast may overflow: compare with extraction.device: cpu. Rerun once fixed.")
    return NonFiniteOutputError(
        f"model {attrs.get('model', '?')} on dataset {attrs.get('dataset', '?')}{variant}: {len(affected)} of "
        f"{len(ids)} images gave NaN or infinite outputs ({what}; e.g. {examples}). Metrics would be wrong "
        f"(an all-NaN row scores as class 0), so nothing was written ({out_path} not made). {hint}"
    )


def _raw_bytes(data: np.ndarray):
    """The C-order bytes of a contiguous array without a copy; none for an empty one (a features-only
    model's (N, 0) logits: memoryview cannot cast a view with a zero in its shape)."""
    return memoryview(data).cast("B") if data.size else b""


def _digest(name: str, data) -> str:
    """sha256 of an array as a reader gets it back (dtype, shape, C-order bytes; strings as UTF-8)."""
    h = hashlib.sha256()
    if isinstance(data, np.ndarray) and data.dtype != object:
        data = np.ascontiguousarray(data)
        h.update(f"{name}|{data.dtype.str}|{data.shape}|".encode())
        h.update(_raw_bytes(data))
    else:
        h.update(f"{name}|str|{len(data)}|".encode())
        for x in data:
            b = x if isinstance(x, bytes) else str(x).encode("utf-8")
            h.update(b"%d:%s" % (len(b), b))
    return h.hexdigest()


class _RowDigest:
    """_digest of a 2-D array fed in row blocks (the shards), without holding the whole array."""

    def __init__(self, name: str, dtype, shape):
        self.h = hashlib.sha256(f"{name}|{np.dtype(dtype).str}|{tuple(shape)}|".encode())
        self.dtype = dtype

    def update(self, block: np.ndarray) -> None:
        self.h.update(_raw_bytes(np.ascontiguousarray(block, dtype=self.dtype)))

    def hexdigest(self) -> str:
        return self.h.hexdigest()


def _write_output(shards, out_path: Path, ids, labels, attrs, bad, n_good, n_classes, dim, fdtype) -> None:
    string = h5py.string_dtype("utf-8")
    shapes = {"logits": ((n_good, n_classes), np.float32), "features": ((n_good, dim), fdtype)}
    stored = [name for name in LARGE_ARRAYS if name in stored_arrays(attrs)]
    with atomic_path(out_path, durable=True) as tmp:  # after a power loss: whole or absent
        digests = {name: _RowDigest(name, shapes[name][1], shapes[name][0]) for name in stored}
        with h5py.File(tmp, "w") as f:
            large = {name: f.create_dataset(name, shapes[name][0], dtype=shapes[name][1], track_times=False)
                     for name in stored}
            keep = np.zeros(len(ids), dtype=bool)
            row = 0
            for path in shards:
                with np.load(path) as z:
                    k = len(z["index"])
                    if k:
                        for name, d in large.items():
                            d[row : row + k] = z[name]
                            digests[name].update(z[name])
                        keep[z["index"]] = True
                    row += k
            bad_sorted = sorted(bad)
            rest = {
                "labels": labels[keep],
                "ids": np.asarray([s for s, k in zip(ids, keep) if k], dtype=object),
                "skipped_ids": np.asarray([ids[i] for i, _ in bad_sorted], dtype=object),
                "skipped_reasons": np.asarray([r for _, r in bad_sorted], dtype=object),
            }
            for name, data in rest.items():
                if data.dtype == object:
                    f.create_dataset(name, data=data, dtype=string, shape=(len(data),), track_times=False)
                else:
                    f.create_dataset(name, data=data, track_times=False)
            checksums = {name: d.hexdigest() for name, d in digests.items()}
            checksums.update({name: _digest(name, f[name][()]) for name in rest})
            full = {**attrs, "format_version": FORMAT_VERSION, "n_images": int(n_good),
                    "n_skipped": len(bad_sorted), "features_dtype": np.dtype(fdtype).name,
                    "sha256": checksums}
            write_h5_attrs(f.attrs, full)


# ------------------------------------------------------------------------------------- reading
def _discard(path: Path) -> bool:
    """Remove a cached output that must not be used, so the next run recomputes it; False if it
    cannot be removed (a read-only results folder)."""
    from beyond_imagenet.extraction_jobs import forget_extracted

    forget_extracted(path)  # its key and group markers: the next run recomputes it
    with contextlib.suppress(OSError):
        path.unlink()
        return True
    return False


def _corrupt(path, why: str, remove: bool = True) -> CorruptOutputError:
    """Remove a damaged cached output (so the next run recomputes it) and say so."""
    path = Path(path)
    removed = _discard(path) if remove else False
    what = ("It was removed: run the same snakemake command again and it is recomputed (Snakemake "
            "re-extracts a missing output)." if removed else
            f"Remove it (rm {path}) and rerun the workflow to recompute it.")
    return CorruptOutputError(f"{path} is damaged and was not used: {why}. {what}")


def read_attrs(path: str | os.PathLike) -> dict[str, Any]:
    try:
        with h5py.File(path, "r") as f:
            return read_h5_attrs(f.attrs)
    except OSError as err:
        if not Path(path).is_file():
            raise
        # A truncated copy, a disk error, a file cut by a full disk outside this workflow.
        raise _corrupt(path, f"HDF5 cannot read it ({err})") from None


def check_attrs(path: str | os.PathLike, expected: dict[str, Any]) -> dict[str, Any]:
    """Refuse an output whose recorded identity differs from what the caller expects."""
    found = read_attrs(path)
    wrong = []
    for key, value in expected.items():
        want = h5_attr(value)
        have = found.get(key)
        if key == "arrays":  # holding more than is read is fine; lacking one a reader needs is not
            lacking = sorted(stored_arrays({"arrays": want}) - stored_arrays(found))
            if lacking:
                wrong.append(f"arrays: file has {', '.join(sorted(stored_arrays(found))) or 'none'}, lacks "
                             f"{', '.join(lacking)} (an evaluation of the study reads it now)")
            continue
        if isinstance(want, (int, float)) and not isinstance(want, bool):
            same = have is not None and not isinstance(have, str) and float(have) == float(want)
        else:
            same = str(have) == str(want)
        if not same:
            wrong.append(f"{key}: file has {have!r}, expected {want!r}")
    if wrong:
        raise StaleOutputError(
            f"{path} was made for something else and is not reused:\n  " + "\n  ".join(wrong)
            + f"\nDelete it (rm {path}) and rerun the workflow to recompute it."
        )
    return found


#: Rows of a large array (logits, features) read at once by :func:`stream_outputs`: about this many
#: bytes, so a metric job's memory does not grow with the dataset (3.75 M x 1,000 float32 logits of
#: ImageNet-C are 15 GB; one block is 32 MB).
BLOCK_BYTES = 32 * 2**20


def block_rows(row_bytes: int, block_bytes: int = BLOCK_BYTES) -> int:
    """How many rows of ``row_bytes`` each make one block (at least 1)."""
    return max(1, block_bytes // max(1, row_bytes))


def stream_outputs(path: str | os.PathLike, per_block: Callable[[dict[str, Any]], dict[str, np.ndarray]],
                   expected: dict[str, Any] | None = None, arrays: Sequence[str] = ("logits",),
                   ids_cache: dict[str, np.ndarray] | None = None,
                   block_bytes: int = BLOCK_BYTES) -> dict[str, Any]:
    """Read an output file once, in row blocks: its identity checked first (as :func:`read_outputs`),
    ``labels`` and ``ids`` whole (one value per image), the large ``arrays`` (logits, features)
    ``block_bytes`` at a time, each checked against its recorded sha256 while it streams.

    ``per_block({"logits": rows, "labels": rows, "ids": rows, "start": first row})`` turns each
    block into per-image arrays (correct, confidence, predicted class...); they are concatenated
    over the blocks and returned with ``attrs``, ``labels`` and ``ids``. Nothing returned is
    usable before every checksum matched: a mismatch raises (and removes the file) after the last
    block. ``ids_cache``: ids arrays by their recorded sha256, shared by the outputs of one job
    (every model's ids of a dataset are one array in memory, not one per model)."""
    attrs = check_attrs(path, expected) if expected else read_attrs(path)
    checksums = json.loads(attrs["sha256"]) if attrs.get("sha256") else {}
    out: dict[str, Any] = {"attrs": attrs}
    parts: dict[str, list[np.ndarray]] = {}
    try:
        with h5py.File(path, "r") as f:
            for name in (*arrays, "labels", "ids"):
                if name not in f:
                    raise _missing_array(path, name, attrs, f)
            shared = checksums.get("ids")
            out["labels"] = _read_whole(f, "labels", checksums)
            out["ids"] = ids_cache[shared] if ids_cache is not None and shared in ids_cache else \
                _read_whole(f, "ids", checksums)
            if ids_cache is not None and shared:
                ids_cache.setdefault(shared, out["ids"])
            datasets = {name: f[name] for name in arrays}
            digests = {name: _RowDigest(name, d.dtype, d.shape) for name, d in datasets.items()}
            nonfinite = dict.fromkeys(datasets, 0)  # rows with NaN/inf, per array (extract.nonfinite_rows)
            n = len(out["labels"])
            for name, d in datasets.items():
                if d.shape[0] != n:
                    raise ValueError(f"its {name!r} array has {d.shape[0]} rows for {n} labels")
            row_bytes = sum(int(np.prod(d.shape[1:], dtype=np.int64)) * d.dtype.itemsize for d in datasets.values())
            step = block_rows(row_bytes, block_bytes)
            for start in range(0, n, step):
                stop = min(n, start + step)
                block: dict[str, Any] = {"start": start, "labels": out["labels"][start:stop],
                                         "ids": out["ids"][start:stop]}
                for name, d in datasets.items():
                    block[name] = d[start:stop]
                    digests[name].update(block[name])
                    nonfinite[name] += int(nonfinite_rows(block[name]).sum())
                try:
                    reduced = per_block(block)
                except Exception as err:  # the reducer's own error: not a damaged file
                    raise _ReducerError(err) from err
                for key, value in reduced.items():
                    parts.setdefault(key, []).append(np.asarray(value))
            for name, digest in digests.items():
                if name in checksums and digest.hexdigest() != checksums[name]:
                    raise ValueError(_MISMATCH.format(name=name))
            bad = [(name, count) for name, count in nonfinite.items() if count]
    except _ReducerError as err:
        raise err.error from None
    except ValueError as err:
        raise _corrupt(path, str(err)) from None
    except OSError as err:
        raise _corrupt(path, f"HDF5 cannot read it ({err})") from None
    if bad:  # a file written before extraction refused non-finite outputs; its checksums matched
        raise nonfinite_output(path, bad[0][0], bad[0][1], len(out["labels"]))
    for key, blocks in parts.items():
        out[key] = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
    return out


class _ReducerError(Exception):
    """Carries an error of a caller's per-block function out of the reading's error handling."""

    def __init__(self, error: BaseException):
        super().__init__(str(error))
        self.error = error


_MISMATCH = ("its {name!r} array does not match the sha256 recorded when it was written "
             "(changed after it was written: bit rot, a bad copy, an edit)")


def _read_whole(f, name: str, checksums: dict[str, str]):
    """One array read whole and checked against its recorded sha256; strings decoded."""
    data = f[name][()]
    if name in checksums and _digest(name, data) != checksums[name]:
        raise ValueError(_MISMATCH.format(name=name))
    if h5py.check_string_dtype(f[name].dtype):  # ids, skipped_ids, skipped_reasons
        data = np.asarray([x.decode() if isinstance(x, bytes) else x for x in data], dtype=object)
    return data


def _missing_array(path, name: str, attrs: dict[str, Any], f) -> StaleOutputError:
    """A file without an array a reader needs: stored without it (``arrays`` records what the
    study's evaluations read when it was extracted), or (older files) the wrong array asked for."""
    stored = attrs.get("arrays")
    if stored is not None:
        return StaleOutputError(
            f"{path} has no {name!r} array: it was extracted when no evaluation of the study read it (it holds "
            f"{stored or 'no large array'}). Rerun the workflow: its extraction job reruns and stores it; or "
            f"delete it (rm {path}) to recompute it.")
    # not removed: the caller may have asked for the wrong array
    return _corrupt(path, f"it has no {name!r} array (it has {', '.join(sorted(f))})", remove=False)


def read_outputs(path: str | os.PathLike, expected: dict[str, Any] | None = None,
                 fields: Sequence[str] = ("logits", "labels", "ids")) -> dict[str, Any]:
    """Load an output file (read-only), checking its recorded identity first."""
    attrs = check_attrs(path, expected) if expected else read_attrs(path)
    out: dict[str, Any] = {"attrs": attrs}
    # Outputs written since checksums were recorded carry the sha256 of every array: a file
    # changed in place (bit rot, a bad copy) is refused instead of changing the metrics.
    checksums = json.loads(attrs["sha256"]) if attrs.get("sha256") else {}
    try:
        with h5py.File(path, "r") as f:
            for name in fields:
                if name not in f:
                    raise _missing_array(path, name, attrs, f)
                out[name] = _read_whole(f, name, checksums)
                if name in ("logits", "features") and (count := int(nonfinite_rows(out[name]).sum())):
                    raise nonfinite_output(path, name, count, len(out[name]))  # written before extraction refused it
    except ValueError as err:
        raise _corrupt(path, str(err)) from None
    except OSError as err:
        raise _corrupt(path, f"HDF5 cannot read it ({err})") from None
    return out

"""Getting a downloadable dataset onto disk: one or several verified files, then one folder.

A catalogue ``download:`` recipe is either one file (``url``, ``sha256``, ``size``) or a list of
``files`` (ImageNet-C's four or five tars; PUG's tarball plus its class map), each downloaded
(resumable, size/sha256-verified, atomic: :func:`beyond_imagenet.download.download`) and
optionally checked against a published md5. A file without a published checksum gets its sha256
recorded at first download (``<file>.sha256`` next to it) and verified on every later use.

:func:`unpack_dataset` then builds the dataset folder from all of them, all or nothing: archives
are extracted (path-checked) into one temporary folder, plain files (``extract: false``) are copied
to their ``dest``, and the folder is renamed into place when complete. :func:`fetch_dataset` does
both for one dataset (the workflow's ``fetch_dataset`` job, and ``python -m beyond_imagenet.prefetch``).

A ``huggingface`` recipe (ImageNet-Hard) names a dataset repository, a pinned revision and the
shards to take; :func:`fetch_huggingface_parquet` downloads them with ``huggingface_hub`` (which
verifies each LFS file's sha256) and writes images plus a ``labels.json``.
"""

from __future__ import annotations

import errno
import fnmatch
import io
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from beyond_imagenet.datasets import DatasetError, DatasetSpec
from beyond_imagenet.download import COMPLETE_MARKER, DownloadError, download, safe_extract
from beyond_imagenet.io import atomic_folder, md5_file

log = logging.getLogger(__name__)


def fetch_file(recipe: dict[str, Any], dest: str | os.PathLike, **options: Any) -> Path:
    """Download one recipe file to ``dest`` (resumable, verified); return ``dest``.

    ``url`` first, then each of ``mirrors`` (the same file: the same checksum applies) when the
    one before fails (host down, an HTML page instead of the file, a corrupt copy)."""
    dest = Path(dest)
    sha256 = recipe.get("sha256")
    record = None if sha256 else dest.with_name(dest.name + ".sha256")
    sources = [recipe["url"], *recipe.get("mirrors", [])]
    failures: list[tuple[str, DownloadError]] = []
    for url in sources:
        try:
            download(url, dest, sha256=sha256, size=recipe.get("size"), record_checksum=record, **options)
            break
        except DownloadError as err:
            failures.append((url, err))
            if len(failures) < len(sources):
                log.warning("download from %s failed (%s); trying the next mirror", url, err)
    else:
        if len(failures) == 1:
            raise failures[0][1]
        raise DownloadError(f"every source of {dest.name} failed:\n  "
                            + "\n  ".join(f"{url}: {err}" for url, err in failures))
    if recipe.get("md5"):
        found = md5_file(dest)
        if found != recipe["md5"].lower():
            quarantine = dest.with_name(dest.name + ".quarantine")
            os.replace(dest, quarantine)
            # The sha256 just recorded is that of the bad copy: a good download must not be held
            # to it.
            if record is not None:
                record.unlink(missing_ok=True)
            raise DownloadError(
                f"md5 mismatch for {recipe['url']}: expected {recipe['md5']}, got {found}. The file was moved "
                f"to {quarantine}; delete it and retry, or check the mirror."
            )
    return dest


def _move_into(src: Path, dst: Path) -> None:
    """Move the contents of ``src`` into ``dst``, merging folders that both have."""
    dst.mkdir(parents=True, exist_ok=True)
    for child in src.iterdir():
        if child.name == COMPLETE_MARKER:
            continue
        target = dst / child.name
        if child.is_dir() and not child.is_symlink() and target.is_dir():
            _move_into(child, target)
        else:
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(child, target)


def _extract(archive: Path, target: Path) -> Path:
    """safe_extract, and if the archive turns out corrupt or truncated, forget the checksum that
    was recorded for it at first download: that record is of the bad copy, and every good
    download after it would be quarantined against it. The archive is moved aside with it, so the
    next run downloads it again (a full disk keeps both: the archive is not at fault)."""
    try:
        return safe_extract(archive, target)
    except DownloadError as err:
        record = archive.with_name(archive.name + ".sha256")
        cause = err.__cause__
        if not record.exists() or (isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT)):
            raise
        quarantine = archive.with_name(archive.name + ".quarantine")
        os.replace(archive, quarantine)
        record.unlink()
        raise DownloadError(
            f"{err}\nIts sha256 was only recorded at its first download (no checksum is published), so that "
            f"record ({record}) was dropped with it and the file was moved to {quarantine}: rerun and it is "
            "downloaded again."
        ) from None


def unpack_dataset(spec: DatasetSpec, archives: list[str | os.PathLike], out: str | os.PathLike) -> Path:
    """Build ``out`` from the downloaded files of ``spec`` (or from its Hugging Face recipe)."""
    out = Path(out)
    archives = [Path(a) for a in archives]
    if spec.download and "huggingface" in spec.download:
        return fetch_huggingface_parquet(spec.download["huggingface"], out / spec.subdir, spec.expected_images)
    recipes = spec.download_files if spec.source == "download" else [{"filename": a.name} for a in archives]
    if len(archives) == 1 and recipes[0].get("extract", True):
        return _extract(archives[0], out)
    with atomic_folder(out) as tmp:  # also removes the -part<k> scratch folders, and those of a killed unpack
        for k, (archive, recipe) in enumerate(zip(archives, recipes, strict=True)):
            if recipe.get("extract", True):
                part = tmp.with_name(f"{tmp.name}-part{k}")
                _extract(archive, part)
                _move_into(part, tmp)
                shutil.rmtree(part)
            else:
                target = tmp / recipe.get("dest", recipe["filename"])
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(archive, target)
        (tmp / COMPLETE_MARKER).write_text("unpacked from " + ", ".join(a.name for a in archives) + "\n")
    log.info("unpacked %d file(s) into %s", len(archives), out)
    return out


def _recipe(spec: DatasetSpec) -> str:
    """What a downloaded dataset's folder is made from: each file's name and checksum (its URL when
    no checksum is known; a mirror of the same file changes nothing), or its hub recipe. A folder
    unpacked from another recipe (a study's new ``url:``/``sha256:``) is redone."""
    files = [{"filename": f["filename"], "sha256": f.get("sha256"), "md5": f.get("md5"),
              **({} if f.get("sha256") or f.get("md5") else {"url": f["url"]})} for f in spec.download_files]
    return json.dumps({"files": files, "huggingface": (spec.download or {}).get("huggingface")}, sort_keys=True) + "\n"


def recipe_record(spec: DatasetSpec) -> Path:
    """Where :func:`fetch_dataset` records the recipe a folder was unpacked from: beside the
    downloads (``<resources>/downloads/<dataset>/.unpacked.json``), not in the folder."""
    return Path(spec.resources_dir) / "downloads" / spec.name / ".unpacked.json"


def fetch_dataset(spec: DatasetSpec) -> Path:
    """Make a ``source: download`` dataset's folder ``spec.dataset_dir``: each recipe file downloaded
    (resumable, verified; a file already there and verified is not fetched again) to
    ``<resources>/downloads/<dataset>/``, then unpacked. A complete folder (its ``.complete``
    marker) unpacked from the same recipe is kept as it is (delete it to unpack again), as is one
    with no recipe record (an earlier version's); downloads and folder are shared by every study on
    the same resources folder, so no study redoes them."""
    out, record = spec.dataset_dir, recipe_record(spec)
    if (out / COMPLETE_MARKER).is_file():
        if not record.is_file() or record.read_text() == _recipe(spec):
            log.info("dataset %s: already unpacked in %s", spec.name, out)
            return out
        log.info("dataset %s: %s was unpacked from another recipe (%s); fetching and unpacking it again",
                 spec.name, out, record.read_text().strip())
        shutil.rmtree(out)
    for recipe, dest in zip(spec.download_files, spec.archive_paths, strict=True):
        dest.parent.mkdir(parents=True, exist_ok=True)
        log.info("dataset %s: %s -> %s", spec.name, recipe["url"], dest)
        fetch_file(recipe, dest)
    unpack_dataset(spec, spec.archive_paths, out)
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(_recipe(spec))
    return out


# ------------------------------------------------------------------------------ Hugging Face
_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "MPO": "jpg"}


def _image_extension(data: bytes) -> str:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return _EXTENSIONS.get(image.format or "", "img")


def fetch_huggingface_parquet(recipe: dict[str, Any], root: str | os.PathLike,
                              expected: int | None = None) -> Path:
    """Download the pinned parquet shards of a HF dataset and write ``images/`` + ``labels.json``.

    ``recipe``: ``repo`` (dataset repository), ``revision`` (a commit: the content is pinned),
    ``files`` (glob of the shards, e.g. ``data/validation-*.parquet``), and the column names
    ``image`` / ``labels`` plus ``extra`` columns copied into labels.json. Image bytes are written
    as they are (no re-encoding), named by row order across the sorted shards.
    """
    try:
        from huggingface_hub import HfApi, hf_hub_download
    except ImportError:
        raise DatasetError("downloading from Hugging Face needs huggingface_hub: pip install huggingface_hub") from None
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DatasetError("reading the Hugging Face parquet shards needs pyarrow: pip install pyarrow") from None
    root = Path(root)
    repo, revision = recipe["repo"], recipe["revision"]
    try:
        names = HfApi().list_repo_files(repo, repo_type="dataset", revision=revision)
    except Exception as err:  # offline, repo moved, revision gone: say which
        raise DatasetError(
            f"cannot list https://huggingface.co/datasets/{repo} at revision {revision}: {err}. This needs "
            "internet access (and HF_TOKEN if the repository is gated)."
        ) from err
    shards = sorted(n for n in names if fnmatch.fnmatch(n, recipe["files"]))
    if not shards:
        raise DatasetError(f"{repo}@{revision}: no file matches {recipe['files']!r}")
    entries = []
    with atomic_folder(root) as tmp:
        for shard in shards:
            local = hf_hub_download(repo, shard, repo_type="dataset", revision=revision)
            log.info("reading %s", shard)
            table = pq.read_table(local)
            for row in table.to_pylist():
                image = row[recipe.get("image_column", "image")]
                data = image["bytes"] if isinstance(image, dict) else image
                file = f"images/{len(entries):05d}.{_image_extension(data)}"
                (tmp / file).parent.mkdir(parents=True, exist_ok=True)
                (tmp / file).write_bytes(data)
                labels = row[recipe.get("labels_column", "label")]
                entry = {"file": file, "labels": [int(v) for v in labels]}
                entry.update({c: row.get(c) for c in recipe.get("extra", [])})
                entries.append(entry)
        if expected and len(entries) != expected:
            raise DatasetError(f"{repo}@{revision}: {len(entries)} images, expected {expected}")
        meta = {"source": f"https://huggingface.co/datasets/{repo}", "revision": revision, "shards": shards,
                "images": entries}
        (tmp / "labels.json").write_text(json.dumps(meta, indent=1))
    (root.parent / COMPLETE_MARKER).write_text(f"{repo}@{revision}\n")
    log.info("wrote %d ImageNet-Hard images and labels.json to %s", len(entries), root)
    return root.parent

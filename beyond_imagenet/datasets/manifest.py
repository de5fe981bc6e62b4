"""Manifests: the ordered sample list of a dataset, fingerprinted, written once per dataset.

Extraction reads the manifest instead of walking the folder again, so every model sees the same
images in the same order, and the fingerprint recorded in each output ties it to this list.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from beyond_imagenet.datasets import DatasetError, DatasetSpec
from beyond_imagenet.datasets.readers import read_samples
from beyond_imagenet.io import atomic_write_text

log = logging.getLogger(__name__)


def fingerprint(root: Path, samples: list[tuple[str, int]]) -> str:
    """sha256 over (id, label, file size): changes when files are added, removed, relabelled or resized.
    A file that cannot be stat'ed (a dangling symlink: a bad image, reported at extraction) counts as -1."""
    h = hashlib.sha256()
    for sid, label in samples:
        try:
            size = os.stat(root / sid).st_size
        except OSError:
            size = -1
        h.update(f"{sid}\t{label}\t{size}\n".encode())
    return h.hexdigest()


def folder_signature(root: str | os.PathLike) -> str:
    """A digest of a folder's contents as seen by stat: the name, size and modification time of
    every file (symlinks followed) and the modification time of every folder below ``root``.
    Adding, removing or renaming a file changes it, and so does overwriting a file in place
    (``cp good.JPEG bad.JPEG`` changes its mtime). One stat per file: the entries come from
    ``os.scandir`` (ImageNet val: 50,000 stats).

    A params value of the manifest rule of *manual* datasets, so a manifest is rebuilt when the
    user's folder changes (Snakemake tracks no input there). Folders the workflow writes itself
    are tracked as its outputs instead. It never raises: what cannot be read (an unreadable folder,
    a dangling symlink, a symlink loop) enters the digest as its error, and the manifest step that
    this reruns names it."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        return "missing"
    h = hashlib.sha256()
    stack = [(root, b".")]
    while stack:
        folder, name = stack.pop()
        try:
            h.update(b"D\t%s\t%d\n" % (name, os.stat(folder).st_mtime_ns))
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as err:
            h.update(b"E\t%s\t%s\n" % (name, type(err).__name__.encode()))
            continue
        below = []
        for entry in entries:
            rel = name + b"/" + os.fsencode(entry.name)
            if entry.is_dir(follow_symlinks=False):
                below.append((entry.path, rel))
                continue
            try:
                st = entry.stat()  # follows a symlink: a changed target counts
                h.update(b"F\t%s\t%d\t%d\n" % (rel, st.st_size, st.st_mtime_ns))
            except OSError as err:
                h.update(b"E\t%s\t%s\n" % (rel, type(err).__name__.encode()))
        stack.extend(reversed(below))
    return h.hexdigest()


def build_manifest(spec: DatasetSpec) -> dict[str, Any]:
    root = spec.root
    if not root.is_dir():
        raise DatasetError(f"datasets.{spec.name}: folder {root} does not exist.\n{spec.instructions()}")
    if spec.reader == "labelled_folder":  # class names, splits and k-shot subsets too
        from beyond_imagenet.datasets.labelled import build_labelled_manifest

        return build_labelled_manifest(spec)
    samples = read_samples(spec.reader, root, spec.class_space)
    if spec.source != "generate" and spec.expected_images and len(samples) != spec.expected_images:
        raise DatasetError(
            f"datasets.{spec.name}: {root} holds {len(samples)} files, expected {spec.expected_images} "
            f"for {spec.kind}. The copy is incomplete or has extra files.\n{spec.instructions()}"
        )
    n_full = len(samples)
    subset = dict(spec.subset) if spec.subset else None
    if subset:
        samples = draw_subset(samples, subset)
        log.info("%s: subset %s: %d of %d samples", spec.name, subset, len(samples), n_full)
    log.info("%s: %d samples under %s", spec.name, len(samples), root)
    return manifest_record(spec, samples, n_full, json.dumps(subset, sort_keys=True) if subset else "")


def manifest_record(spec: DatasetSpec, samples: list, n_full: int, subset: str = "") -> dict[str, Any]:
    """The fields every manifest has (a reader of a richer layout adds its own after them)."""
    return {
        "dataset": spec.name,
        "kind": spec.kind,
        "class_space": spec.class_space,
        "root": stored_root(spec.root),
        "n_images": len(samples),
        "n_images_full": n_full,
        "subset": subset,
        "fingerprint": fingerprint(spec.root, samples),
        "samples": samples,
    }


def draw_subset(samples: list[tuple[str, int]], subset: dict[str, int]) -> list[tuple[str, int]]:
    """A seeded slice of the (full, strictly checked) sample list, in the list's own order:
    ``images: N`` = N samples drawn uniformly without replacement; ``per_class: K`` = K of each
    class (all of a class with fewer). ``seed`` (default 0) picks the draw."""
    import numpy as np

    rng = np.random.default_rng(subset.get("seed", 0))
    if "images" in subset:
        n = min(int(subset["images"]), len(samples))
        keep = set(rng.choice(len(samples), size=n, replace=False).tolist())
    else:
        by_class: dict[int, list[int]] = {}
        for i, (_, label) in enumerate(samples):
            by_class.setdefault(label, []).append(i)
        keep = set()
        for label in sorted(by_class):
            members = by_class[label]
            k = min(int(subset["per_class"]), len(members))
            keep.update(np.asarray(members)[rng.choice(len(members), size=k, replace=False)].tolist())
    return [s for i, s in enumerate(samples) if i in keep]


def write_manifest(manifest: dict[str, Any], path: str | os.PathLike) -> None:
    atomic_write_text(path, json.dumps(manifest, separators=(",", ":")))


def stored_root(root: Path) -> str:
    """The dataset folder as a manifest records it: as the study gives it. A relative root (every
    generated and downloaded dataset under ``resources_dir``, a ``root:`` inside the project) stays
    relative to the working directory, so a copied (``cp -a``) or moved project reads its own images;
    an absolute one (a shared ImageNet copy) is absolute wherever the project is."""
    root = Path(root)
    return str(root.resolve()) if root.is_absolute() else os.path.normpath(root)


def load_manifest(path: str | os.PathLike, images: bool = False) -> dict[str, Any]:
    """A manifest, its ``root`` made absolute (a relative one is relative to the working directory:
    the workflow's, in every job). ``images``: the caller reads the images, so a root that does
    not exist is refused here, once, naming the manifest (not once per image at decode)."""
    with open(path) as f:
        manifest = json.load(f)
    manifest["samples"] = [(s, int(l)) for s, l in manifest["samples"]]
    manifest["root"] = os.path.abspath(manifest["root"])
    if images and not os.path.isdir(manifest["root"]):
        raise DatasetError(
            f"{path}: dataset {manifest.get('dataset', '?')!r} lists its images under {manifest['root']}, which does "
            "not exist (the project or the dataset folder was moved or renamed since the manifest was written; "
            "manifests written before this check recorded absolute paths). Delete the manifest and rerun: it is "
            "rebuilt from the study's dataset entry (fix its `root:` first if the folder moved), and the "
            "outputs of that dataset are recomputed from the images found there."
        )
    return manifest

"""The disk a study's cached outputs take, known before it starts (README "Disk").

Every extraction output of the study (``Study.extraction_plan``: standard outputs and variants)
holds ``labels``, ``ids`` and only the large arrays some evaluation reads (``Study.stored_arrays``):
ImageNet-1k logits (1,000 float32 per image) and / or features (the model's embedding width x
``extraction.features_dtype``). Image counts come from the dataset's manifest once it is built,
before that from the catalogue (``expected_images``: the counts of docs/datasets.md) or, for
generated sets, from their recipe.

* :func:`estimate_rows`: one row per output (model, dataset, variant, images, bytes);
* :func:`required_bytes`: what is still to be written (outputs not present yet) plus the
  checkpoint shards of the largest of them, which exist beside it while it is assembled;
* :func:`check_free_space`: the Snakefile's ``onstart`` check (prints the estimate, stops the
  run when the free disk under ``results_dir`` is smaller).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from beyond_imagenet.study import Study

#: ImageNet-1k logits per image: 1,000 float32.
LOGIT_BYTES = 1000 * 4
#: labels (int64) and one id (an HDF5 variable-length string: its text, ~50 bytes for ImageNet-C's
#: "<corruption>/<severity>/<wnid>/ILSVRC2012_val_XXXXXXXX.JPEG", and heap overhead) per image.
ROW_BYTES = 8 + 64
#: HDF5 header, attributes (identity, checksums, versions) and the skipped lists of one file.
FILE_BYTES = 16 * 1024
#: Images per generated (default-study-like) set per class, for sets that multiply it.
_GENERATED_FACTOR = {"imagenet_c": 75, "imagenet_c_all": 95, "pug_imagenet": 10}


class DiskSpaceError(RuntimeError):
    """The free disk under results_dir is smaller than what the run still writes."""


def image_count(study: Study, dataset: str, variant: str | None = None, model: str | None = None) -> int:
    """Images of one output: the manifest's count once built, else the catalogue's or the recipe's;
    a variant's is capped by the image subset its evaluation records (invariance: ``max_images``).
    ``model``: whose variant it is (a variant need not exist for every model, e.g. scale 1 of a
    CLIP model only); default the study's first."""
    spec = study.datasets[dataset]
    manifest = Path(study.manifest(dataset))
    n = None
    if manifest.is_file():
        try:
            n = int(json.loads(manifest.read_text())["n_images"])
        except (OSError, ValueError, KeyError):
            n = None
    if n is None:
        n = _expected_count(study, spec)
    if variant:
        owner = model or next(iter(study.models))
        cap = int(study.output_identity(owner, dataset, variant).get("max_images") or 0)
        n = min(n, cap) if cap else n
    return n


def _expected_count(study: Study, spec) -> int:
    subset = dict(spec.subset or ())
    if getattr(spec, "parent", ""):  # a VTAB task split
        parent = study.datasets[spec.parent]
        if spec.parent_source == "generate":
            return int(dict(parent.split_sizes)[spec.split])
        if spec.split == "test":
            from beyond_imagenet.datasets.vtab import TASKS

            return int(TASKS[spec.task].test_size)
        return int(spec.expected_images or 0)
    if spec.source == "generate":
        classes = spec.num_classes or 16
        return classes * spec.images_per_class * _GENERATED_FACTOR.get(spec.kind, 1)
    if "images" in subset:
        return min(int(subset["images"]), int(spec.expected_images or subset["images"]))
    return int(spec.expected_images or 0)


def feature_dim(study: Study, model: str) -> int:
    """The width of ``model``'s features: read from an output of it holding them if one exists,
    else from its architecture (timm: built on the meta device, no weights; open_clip: its config)."""
    for dataset, variant in (x for items in study.extraction_plan(model).values() for x in items):
        path = Path(study.output(model, dataset, variant))
        if path.is_file():
            try:
                import h5py

                with h5py.File(path, "r") as f:
                    if "features" in f:
                        return int(f["features"].shape[1])
            except OSError:
                continue
    spec = study.models[model]
    if spec.source == "python":  # learned by the first job that built it; a wide guess until then
        from beyond_imagenet.model_specs import known_fact, loader_sha256, python_features_key

        known = known_fact("python", python_features_key(spec.loader, loader_sha256(spec.loader), spec.loader_args))
        return int(known) if known else PYTHON_FEATURES_GUESS
    return _architecture_dim(spec.source, spec.arch)


#: The feature width assumed for a python model before a job has built it (ResNet-50's 2,048).
PYTHON_FEATURES_GUESS = 2048


@functools.cache
def _architecture_dim(source: str, arch: str) -> int:
    if source == "open_clip":
        import open_clip

        from beyond_imagenet.models import _register_bundled_open_clip_configs

        _register_bundled_open_clip_configs()
        return int(open_clip.get_model_config(arch)["embed_dim"])
    import timm
    import torch

    with torch.device("meta"):
        network = timm.create_model(arch, pretrained=False, num_classes=0)
    # forward_head(pre_logits=True): the head's hidden width where it has one, else num_features
    return int(getattr(network, "head_hidden_size", None) or network.num_features)


def estimate_rows(study: Study) -> list[dict[str, Any]]:
    """One row per extraction output of the study: ``model``, ``dataset``, ``variant`` ("" for the
    standard output), ``images``, ``bytes`` (its estimated size on disk), ``arrays`` (what it
    holds) and ``present`` (whether the file exists already)."""
    features_bytes = np.dtype(study.config["extraction"]["features_dtype"]).itemsize
    rows = []
    for model in study.models:
        dims: dict[str, int] = {}
        for group in study.extraction_plan(model).values():
            for dataset, variant in group:
                arrays = study.stored_arrays(model, dataset, variant)
                path = Path(study.output(model, dataset, variant))
                images = image_count(study, dataset, variant, model)
                per_image = ROW_BYTES
                if "logits" in arrays:
                    per_image += LOGIT_BYTES
                if "features" in arrays:
                    if model not in dims:
                        dims[model] = feature_dim(study, model)
                    per_image += dims[model] * features_bytes
                present = path.is_file()
                size = path.stat().st_size if present else FILE_BYTES + images * per_image
                rows.append({"model": model, "dataset": dataset, "variant": variant or "", "images": images,
                             "bytes": int(size), "arrays": ",".join(arrays), "present": present})
    return rows


def required_bytes(study: Study, rows: list[dict[str, Any]] | None = None) -> int:
    """Bytes the study still writes: every output not present yet, plus the checkpoint shards of
    the largest of them (they coexist with the file while it is assembled)."""
    missing = [r["bytes"] for r in (estimate_rows(study) if rows is None else rows) if not r["present"]]
    return sum(missing) + max(missing, default=0)


def free_bytes(path: str | os.PathLike) -> int:
    """Free bytes on the file system of ``path`` (its nearest existing parent folder)."""
    path = Path(path).resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"  # pragma: no cover


def summary(study: Study, rows: list[dict[str, Any]] | None = None) -> str:
    """The short per-study table printed before a run: per dataset (all models), images per output,
    outputs, the arrays they hold, total and still-to-write bytes."""
    rows = estimate_rows(study) if rows is None else rows
    by_dataset: dict[str, dict[str, Any]] = {}
    for r in rows:
        # a VTAB task split is counted under its study dataset
        name = (getattr(study.datasets[r["dataset"]], "parent", "") or r["dataset"]) + ("@variants" if r["variant"] else "")
        entry = by_dataset.setdefault(name, {"images": 0, "outputs": 0, "arrays": set(), "bytes": 0, "todo": 0})
        entry["images"] += r["images"]
        entry["outputs"] += 1
        entry["arrays"].update(a for a in r["arrays"].split(",") if a)
        entry["bytes"] += r["bytes"]
        entry["todo"] += 0 if r["present"] else r["bytes"]
    n_models = max(1, len(study.models))
    title = (f"Disk estimate of the cached outputs of study {study.config.get('study', '')!r} "
             f"({len(study.models)} models, {study.results}/):")
    lines = [title,
             f"  {'dataset':<24} {'images/model':>12} {'outputs':>7}  {'arrays':<16} {'total':>9} {'to write':>9}"]
    for name, e in by_dataset.items():
        lines.append(f"  {name:<24} {e['images'] // n_models:>12,} {e['outputs']:>7}  "
                     f"{','.join(sorted(e['arrays'])) or '-':<16} {human(e['bytes']):>9} {human(e['todo']):>9}")
    total = sum(r["bytes"] for r in rows)
    needed = required_bytes(study, rows)
    lines.append(f"  {'all':<24} {'':>12} {len(rows):>7}  {'':<16} {human(total):>9} {human(needed):>9} "
                 "(to write: with the checkpoint shards of the largest file)")
    return "\n".join(lines)


def check_free_space(study: Study, free: int | None = None, echo=print) -> int:
    """Print :func:`summary` and raise :class:`DiskSpaceError` when the free disk under
    ``results_dir`` (``free``: as measured, for tests) is smaller than :func:`required_bytes`.
    Returns the required bytes."""
    rows = estimate_rows(study)
    echo(summary(study, rows))
    needed = required_bytes(study, rows)
    free = free_bytes(study.results) if free is None else free
    if needed > free:
        raise DiskSpaceError(
            f"not enough free disk for study {study.config.get('study', '')!r}: its cached outputs still need about "
            f"{human(needed)} under {study.results}/ (table above), but only {human(free)} is free there. Free space "
            f"(df -h {study.results}), point results_dir at a larger disk, or run fewer models or datasets at once; "
            "no job was started.")
    return needed

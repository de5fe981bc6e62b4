"""Dataset registry: built-in kinds (``data/datasets.yaml``), readers, generators and manifests.

A study's dataset entry names a *kind* and a *source*; :func:`resolve_dataset` merges the two
into a :class:`DatasetSpec` that says where the data lives and how to read it. Readers turn a
dataset root into an ordered list of ``(id, label)`` samples with labels in the kind's own class
space; the same reader serves real and generated data because generators write the real layout.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from importlib import resources
from pathlib import Path
from typing import Any

import yaml


# Modules that register readers (@register_reader) and generators (@register_generator);
# a new dataset family adds its module here.
PLUGIN_MODULES = (
    "beyond_imagenet.datasets.readers",
    "beyond_imagenet.datasets.generate",
    "beyond_imagenet.datasets.imagenet_variants",
    "beyond_imagenet.datasets.vtab",
    "beyond_imagenet.datasets.labelled",
)


def load_plugins() -> None:
    import importlib

    for module in PLUGIN_MODULES:
        importlib.import_module(module)


def url_filename(url: str, dataset: str) -> str:
    """The file name a download is saved under: the last part of the URL's path, without its query
    (``.../vtab-1k.zip?download=true`` -> ``vtab-1k.zip``); ``<dataset>.download`` if the path has none
    (a Google Drive ``uc?id=...`` link: give ``filename:`` in the study then)."""
    from urllib.parse import unquote, urlsplit

    name = Path(unquote(urlsplit(url).path)).name
    return name if name and name not in ("uc", "download") else f"{dataset}.download"


class DatasetError(RuntimeError):
    """A dataset is missing, malformed or inconsistent; the message says what to do."""


@functools.lru_cache(maxsize=1)
def load_catalog() -> dict[str, dict[str, Any]]:
    """The built-in dataset kinds, keyed by kind name."""
    text = resources.files("beyond_imagenet.data").joinpath("datasets.yaml").read_text()
    return yaml.safe_load(text)


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    name: str
    kind: str
    source: str
    reader: str
    class_space: str
    subdir: str
    expected_images: int | None
    generator: str | None
    download: dict[str, Any] | None
    manual_root: str | None
    archive: str | None
    images_per_class: int
    num_classes: int | None
    seed: int
    resources_dir: str
    manual_text: str
    # A seeded slice of the dataset (``subset: {images: N}`` or ``{per_class: K}``, ``seed``), as
    # sorted (key, value) pairs; None = every image. Drawn by datasets/manifest.py.
    subset: tuple[tuple[str, int], ...] | None = None
    # A labelled folder of your own classes (datasets/labelled.py): the CSV of path,label[,split]
    # (None: class folders) and the ``splits:`` settings as sorted JSON text (None: the defaults).
    labels: str | None = None
    splits: str | None = None

    @property
    def dataset_dir(self) -> Path:
        """Directory holding the dataset in its layout (the root is ``dataset_dir/subdir``)."""
        if self.source == "generate":
            return Path(self.resources_dir) / "generated" / self.name
        return Path(self.resources_dir) / "datasets" / self.name

    @property
    def root(self) -> Path:
        """Folder the reader walks (class folders live directly below it)."""
        if self.source == "manual" and self.manual_root and not self.archive:
            return Path(self.manual_root)
        return self.dataset_dir / self.subdir

    @property
    def download_files(self) -> list[dict[str, Any]]:
        """The files of the download recipe (one ``url`` or a ``files`` list), each with a ``filename``.

        A ``huggingface`` recipe has none: it is fetched by the unpack step (the shard list is only
        known online)."""
        if self.source != "download" or not self.download or "huggingface" in self.download:
            return []
        files = self.download.get("files") or [self.download]
        return [{**f, "filename": f.get("filename") or url_filename(f["url"], self.name)} for f in files]

    def download_file(self, filename: str) -> dict[str, Any]:
        for recipe in self.download_files:
            if recipe["filename"] == filename:
                return recipe
        raise DatasetError(f"datasets.{self.name}: no download file named {filename!r}")

    @property
    def archive_paths(self) -> list[Path]:
        """Every file the dataset folder is made from (downloads, or the manual archive)."""
        if self.source == "manual":
            return [Path(self.archive)] if self.archive else []
        downloads = Path(self.resources_dir) / "downloads" / self.name
        return [downloads / f["filename"] for f in self.download_files]

    @property
    def archive_path(self) -> Path | None:
        paths = self.archive_paths
        return paths[0] if paths else None

    @property
    def unpacked(self) -> bool:
        """Whether the workflow builds ``dataset_dir`` (from archives or a hub download)."""
        return bool(self.archive_paths) or (self.source == "download" and bool(self.download))

    def instructions(self) -> str:
        default_root = Path(self.resources_dir) / "datasets" / self.name / self.subdir
        return self.manual_text.format(default_root=default_root).rstrip()


def resolve_dataset(name: str, entry: dict[str, Any], resources_dir: str = "resources") -> DatasetSpec:
    """Merge a study's dataset entry with its catalogue kind."""
    catalog = load_catalog()
    kind = entry["kind"]
    own_only = [key for key in ("labels", "splits") if key in entry]
    if entry.get("classes") == "own" and kind != "labelled_folder":
        if kind != "image_folder":
            raise DatasetError(f"datasets.{name}.classes: `classes: own` applies to kind image_folder only "
                               "(it is kind labelled_folder)")
        kind = "labelled_folder"  # image_folder with its own class names = a labelled folder
    elif entry.get("classes") == "imagenet1k" and kind != "image_folder":
        raise DatasetError(f"datasets.{name}.classes: `classes:` applies to kind image_folder only")
    if own_only and kind != "labelled_folder":
        raise DatasetError(f"datasets.{name}.{own_only[0]}: only a folder of your own classes (kind: labelled_folder, "
                           "or image_folder with classes: own) takes it")
    if kind == "labelled_folder" and entry.get("subset"):
        raise DatasetError(f"datasets.{name}.subset: a labelled folder is sliced by `splits:` (e.g. train: 5 "
                           "per class, k_shot: [1, 2]); drop subset")
    if kind not in catalog:
        raise DatasetError(
            f"datasets.{name}.kind: unknown dataset kind {kind!r}; known kinds: {', '.join(sorted(catalog))}"
        )
    info = catalog[kind]
    source = entry["source"]
    download = dict(info["download"]) if info.get("download") else None
    expected_images = info.get("expected_images")
    if entry.get("url"):
        if download and ("files" in download or "huggingface" in download):
            raise DatasetError(f"datasets.{name}.url: kind {kind!r} is made of several files; a single `url:` "
                               "cannot replace them (use source: manual with a root instead)")
        download = {**(download or {}), "url": entry["url"]}
        download.pop("mirrors", None)  # the study's own source replaces the catalogue's
        if entry.get("filename"):
            download["filename"] = entry["filename"]
        if entry.get("sha256") and entry["sha256"] != download.get("sha256"):
            # Another file than the catalogue's (a subset, a repack): its own checksum vouches for
            # it, and the catalogue's size and image count describe a different file.
            download["sha256"] = entry["sha256"]
            download.pop("size", None)
            download.pop("md5", None)
            expected_images = None
    if source == "download" and not download:
        raise DatasetError(
            f"datasets.{name}: kind {kind!r} has no download recipe; use source: manual with a root, "
            "or give `url:` (and `sha256:`)"
        )
    if info.get("requires_root") and (source != "manual" or not entry.get("root")):
        raise DatasetError(f"datasets.{name}: kind {kind!r} is a folder of your own: give `source: manual` and "
                           "`root:` (the folder holding the class folders)")
    if source == "generate" and not info.get("generator"):
        raise DatasetError(f"datasets.{name}: kind {kind!r} has no generator for source: generate")
    return DatasetSpec(
        name=name,
        kind=kind,
        source=source,
        reader=info["reader"],
        class_space=info["class_space"],
        subdir=info.get("subdir", ""),
        expected_images=expected_images,
        generator=info.get("generator"),
        download=download,
        manual_root=entry.get("root"),
        archive=entry.get("archive"),
        images_per_class=entry.get("images_per_class", 1),
        num_classes=entry.get("num_classes"),
        seed=entry.get("seed", 0),
        resources_dir=resources_dir,
        manual_text=info.get("manual", ""),
        subset=tuple(sorted(entry["subset"].items())) if entry.get("subset") else None,
        labels=entry.get("labels"),
        splits=json.dumps(entry["splits"], sort_keys=True) if entry.get("splits") else None,
    )

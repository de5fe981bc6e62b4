"""Small synthetic datasets in exactly the real layouts and file names (offline default study).

The same readers serve generated and real data, so the default study exercises the real code
paths: wnid folders, original ImageNet val file names (joined later with ImageNet-X / ReaL),
ImageNet-R rendition names. Images are real labelled photographs (datasets/photos.py): a set draws
its classes from the photographed ones, each image keeps its true label, and seeded augmented copies
fill the requested counts. ``random_image`` remains for sets whose classes are not ImageNet's (VTAB).
"""

from __future__ import annotations

import csv
import logging
from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from beyond_imagenet import classes
from beyond_imagenet.datasets import DatasetSpec
from beyond_imagenet.datasets.photos import photo
from beyond_imagenet.io import atomic_folder

log = logging.getLogger(__name__)

GENERATORS: dict[str, Callable[[DatasetSpec, Path, np.random.Generator], int]] = {}

IMAGENET_R_RENDITIONS = ("art", "cartoon", "deviantart", "embroidery", "graffiti", "graphic", "misc",
                         "origami", "painting", "sculpture", "sketch", "sticker", "tattoo", "toy", "videogame")


def register_generator(name: str):
    def wrap(fn):
        GENERATORS[name] = fn
        return fn

    return wrap


def _pick_classes(wnids: tuple[str, ...], num_classes: int | None) -> list[str]:
    """Up to ``num_classes`` of the space's classes that have a labelled photograph (all of those if
    unset); a generated set shows only real photographs under their true class."""
    from beyond_imagenet.datasets.photos import pick_photo_classes

    index = classes.wnid_to_index()
    picked = set(pick_photo_classes([index[w] for w in wnids], num_classes, "generated dataset"))
    return [w for w in wnids if index[w] in picked]


def random_image(rng: np.random.Generator, label: int) -> Image.Image:
    """A smooth random picture whose colour depends weakly on the class; sizes vary."""
    w, h = int(rng.integers(160, 400)), int(rng.integers(120, 320))
    base = np.array([(label * 37) % 256, (label * 91) % 256, (label * 53) % 256], dtype=np.float64)
    coarse = rng.normal(0, 60, size=(6, 8, 3)) + base
    image = Image.fromarray(np.clip(coarse, 0, 255).astype(np.uint8)).resize((w, h), Image.BILINEAR)
    noise = rng.normal(0, 12, size=(h, w, 3))
    return Image.fromarray(np.clip(np.asarray(image) + noise, 0, 255).astype(np.uint8))



def imagenet_val_file_names() -> dict[int, list[str]]:
    """Val file names per class index, from the imagenet-x package's filename_label.csv."""
    text = resources.files("imagenet_x").joinpath("annotations", "filename_label.csv").read_text()
    by_label: dict[int, list[str]] = {}
    for row in csv.DictReader(text.splitlines()):
        by_label.setdefault(int(row["label"]), []).append(row["file_name"])
    return {k: sorted(v) for k, v in by_label.items()}


@register_generator("imagenet_val")
def generate_imagenet_val(spec: DatasetSpec, out: Path, rng: np.random.Generator) -> int:
    names = imagenet_val_file_names()
    index = classes.wnid_to_index()
    n = 0
    for wnid in _pick_classes(classes.imagenet_wnids(), spec.num_classes):
        folder = out / spec.subdir / wnid
        folder.mkdir(parents=True, exist_ok=True)
        for j, file_name in enumerate(names[index[wnid]][: spec.images_per_class]):
            photo(index[wnid], j, rng).save(folder / file_name, format="JPEG", quality=90)
            n += 1
    return n


@register_generator("imagenet_r")
def generate_imagenet_r(spec: DatasetSpec, out: Path, rng: np.random.Generator) -> int:
    index = classes.wnid_to_index()
    n = 0
    for wnid in _pick_classes(classes.imagenet_r_wnids(), spec.num_classes):
        folder = out / spec.subdir / wnid
        folder.mkdir(parents=True, exist_ok=True)
        for j in range(spec.images_per_class):
            rendition = IMAGENET_R_RENDITIONS[(index[wnid] + j) % len(IMAGENET_R_RENDITIONS)]
            photo(index[wnid], j, rng).save(folder / f"{rendition}_{j}.jpg", format="JPEG", quality=90)
            n += 1
    return n


def generate(spec: DatasetSpec, out: str | Path) -> int:
    """Write the dataset under ``out`` (atomically: a temporary folder renamed at the end)."""
    from beyond_imagenet.datasets import load_plugins

    load_plugins()
    out = Path(out)
    if spec.generator not in GENERATORS:
        raise KeyError(f"no generator {spec.generator!r}")
    with atomic_folder(out) as tmp:
        n = GENERATORS[spec.generator](spec, tmp, np.random.default_rng(spec.seed))
    log.info("generated %d images for %s in %s", n, spec.name, out)
    return n

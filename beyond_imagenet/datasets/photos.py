"""Real labelled photographs for the generated sets (the offline default study).

The photographs are the 20 labelled ImageNet images that the pinned ``foolbox`` wheel ships as data
files (``foolbox/data/imagenet_NN_LABEL.jpg``, LABEL = ImageNet-1k index; the files are read, foolbox
is never imported). A generated set draws its classes from the labelled photographs available, and
every image keeps its true label: a photograph of class c only ever appears under class c. When a
set asks for more images of a class than there are photographs, augmented copies (a random crop of
60-100 % of the area, a horizontal flip, a small brightness / colour change; seeded) fill the count.

These are tiny real-image sets in the real layouts, not the benchmarks: their numbers show that
the pipeline gives a real model's answers, not the benchmark's results.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from beyond_imagenet.datasets import DatasetError

PHOTO_PACKAGE = "foolbox"
_NAME = re.compile(r"imagenet_(\d+)_(\d+)\.jpg$")


@functools.lru_cache(maxsize=1)
def labelled_photos() -> tuple[tuple[Path, int], ...]:
    """(file, ImageNet-1k label) of every labelled photograph, in file order."""
    from beyond_imagenet.checkpoints import CheckpointError, package_file

    try:  # the package's data folder, found without importing the package
        folder = package_file(PHOTO_PACKAGE, "data", "generated datasets' photographs")
    except CheckpointError as err:
        raise DatasetError(str(err)) from None
    photos = sorted((p, int(_NAME.search(p.name).group(2))) for p in folder.glob("imagenet_*_*.jpg")
                    if _NAME.search(p.name))
    if not photos:
        raise DatasetError(f"no labelled photographs imagenet_NN_LABEL.jpg in {folder}")
    return tuple(photos)


def photo_labels() -> list[int]:
    """The ImageNet-1k classes that have at least one photograph, ascending."""
    return sorted({label for _, label in labelled_photos()})


def photos_of(label: int) -> list[Path]:
    return [path for path, lab in labelled_photos() if lab == label]


def augment(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A seeded augmented copy: random crop (60-100 % of the area, aspect 3/4-4/3), maybe flipped,
    brightness and colour within +-15 %."""
    w, h = image.size
    area = rng.uniform(0.6, 1.0) * w * h
    aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    cw, ch = min(w, int(round(np.sqrt(area * aspect)))), min(h, int(round(np.sqrt(area / aspect))))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    out = image.crop((x, y, x + cw, y + ch))
    if rng.random() < 0.5:
        out = ImageOps.mirror(out)
    out = ImageEnhance.Brightness(out).enhance(rng.uniform(0.85, 1.15))
    return ImageEnhance.Color(out).enhance(rng.uniform(0.85, 1.15))


def photo(label: int, j: int, rng: np.random.Generator) -> Image.Image:
    """The j-th image of class ``label``: its photographs first, then augmented copies of them."""
    files = photos_of(label)
    if not files:
        raise DatasetError(f"no labelled photograph of ImageNet class {label}; photographed classes: {photo_labels()}")
    with Image.open(files[j % len(files)]) as f:
        image = f.convert("RGB")
    return image if j < len(files) else augment(image, rng)


def pick_photo_classes(candidates: list[int], num_classes: int | None, what: str) -> list[int]:
    """Up to ``num_classes`` of the ``candidates`` (class indices, in order) that have photographs,
    spread evenly over them; all of them if ``num_classes`` is unset or larger."""
    have = set(photo_labels())
    usable = [c for c in candidates if c in have]
    if not usable:
        raise DatasetError(f"{what}: none of its classes has a labelled photograph (photographed ImageNet "
                           f"classes: {sorted(have)}); generated sets need at least one")
    if not num_classes or num_classes >= len(usable):
        return usable
    return [usable[i] for i in np.linspace(0, len(usable) - 1, num_classes).round().astype(int)]


# ------------------------------------------------------------- a folder of "your own" classes
#: Coarse classes of one's own (not ImageNet's) over the photographs available offline, three
#: source photographs each: the foolbox ImageNet photographs (by file number) and photographs
#: shipped by scikit-image, scikit-learn and matplotlib (all project dependencies).
OWN_CLASSES: dict[str, tuple[str, ...]] = {
    "bird": ("foolbox:14", "foolbox:15", "foolbox:17"),  # spoonbill, goose, bald eagle
    "building": ("foolbox:05", "foolbox:08", "sklearn:china.jpg"),  # thatched roof, yurt, temple
    "person": ("skimage:astronaut.png", "skimage:camera.png", "matplotlib:grace_hopper.jpg"),
    "pet": ("foolbox:00", "foolbox:16", "skimage:chelsea.png"),  # bullmastiff, dalmatian, cat
    "plant": ("foolbox:03", "foolbox:04", "sklearn:flower.jpg"),  # horse chestnut seed, strawberry, flower
    "vehicle": ("foolbox:06", "foolbox:07", "skimage:motorcycle_left.png"),  # jeep, jeep, motorcycle
}


def _source_photo(source: str) -> Image.Image:
    from beyond_imagenet.checkpoints import package_file

    package, _, name = source.partition(":")
    if package == "foolbox":
        path = next(p for p, _ in labelled_photos() if p.name.startswith(f"imagenet_{name}_"))
    elif package == "skimage":
        path = package_file("skimage", f"data/{name}", "own-class photographs")
    elif package == "sklearn":
        path = package_file("sklearn", f"datasets/images/{name}", "own-class photographs")
    else:
        path = package_file("matplotlib", f"mpl-data/sample_data/{name}", "own-class photographs")
    with Image.open(path) as f:
        return f.convert("RGB")


def write_own_class_folder(root: str | Path, copies: int = 8, seed: int = 0) -> Path:
    """``root/<class>/<photo>_<j>.jpg``: for each of :data:`OWN_CLASSES`, its three photographs and
    ``copies - 1`` seeded augmented copies of each (j = 0 is the photograph itself). ``<photo>``
    names the source, so ``splits: {group_by: '^[^_]+'}`` keeps every copy of a photograph in one
    split (the probe is never tested on copies of its training photographs)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for cls, sources in OWN_CLASSES.items():
        folder = root / cls
        folder.mkdir(parents=True, exist_ok=True)
        for source in sources:
            image = _source_photo(source)
            stem = re.sub(r"[^A-Za-z0-9]+", "", source.split(":", 1)[1].rsplit(".", 1)[0]
                          if not source.startswith("foolbox") else f"foolbox{source[-2:]}")
            for j in range(copies):
                (image if j == 0 else augment(image, rng)).save(folder / f"{stem}_{j}.jpg", format="JPEG", quality=90)
    return root

"""Readers and generators of the sets scored with ImageNet-1k logits (docs/datasets.md §4-11).

ImageNet-V2, -A, -Sketch, -C, -Hard, PUG-ImageNet and the cue-conflict stimuli. Each reader turns
the set's real on-disk layout into ordered ``(id, label)`` samples; each generator writes a tiny
synthetic copy in exactly that layout (same folder and file naming), so the default study runs the
real reading code offline. Labels are in each set's own space:

* V2: the folder name *is* the ImageNet class index (``0`` .. ``999``); it is parsed as an integer,
  never taken from the enumeration order of the folders (string order puts ``10`` before ``2``).
* A (and R): sorted-wnid rank within the 200-class subset (``wnid_folders``).
* C: ``<corruption>/<severity>/<wnid>/ILSVRC2012_val_*.JPEG``; every (corruption, severity) must
  hold the same files, which catches a partially extracted archive.
* Hard: ``images/`` + ``labels.json`` (several valid ImageNet labels per image); the sample label
  is the first valid one, the metric uses the whole set (:func:`imagenet_hard_label_sets`).
* PUG: ``<Subset>/<Class>/<file>.png`` + ``class_to_imagenet_idx.json``; label = rank of the class
  name in sorted order (what an ImageFolder gives), names from the json.
* Cue-conflict: ``<shape>/<shape><i>-<texture><j>.png``; label = index of the shape category in
  the 16 sorted categories, ids keep the file names (the texture is parsed from them).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
from PIL import Image

from beyond_imagenet import classes
from beyond_imagenet.datasets import DatasetError, DatasetSpec
from beyond_imagenet.datasets.generate import (
    _pick_classes,
    imagenet_val_file_names,
    random_image,
    register_generator,
)
from beyond_imagenet.datasets.photos import photo, pick_photo_classes
from beyond_imagenet.datasets.readers import Sample, class_space_wnids, register_reader, sample_files, sub_folders
from beyond_imagenet.metrics.pug import PUG_SUBSETS
from beyond_imagenet.metrics.robustness import IMAGENET_C_CORRUPTIONS, IMAGENET_C_EXTRA, IMAGENET_C_SEVERITIES
from beyond_imagenet.metrics.shape_bias import CATEGORIES, parse_cue_conflict_name

HARD_LABELS_FILE = "labels.json"
PUG_CLASS_MAP_FILE = "class_to_imagenet_idx.json"


def _require_dir(root: Path) -> None:
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist or is not a directory")


def _dirs(path: Path) -> list[os.DirEntry]:
    return sub_folders(path)


def _files(path: str | Path) -> list[os.DirEntry]:
    """Files of a class folder, as readers.sample_files: dangling symlinks are (bad) samples."""
    return sample_files(path)


def _shown(names: list[str]) -> str:
    return ", ".join(names[:10]) + (" ..." if len(names) > 10 else "")


# ------------------------------------------------------------------------------------- readers
@register_reader("class_index_folders")
def read_class_index_folders(root: Path, class_space: str) -> list[Sample]:
    """``root/<class index>/<file>`` (ImageNet-V2): the label is ``int(folder name)``.

    Zero-padded names (``0000``, as in some mirrors) read the same. Folders are walked in numeric
    order so ids come out in label order.
    """
    root = Path(root)
    _require_dir(root)
    n_classes = len(class_space_wnids(class_space))
    folders = _dirs(root)
    # ASCII digits: \d also matches e.g. "١" (Arabic-Indic one), which int() reads as class 1.
    bad = [e.name for e in folders if not re.fullmatch(r"[0-9]+", e.name) or int(e.name) >= n_classes]
    if bad:
        raise DatasetError(
            f"{root}: {len(bad)} folder(s) are not class indices 0..{n_classes - 1}: {_shown(bad)}. "
            "ImageNet-V2 folders are named by class index; point the dataset at the folder holding them."
        )
    samples = [(f"{d.name}/{f.name}", int(d.name))
               for d in sorted(folders, key=lambda e: int(e.name)) for f in _files(d.path)]
    if not samples:
        raise DatasetError(f"{root}: no image files found in any class folder")
    return samples


def _check_corruption_folders(root: Path, required: tuple[str, ...]) -> None:
    present = [e.name for e in _dirs(root)]
    known = set(IMAGENET_C_CORRUPTIONS) | set(IMAGENET_C_EXTRA)
    unknown = [p for p in present if p not in known]
    if unknown:
        raise DatasetError(f"{root}: folder(s) that are not ImageNet-C corruptions: {_shown(unknown)}")
    missing = [c for c in required if c not in present]
    if missing:
        raise DatasetError(
            f"{root}: ImageNet-C corruption folder(s) missing: {_shown(missing)}. The 15 benchmark "
            "corruptions come from noise.tar, blur.tar, weather.tar and digital.tar, the 4 extra from extra.tar."
        )


def _read_imagenet_c(root: Path, class_space: str, corruptions: tuple[str, ...]) -> list[Sample]:
    root = Path(root)
    _require_dir(root)
    _check_corruption_folders(root, corruptions)
    index = {w: i for i, w in enumerate(class_space_wnids(class_space))}
    samples: list[Sample] = []
    reference: list[str] | None = None
    for corruption in corruptions:
        severities = sorted(e.name for e in _dirs(root / corruption))
        if severities != [str(s) for s in IMAGENET_C_SEVERITIES]:
            raise DatasetError(f"{root / corruption}: severity folders {severities}, expected 1..5")
        for severity in severities:
            folder = root / corruption / severity
            files = []
            for d in _dirs(folder):
                if d.name not in index:
                    raise DatasetError(f"{folder}: folder {d.name!r} is not a class of the {class_space} space")
                files += [f"{d.name}/{f.name}" for f in _files(d.path)]
            if reference is None:
                reference = files
            elif files != reference:
                extra, lost = sorted(set(files) - set(reference)), sorted(set(reference) - set(files))
                raise DatasetError(
                    f"{folder} holds {len(files)} files, {corruptions[0]}/1 holds {len(reference)}; "
                    f"missing: {_shown(lost)}; extra: {_shown(extra)}. The extraction is probably "
                    "incomplete: delete the dataset folder and unpack it again."
                )
            samples += [(f"{corruption}/{severity}/{f}", index[f.split("/", 1)[0]]) for f in files]
    if not samples:
        raise DatasetError(f"{root}: no image files found")
    return samples


@register_reader("imagenet_c")
def read_imagenet_c(root: Path, class_space: str) -> list[Sample]:
    """``root/<corruption>/<severity 1..5>/<wnid>/<file>`` for the 15 benchmark corruptions.

    Extra-corruption folders, if present, are left out (kind ``imagenet_c_all`` reads them).
    Every (corruption, severity) must hold the same files; ids keep the whole relative path.
    """
    return _read_imagenet_c(root, class_space, IMAGENET_C_CORRUPTIONS)


@register_reader("imagenet_c_all")
def read_imagenet_c_all(root: Path, class_space: str) -> list[Sample]:
    """As :func:`read_imagenet_c`, with the 4 extra corruptions required too."""
    return _read_imagenet_c(root, class_space, (*IMAGENET_C_CORRUPTIONS, *IMAGENET_C_EXTRA))


def imagenet_c_condition(sample_id: str) -> tuple[str, int]:
    """(corruption, severity) of an ImageNet-C sample id ``<corruption>/<severity>/<wnid>/<file>``."""
    corruption, severity = sample_id.split("/", 2)[:2]
    return corruption, int(severity)


def read_hard_labels(root: Path) -> list[dict]:
    path = Path(root) / HARD_LABELS_FILE
    if not path.is_file():
        raise DatasetError(
            f"{path} does not exist. ImageNet-Hard is read from images plus {HARD_LABELS_FILE}, which the "
            "workflow's download step writes from the pinned Hugging Face parquet shards."
        )
    data = json.loads(path.read_text())
    return data["images"]


@register_reader("image_label_sets")
def read_image_label_sets(root: Path, class_space: str) -> list[Sample]:
    """``root/labels.json`` listing ``{"file", "labels": [ImageNet indices], ...}`` (ImageNet-Hard).

    The sample label is the first valid (non-negative) index; :func:`imagenet_hard_label_sets`
    gives the whole set, which is what the accuracy uses.
    """
    root = Path(root)
    _require_dir(root)
    n_classes = len(class_space_wnids(class_space))
    samples: list[Sample] = []
    problems = []
    for entry in read_hard_labels(root):
        valid = [int(v) for v in entry["labels"] if int(v) >= 0]
        if not valid or max(valid) >= n_classes:
            problems.append(f"{entry['file']}: labels {entry['labels']}")
        elif not (root / entry["file"]).is_file():
            problems.append(f"{entry['file']}: file missing")
        else:
            samples.append((entry["file"], valid[0]))
    if problems:
        raise DatasetError(f"{root / HARD_LABELS_FILE}: {len(problems)} bad entries: {_shown(problems)}")
    if not samples:
        raise DatasetError(f"{root / HARD_LABELS_FILE}: lists no image")
    return samples


def imagenet_hard_label_sets(root: str | Path) -> dict[str, list[int]]:
    """Sample id → its valid ImageNet labels (padding dropped)."""
    return {e["file"]: [int(v) for v in e["labels"] if int(v) >= 0] for e in read_hard_labels(Path(root))}


def pug_class_map(root: str | Path) -> dict[str, list[int]]:
    """PUG class name → ImageNet indices, from the dataset root's ``class_to_imagenet_idx.json``."""
    path = Path(root) / PUG_CLASS_MAP_FILE
    if not path.is_file():
        raise DatasetError(
            f"{path} does not exist: PUG-ImageNet needs the class map from "
            "https://raw.githubusercontent.com/facebookresearch/PUG/main/PUG_ImageNet/class_to_imagenet_idx.json "
            "in the dataset root (the download step puts it there)."
        )
    return {name: [int(i) for i in idx] for name, idx in json.loads(path.read_text()).items()}


@register_reader("pug_subsets")
def read_pug_subsets(root: Path, class_space: str) -> list[Sample]:
    """``root/<Subset>/<Class>/<file>`` for the 10 factor subsets; label = sorted-name rank."""
    root = Path(root)
    _require_dir(root)
    names = sorted(pug_class_map(root))
    index = {n: i for i, n in enumerate(names)}
    missing = [s for s in PUG_SUBSETS if not (root / s).is_dir()]
    if missing:
        raise DatasetError(f"{root}: PUG-ImageNet subset folder(s) missing: {_shown(missing)}")
    samples: list[Sample] = []
    for subset in PUG_SUBSETS:
        for d in _dirs(root / subset):
            if d.name not in index:
                raise DatasetError(f"{root / subset}: class folder {d.name!r} is not in {PUG_CLASS_MAP_FILE}")
            samples += [(f"{subset}/{d.name}/{f.name}", index[d.name]) for f in _files(d.path)]
    if not samples:
        raise DatasetError(f"{root}: no image files found in the PUG subsets")
    return samples


@register_reader("cue_conflict")
def read_cue_conflict(root: Path, class_space: str) -> list[Sample]:
    """``root/<shape>/<shape><i>-<texture><j>.png``; label = shape category index (16 sorted)."""
    root = Path(root)
    _require_dir(root)
    samples: list[Sample] = []
    for d in _dirs(root):
        if d.name not in CATEGORIES:
            raise DatasetError(f"{root}: folder {d.name!r} is not one of the 16 cue-conflict categories")
        for f in _files(d.path):
            try:
                shape, _ = parse_cue_conflict_name(f.name)
            except ValueError as err:
                raise DatasetError(f"{root}/{d.name}: {err}") from None
            if shape != d.name:
                raise DatasetError(f"{root}/{d.name}/{f.name}: shape {shape!r} does not match its folder")
            samples.append((f"{d.name}/{f.name}", CATEGORIES.index(shape)))
    if not samples:
        raise DatasetError(f"{root}: no cue-conflict images found")
    return samples


# ---------------------------------------------------------------------------------- generators
def _save(image: Image.Image, path: Path, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)


def _square(rng: np.random.Generator, label: int, size: int = 224, j: int = 0) -> Image.Image:
    """A photograph of class ``label`` as ImageNet-C's files are made: Resize(256) -> CenterCrop(224)."""
    from torchvision.transforms import functional as TF

    image = TF.resize(photo(label, j, rng), int(size * 256 / 224), interpolation=TF.InterpolationMode.BILINEAR)
    return TF.center_crop(image, [size, size])


def corrupt(image: Image.Image, corruption: str, severity: int, seed: int) -> Image.Image:
    """ImageNet-C's own corruption function ``corruption`` (the imagecorruptions package, maintained
    fork) at ``severity``, reproducible under ``seed``."""
    try:
        import inspect

        from imagecorruptions import corrupt as corrupt_array
        from imagecorruptions.corruptions import __dict__ as functions
    except ImportError as err:
        raise DatasetError(
            f"generating ImageNet-C needs the imagecorruptions package ({err}); install the pinned "
            "environment (make setup: requirements.lock, then requirements-nodeps.txt)") from None
    # Most draw from numpy's global generator; impulse noise (skimage) and glass blur (numba) take
    # their own seed, without which they are not reproducible.
    extra = {"seed": seed} if "seed" in inspect.signature(functions[corruption]).parameters else {}
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        return Image.fromarray(np.uint8(corrupt_array(np.asarray(image), corruption_name=corruption,
                                                      severity=severity, **extra)))
    finally:
        np.random.set_state(state)


@register_generator("imagenet_v2")
def generate_imagenet_v2(spec: DatasetSpec, out: Path, rng: np.random.Generator) -> int:
    """Class-index folders whose string order differs from their numeric order (0, 1, 3, 9, 20, ...)."""
    picked = pick_photo_classes(list(range(1000)), spec.num_classes, f"datasets.{spec.name}")
    n = 0
    for label in picked:
        for j in range(spec.images_per_class):
            name = hashlib.sha1(f"{label}-{j}".encode()).hexdigest()
            _save(photo(label, j, rng), out / spec.subdir / str(label) / f"{name}.jpeg", format="JPEG", quality=90)
            n += 1
    return n


def _wnid_generator(names):
    """A generator for ``<subdir>/<wnid>/<name>`` sets; ``names(wnid, label, j)`` gives file names."""

    def generate(spec: DatasetSpec, out: Path, rng: np.random.Generator) -> int:
        index = classes.wnid_to_index()
        n = 0
        for wnid in _pick_classes(class_space_wnids(spec.class_space), spec.num_classes):
            for j in range(spec.images_per_class):
                path = out / spec.subdir / wnid / names(wnid, index[wnid], j)
                _save(photo(index[wnid], j, rng), path, format="JPEG", quality=90)
                n += 1
        return n

    return generate


# ImageNet-A names: "<score>_<predicted> _ <true>_<score>.jpg" (with spaces); the tarball also has a README.
_generate_a_images = _wnid_generator(lambda wnid, label, j: f"0.{label:03d}{j:03d}_class {label} _ class {label}_0.{j:03d}.jpg")


@register_generator("imagenet_a")
def generate_imagenet_a(spec: DatasetSpec, out: Path, rng: np.random.Generator) -> int:
    n = _generate_a_images(spec, out, rng)
    (out / spec.subdir / "README.txt").write_text("synthetic ImageNet-A copy (default study)\n")
    return n


generate_imagenet_sketch = register_generator("imagenet_sketch")(
    _wnid_generator(lambda wnid, label, j: f"sketch_{j}.JPEG"))


@register_generator("imagenet_c")
def generate_imagenet_c(spec: DatasetSpec, out: Path, rng: np.random.Generator) -> int:
    """The same 224-px val photographs under every corruption x severity (15 x 5, or 19 x 5 for _all),
    each corrupted by ImageNet-C's own function at that severity."""
    names = imagenet_val_file_names()
    index = classes.wnid_to_index()
    files = [(wnid, name) for wnid in _pick_classes(classes.imagenet_wnids(), spec.num_classes)
             for name in names[index[wnid]][: spec.images_per_class]]
    corruptions = (*IMAGENET_C_CORRUPTIONS, *(IMAGENET_C_EXTRA if spec.reader == "imagenet_c_all" else ()))
    clean = {(wnid, name): _square(rng, index[wnid], j=j) for wnid in dict.fromkeys(w for w, _ in files)
             for j, name in enumerate(n for w, n in files if w == wnid)}
    n = 0
    for corruption in corruptions:
        for severity in IMAGENET_C_SEVERITIES:
            for wnid, name in files:
                path = out / spec.subdir / corruption / str(severity) / wnid / name
                image = corrupt(clean[(wnid, name)], corruption, severity, int(rng.integers(2**31)))
                _save(image, path, format="JPEG", quality=85)
                n += 1
    return n


@register_generator("imagenet_hard")
def generate_imagenet_hard(spec: DatasetSpec, out: Path, rng: np.random.Generator) -> int:
    """Images plus labels.json, as the download step writes them; some images get several labels."""
    root = out / spec.subdir
    picked = pick_photo_classes(list(range(1000)), spec.num_classes or 10, f"datasets.{spec.name}")
    entries = []
    count = 0
    for true in picked:
        for j in range(spec.images_per_class):
            i = count
            # some images get further valid labels, as in ImageNet-Hard; the photograph's own first
            labels = [true, *sorted({int(v) for v in rng.integers(0, 1000, i % 3)} - {true})]
            file = f"images/{i:05d}.png"
            _save(photo(true, j, rng), root / file, format="PNG")
            entries.append({"file": file, "labels": labels, "origin": "photograph", "english_label": []})
            count += 1
    (root / HARD_LABELS_FILE).write_text(json.dumps({"source": "generated", "images": entries}, indent=1))
    return count


# A handful of PUG class names in the real map's format (name -> ImageNet indices); Shirt and
# Sweatshirt share 841 as in the real file, so the two scoring rules differ on generated data too.
_PUG_GENERATED_MAP = {"Goldfish": [1], "Shirt": [841], "Sweatshirt": [841], "Timber_Wolf": [269],
                      "Zebra": [340]}


@register_generator("pug_imagenet")
def generate_pug_imagenet(spec: DatasetSpec, out: Path, rng: np.random.Generator) -> int:
    root = out / spec.subdir
    names = sorted(_PUG_GENERATED_MAP)
    root.mkdir(parents=True, exist_ok=True)
    (root / PUG_CLASS_MAP_FILE).write_text(json.dumps(_PUG_GENERATED_MAP, indent=1))
    rows, n = [], 0
    for s, subset in enumerate(PUG_SUBSETS):
        for j in range(spec.images_per_class):
            name = names[(s + j) % len(names)]
            file = f"{subset}/{name}/{name}_{subset.lower()}_{j}.png"
            _save(random_image(rng, _PUG_GENERATED_MAP[name][0]).resize((128, 128)), root / file, format="PNG")
            rows.append({"filename": file, "character_name": name})
            n += 1
    with open(root / "labels_pug_imagenet.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["filename", "character_name"])
        writer.writeheader()
        writer.writerows(rows)
    return n


@register_generator("cue_conflict")
def generate_cue_conflict(spec: DatasetSpec, out: Path, rng: np.random.Generator) -> int:
    """``images_per_class`` stimuli per shape; every 4th shape's first stimulus has no conflict."""
    n = 0
    for s, shape in enumerate(CATEGORIES):
        for j in range(spec.images_per_class):
            texture = shape if (j == 0 and s % 4 == 0) else CATEGORIES[(s + 1 + 3 * j) % len(CATEGORIES)]
            path = out / spec.subdir / shape / f"{shape}{j + 1}-{texture}{(s + j) % 10 + 1}.png"
            _save(random_image(rng, s).resize((224, 224), Image.BILINEAR), path, format="PNG")
            n += 1
    return n

"""Readers: a dataset root -> ordered ``(id, label)`` samples, labels in the kind's class space.

Labels never come from enumerating the folders that happen to be present (a generated or
partial copy has fewer); they come from the position of the folder's wnid in the class space,
which is the sorted-wnid convention of the whole project (spec/evaluations.md).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from beyond_imagenet import classes
from beyond_imagenet.datasets import DatasetError

Sample = tuple[str, int]
READERS: dict[str, Callable[[Path, str], list[Sample]]] = {}


def register_reader(name: str):
    def wrap(fn):
        READERS[name] = fn
        return fn

    return wrap


CLASS_SPACES: dict[str, Callable[[], tuple[str, ...]]] = {
    "imagenet1k": classes.imagenet_wnids,
    "imagenet_r": classes.imagenet_r_wnids,
    "imagenet_a": classes.imagenet_a_wnids,
    # ImageNet-Hard: several valid ImageNet-1k labels per image (the sample label is the first).
    "imagenet1k_multilabel": classes.imagenet_wnids,
}


def class_space_wnids(space: str) -> tuple[str, ...]:
    """The ordered wnids of a label space: ``imagenet1k`` or a 200-class subset."""
    if space not in CLASS_SPACES:
        raise DatasetError(f"unknown class space {space!r}; known: {', '.join(CLASS_SPACES)}")
    return CLASS_SPACES[space]()


def class_space_mask(space: str) -> np.ndarray | None:
    """Boolean mask over the 1000 ImageNet logits for a subset space; None for the full space."""
    if space == "imagenet1k":
        return None
    return classes.subset_mask(class_space_wnids(space))


def _visible(entries):
    return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)


@register_reader("wnid_folders")
def read_wnid_folders(root: Path, class_space: str) -> list[Sample]:
    """``root/<wnid>/<file>``: every file in a class folder is a sample (bad files fail at decode)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist or is not a directory")
    index = {w: i for i, w in enumerate(class_space_wnids(class_space))}
    with os.scandir(root) as it:
        folders = _visible(e for e in it if e.is_dir())
    unexpected = [e.name for e in folders if e.name not in index]
    if unexpected:
        raise DatasetError(
            f"{root}: {len(unexpected)} folder(s) are not classes of the {class_space} space: "
            f"{', '.join(unexpected)}. Remove them or point the dataset at the right folder."
        )
    samples: list[Sample] = []
    nested: list[str] = []
    for folder in folders:
        with os.scandir(folder.path) as it:
            entries = _visible(it)
        nested += [f"{folder.name}/{e.name}/" for e in entries if e.is_dir()]
        samples += [(f"{folder.name}/{e.name}", index[folder.name]) for e in entries if e.is_file()]
    if nested:
        # Images one level too deep would be silently left out of the set.
        raise DatasetError(
            f"{root}: class folders hold {len(nested)} sub-folder(s), which the layout does not have: "
            f"{', '.join(nested)}. Move their images up into the class folder, or remove them."
        )
    if not samples:
        raise DatasetError(f"{root}: no image files found in any class folder")
    return samples


@register_reader("imagenet_val_folders")
def read_imagenet_val_folders(root: Path, class_space: str) -> list[Sample]:
    """ImageNet val in wnid folders, each file checked against its true class: the original file
    names carry the label (imagenet-x's ``filename_label.csv``), so a file in the wrong folder -- a
    broken reorganisation -- would silently score as a mistake. Every misplaced or unknown file is
    named."""
    from beyond_imagenet.datasets.generate import imagenet_val_file_names

    samples = read_wnid_folders(root, class_space)
    label_of = {name: label for label, names in imagenet_val_file_names().items() for name in names}
    wnids = class_space_wnids(class_space)
    wrong = []
    for sid, label in samples:
        name = sid.rsplit("/", 1)[-1]
        if name not in label_of:
            wrong.append(f"{sid}: not an ImageNet val file name")
        elif label_of[name] != label:
            wrong.append(f"{sid}: belongs in {wnids[label_of[name]]}/")
    if wrong:
        shown = "\n  ".join(wrong[:20]) + (f"\n  ... and {len(wrong) - 20} more" if len(wrong) > 20 else "")
        raise DatasetError(
            f"{root}: {len(wrong)} file(s) are not where the ImageNet val labels put them:\n  {shown}\n"
            "Reorganise the folder from the original ILSVRC2012_img_val.tar (set `archive:` and the "
            "workflow does it), or move the files as listed."
        )
    return samples


def read_samples(reader: str, root: Path, class_space: str) -> list[Sample]:
    from beyond_imagenet.datasets import load_plugins

    load_plugins()
    if reader not in READERS:
        raise DatasetError(f"unknown reader {reader!r}; registered: {', '.join(sorted(READERS))}")
    return READERS[reader](Path(root), class_space)


@register_reader("image_folder")
def read_image_folder(root: Path, class_space: str) -> list[Sample]:
    """Your own labelled images: ``root/<class>/<file>``, each class folder named by its WordNet id
    (``n01440764``) or its ImageNet-1k index (``0`` ... ``999``, zero-padding allowed); any number of
    images and classes. Labels are ImageNet-1k indices whichever naming a folder uses."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist or is not a directory")
    wnids = class_space_wnids(class_space)
    index = {w: i for i, w in enumerate(wnids)}
    with os.scandir(root) as it:
        folders = _visible(e for e in it if e.is_dir())
    labels, bad = {}, []
    for folder in folders:
        name = folder.name
        if name in index:
            labels[name] = index[name]
        elif name.isdigit() and int(name) < len(wnids):
            labels[name] = int(name)
        else:
            bad.append(name)
    if bad:
        raise DatasetError(
            f"{root}: {len(bad)} folder(s) are neither WordNet ids of the {class_space} classes nor class "
            f"indices 0..{len(wnids) - 1}: {', '.join(bad[:20])}. Name each class folder by its wnid "
            "(n01440764) or its ImageNet-1k index (0), or remove the folder."
        )
    twice = sorted({f"{wnids[l]} / {l}" for l in labels.values() if list(labels.values()).count(l) > 1})
    if twice:
        raise DatasetError(f"{root}: classes with two folders (wnid and index): {', '.join(twice)}; merge them")
    samples: list[Sample] = []
    nested: list[str] = []
    for folder in sorted(folders, key=lambda e: labels[e.name]):
        with os.scandir(folder.path) as it:
            entries = _visible(it)
        nested += [f"{folder.name}/{e.name}/" for e in entries if e.is_dir()]
        samples += [(f"{folder.name}/{e.name}", labels[folder.name]) for e in entries if e.is_file()]
    if nested:
        raise DatasetError(
            f"{root}: class folders hold {len(nested)} sub-folder(s): {', '.join(nested[:20])}. Move their "
            "images up into the class folder, or remove them."
        )
    if not samples:
        raise DatasetError(f"{root}: no image files found in any class folder")
    return samples

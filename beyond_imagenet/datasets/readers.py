"""Readers: a dataset root -> ordered ``(id, label)`` samples, labels in the kind's class space.

Labels never come from enumerating the folders that happen to be present (a generated or
partial copy has fewer); they come from the position of the folder's wnid in the class space,
which is the sorted-wnid convention of the whole project (docs/evaluations.md).
"""

from __future__ import annotations

import os
import re
import shlex
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


#: Label spaces that are not lists of ImageNet wnids, by their number of classes: the 16 entry-level
#: categories of cue-conflict (the 16-class decision), PUG-ImageNet's 151 classes (scored by the
#: ImageNet-1k argmax through its class map: 1/151 is the chance of a uniform guess among its
#: classes, an approximation of the mapped rule's). VTAB: per task (datasets.vtab.TASKS).
CLASS_SPACE_SIZES: dict[str, int] = {"cue_conflict": 16, "pug": 151}


def chance_level(space: str, task: str | None = None) -> float | None:
    """Top-1 of a uniform guess in a label space: 1 / its number of classes (a VTAB ``task``: 1 /
    that task's classes); None for a space whose size is unknown. What figures and the profile
    compare an accuracy's interval with (docs/evaluations.md §11)."""
    if space in CLASS_SPACES:
        return 1.0 / len(class_space_wnids(space))
    if space in CLASS_SPACE_SIZES:
        return 1.0 / CLASS_SPACE_SIZES[space]
    if task is not None:
        from beyond_imagenet.datasets.vtab import CLASS_SPACE, TASKS

        if space == CLASS_SPACE and task in TASKS:
            return 1.0 / TASKS[task].n_classes
    return None


def check_logit_width(item: dict, manifest: dict, logits) -> None:
    """A labelled folder of the user's own classes is scored with a ``num_classes`` model's logits:
    column i must be the folder's i-th class (sorted class names, as its labels). A model with
    another number of columns is refused naming both, before any number is computed."""
    if item["class_space"] != "own":
        return
    names = list(manifest.get("class_names") or [])
    width = int(np.shape(logits)[1])
    if names and width != len(names):
        shown = ", ".join(names[:12]) + (" ..." if len(names) > 12 else "")
        raise DatasetError(
            f"models.{item['model']} on {item['dataset']}: its logits have {width} columns, but the folder has "
            f"{len(names)} classes ({shown}); `num_classes:` must be the number of classes its head was trained "
            "on, in the folder's sorted class order (torchvision ImageFolder's)")


def class_space_mask(space: str) -> np.ndarray | None:
    """Boolean mask over the 1000 ImageNet logits for a subset space; None for the full space."""
    if space in ("imagenet1k", "own"):  # own: a labelled folder's classes, the logits of a num_classes model
        return None
    return classes.subset_mask(class_space_wnids(space))


def _visible(entries):
    return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)


def _list(folder: str | os.PathLike, what: str) -> list[os.DirEntry]:
    """The visible entries of ``folder``; an unreadable folder or a symlink loop is named."""
    try:
        with os.scandir(folder) as it:
            return _visible(it)
    except OSError as err:
        raise DatasetError(
            f"{what} {folder} cannot be listed ({err.strerror or err}). Check that it exists, is a folder "
            "you may read (e.g. chmod -R u+rX), and is not a symlink loop, then rerun."
        ) from None


def _bad_names(folder: str, entries: list[os.DirEntry]) -> list[str]:
    """Entries whose name is not valid UTF-8 (ids are stored as UTF-8 in manifests and outputs)."""
    bad = []
    for e in entries:
        try:
            e.name.encode("utf-8")
        except UnicodeEncodeError:
            bad.append(f"{folder}/{_printable(e.name)}")
    return bad


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _is_sample(entry: os.DirEntry) -> bool:
    """A file, or a symlink that is not a folder (a dangling one too: a bad image, not dropped)."""
    return entry.is_symlink() and not _is_dir(entry) or entry.is_file(follow_symlinks=False)


def _utf8_error(folder: str, names: list[str]) -> DatasetError:
    return DatasetError(
        f"{folder}: {len(names)} file name(s) are not valid UTF-8 (shown with \\x escapes):\n  "
        + "\n  ".join(names[:20]) + (f"\n  ... and {len(names) - 20} more" if len(names) > 20 else "")
        + "\nRename them (e.g. with `convmv` or `mv`), then rerun."
    )


def sub_folders(path: str | os.PathLike) -> list[os.DirEntry]:
    """The visible sub-folders of ``path`` (symlinks to folders included), sorted by name."""
    return [e for e in _list(path, "folder") if _is_dir(e)]


def sample_files(path: str | os.PathLike) -> list[os.DirEntry]:
    """The visible files of a class folder, sorted by name, symlinks that lead nowhere included
    (see read_wnid_folders); a name that is not UTF-8 or an unreadable folder is named."""
    entries = _list(path, "folder")
    bad = _bad_names(str(path), entries)
    if bad:
        raise _utf8_error(str(path), bad)
    return [e for e in entries if _is_sample(e)]


@register_reader("wnid_folders")
def read_wnid_folders(root: Path, class_space: str) -> list[Sample]:
    """``root/<wnid>/<file>``: every file in a class folder is a sample (bad files fail at decode).

    A symlink in a class folder is a sample even when it points nowhere (dangling, or a loop): it
    is a bad image like an undecodable file, named at extraction and refused or skipped per
    ``extraction.on_bad_image``, never dropped silently."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist or is not a directory")
    index = {w: i for i, w in enumerate(class_space_wnids(class_space))}
    top = _list(root, "dataset folder")
    folders = [e for e in top if _is_dir(e)]
    broken = [e.name for e in top if e.is_symlink() and not _is_dir(e) and e.name in index]
    if broken:
        raise DatasetError(
            f"{root}: class folder(s) {', '.join(broken)} are symlinks that lead nowhere (dangling or a "
            "loop). Point them at the class folders or remove them."
        )
    if not folders:
        _refuse_flat(root, top)
    unexpected = [e.name for e in folders if e.name not in index]
    if unexpected:
        raise DatasetError(
            f"{root}: {len(unexpected)} folder(s) are not classes of the {class_space} space: "
            f"{', '.join(_printable(n) for n in unexpected)}. Remove them or point the dataset at the right folder."
        )
    return _class_folder_samples(root, folders, index)


def _class_folder_samples(root: Path, folders: list[os.DirEntry], label_of: dict[str, int]) -> list[Sample]:
    """The samples of ``root/<class folder>/<file>``, labelled ``label_of[folder name]``, in the order
    of ``folders``. A symlink in a class folder is a sample even when it points nowhere (a bad
    image, named at extraction); non-UTF-8 names, sub-folders and an empty set are refused."""
    samples: list[Sample] = []
    nested: list[str] = []
    undecodable: list[str] = []
    for folder in folders:
        entries = _list(folder.path, "class folder")
        undecodable += _bad_names(f"{root}/{folder.name}", entries)
        nested += [f"{folder.name}/{e.name}/" for e in entries if _is_dir(e)]
        samples += [(f"{folder.name}/{e.name}", label_of[folder.name]) for e in entries if _is_sample(e)]
    if undecodable:
        raise _utf8_error(str(root), undecodable)
    if nested:
        # Images one level too deep would be silently left out of the set.
        shown = ", ".join(nested[:20]) + (f" ... and {len(nested) - 20} more" if len(nested) > 20 else "")
        raise DatasetError(
            f"{root}: class folders hold {len(nested)} sub-folder(s), which the layout does not have: "
            f"{shown}. Move their images up into the class folder, or remove them."
        )
    if not samples:
        raise DatasetError(f"{root}: no image files found in any class folder")
    return samples


VAL_FILE_NAME = re.compile(r"ILSVRC2012_val_\d{8}\.JPEG")


def _refuse_flat(root: Path, top: list[os.DirEntry]) -> None:
    """A root with image files but no class folders: the flat layout (ILSVRC2012_img_val.tar
    unpacked, or a folder of one's own photos), which would otherwise read as "no image files"."""
    files = [e.name for e in top if _is_sample(e)]
    if not files:
        return  # an empty folder: "no image files found" says it
    if any(VAL_FILE_NAME.fullmatch(name) for name in files):
        raise DatasetError(
            f"{root} holds {len(files)} files directly and no class folders: the flat layout "
            "ILSVRC2012_img_val.tar unpacks to. The dataset is read from <root>/<wnid>/<file>. Sort the "
            f"files into wnid folders in place (offline; labels from imagenet-x's filename_label.csv):\n"
            f"  python -m beyond_imagenet.datasets.imagenet_val {shlex.quote(str(root))}\n"
            "or give the tar instead of the folder: `archive: /path/to/ILSVRC2012_img_val.tar` in place of "
            "`root:` (the workflow sorts a copy), then rerun."
        )
    raise DatasetError(
        f"{root} holds {len(files)} files directly and no class folders (e.g. {_printable(files[0])}). The "
        "dataset is read from <root>/<class folder>/<file>, one folder per class; move the images into "
        "class folders, or point `root:` at the folder that holds them, then rerun."
    )


def _printable(name: str) -> str:
    """A file name as text, undecodable bytes as \\x escapes."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


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
    top = _list(root, "dataset folder")
    folders = [e for e in top if _is_dir(e)]
    if not folders:
        _refuse_flat(root, top)
    labels, bad = {}, []
    for folder in folders:
        name = folder.name
        if name in index:
            labels[name] = index[name]
        # ASCII digits only: str.isdigit() also takes "²" (int() then raises) and "١" (Arabic-Indic
        # one, which int() would read as class 1).
        elif name.isascii() and name.isdigit() and int(name) < len(wnids):
            labels[name] = int(name)
        else:
            bad.append(_printable(name))
    if bad:
        raise DatasetError(
            f"{root}: {len(bad)} folder(s) are neither WordNet ids of the {class_space} classes nor class "
            f"indices 0..{len(wnids) - 1}: {', '.join(bad[:20])}. Name each class folder by its wnid "
            "(n01440764) or its ImageNet-1k index (0), or remove the folder."
        )
    twice = sorted({f"{wnids[l]} / {l}" for l in labels.values() if list(labels.values()).count(l) > 1})
    if twice:
        raise DatasetError(f"{root}: classes with two folders (wnid and index): {', '.join(twice)}; merge them")
    return _class_folder_samples(root, sorted(folders, key=lambda e: labels[e.name]), labels)

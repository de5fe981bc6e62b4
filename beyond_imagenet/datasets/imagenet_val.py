"""Reorganise the original flat ILSVRC2012 val tar into ``val/<wnid>/<file>``.

Labels come from the imagenet-x package's ``filename_label.csv`` (sorted-wnid indices for all
50,000 val files), which avoids parsing the devkit's ILSVRC ids (not in sorted-wnid order).
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
from pathlib import Path

from beyond_imagenet import classes
from beyond_imagenet.datasets import DatasetError
from beyond_imagenet.datasets.generate import imagenet_val_file_names
from beyond_imagenet.io import atomic_folder

log = logging.getLogger(__name__)


def reorganise_val_tar(archive: str | Path, out: str | Path, subdir: str = "val") -> int:
    archive, out = Path(archive), Path(out)
    if not archive.is_file():
        raise DatasetError(f"ImageNet val archive {archive} does not exist")
    label_of = {name: label for label, names in imagenet_val_file_names().items() for name in names}
    wnids = classes.imagenet_wnids()
    seen: set[str] = set()
    with atomic_folder(out) as tmp:  # a 6.7 GB half-copy is not left behind
        with tarfile.open(archive) as tar:
            for member in tar:
                name = Path(member.name).name
                if not member.isfile():
                    continue
                if name not in label_of or "/" in member.name.strip("./"):
                    raise DatasetError(f"{archive}: unexpected member {member.name!r}; is this ILSVRC2012_img_val.tar?")
                if name in seen:
                    raise DatasetError(f"{archive}: member {member.name!r} appears twice; is the archive damaged?")
                seen.add(name)
                target = tmp / subdir / wnids[label_of[name]] / name
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        n = len(seen)
        if n != len(label_of):
            missing = sorted(set(label_of) - seen)
            raise DatasetError(f"{archive}: {n} val images found, expected {len(label_of)} "
                               f"(missing e.g. {', '.join(missing[:3])}); download it again")
    log.info("reorganised %d images into %s", n, out / subdir)
    return n


def sort_flat_val_folder(folder: str | Path) -> int:
    """Move the files of an unpacked ILSVRC2012_img_val.tar (one flat folder) into wnid folders,
    in place: the layout the ``imagenet_val`` reader reads. Every file is checked first (a name
    that is not an ImageNet val file stops it before anything moves); each move is one rename, so
    a run cut short is finished by running it again. Returns the number of files moved."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder} is not a folder")
    label_of = {name: label for label, names in imagenet_val_file_names().items() for name in names}
    wnids = classes.imagenet_wnids()
    files = sorted(p for p in folder.iterdir() if not p.name.startswith(".") and not p.is_dir())
    unknown = [p.name for p in files if p.name not in label_of]
    if unknown:
        raise DatasetError(f"{folder}: {len(unknown)} file(s) are not ImageNet val images (e.g. "
                           f"{', '.join(unknown[:3])}); nothing was moved. Move them out of the folder and rerun.")
    taken = [p.name for p in files if (folder / wnids[label_of[p.name]] / p.name).exists()]
    if taken:
        raise DatasetError(f"{folder}: {len(taken)} file(s) are in both the flat folder and their wnid folder (e.g. "
                           f"{taken[0]}); nothing was moved. Remove one copy of each, then rerun.")
    for path in files:
        target = folder / wnids[label_of[path.name]] / path.name
        target.parent.mkdir(exist_ok=True)
        os.rename(path, target)
    log.info("sorted %d ImageNet val files into wnid folders under %s", len(files), folder)
    return len(files)


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m beyond_imagenet.datasets.imagenet_val",
        description="Sort an unpacked ILSVRC2012_img_val.tar (a flat folder of 50,000 JPEGs) into wnid "
                    "folders in place, the layout a `kind: imagenet_val` dataset's `root:` needs.")
    parser.add_argument("folder", help="the folder holding ILSVRC2012_val_XXXXXXXX.JPEG")
    args = parser.parse_args(argv)
    try:
        n = sort_flat_val_folder(args.folder)
    except DatasetError as err:
        raise SystemExit(f"error: {err}") from None
    print(f"moved {n} files into wnid folders under {args.folder}; use it as the dataset's `root:`")


if __name__ == "__main__":
    main()

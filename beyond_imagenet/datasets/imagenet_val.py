"""Reorganise the original flat ILSVRC2012 val tar into ``val/<wnid>/<file>``.

Labels come from the imagenet-x package's ``filename_label.csv`` (sorted-wnid indices for all
50,000 val files), which avoids parsing the devkit's ILSVRC ids (not in sorted-wnid order).
"""

from __future__ import annotations

import logging
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

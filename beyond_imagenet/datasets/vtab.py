"""VTAB-1k: the 19 tasks in the widely used pre-extracted layout (docs/datasets.md §12).

Layout (NOAH's ``data/vtab-source/get_vtab1k.py``, the ``vtab-1k.zip`` that VPT/NOAH/SSF/RepAdapter
use)::

    <root>/<task>/images/<split>/NNNNNN.jpg
    <root>/<task>/<split>.txt          # lines "images/<split>/NNNNNN.jpg <label>"

for ``split`` in ``train800``, ``val200``, ``train800val200`` and ``test``; ``<task>`` is one of the 19
folder names in :data:`TASKS`; labels are the task's own integers.

A study lists one ``kind: vtab`` dataset (say ``vtab``) with the tasks it uses. For extraction every
(task, split) is a dataset of its own, named ``vtab-<task>-<split>`` (:func:`split_dataset_name`), read
by the ``vtab_split:<split>`` reader from ``<root>/<task>/<split>.txt``, so that each split goes
through the one extraction rule and HDF5 contract. Only ``train800``, ``val200`` and ``test`` are
extracted: ``train800val200`` is exactly ``train800`` followed by ``val200`` (NOAH writes it from
TFDS ``train[:800]+validation[:200]``, or the equivalent slices), so its features are the
concatenation of those two and extracting it would run every one of its 1000 images through the
model a second time. :func:`check_trainval_union` verifies that property on the data (list order,
labels and image bytes) when the ``train800`` manifest is built, so the shortcut never goes wrong
silently.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from beyond_imagenet.datasets import DatasetError, DatasetSpec
from beyond_imagenet.datasets.generate import random_image, register_generator
from beyond_imagenet.datasets.readers import Sample, register_reader
from beyond_imagenet.io import sha256_file

log = logging.getLogger(__name__)

KIND = "vtab"
CLASS_SPACE = "vtab"
SPLITS = ("train800", "val200", "train800val200", "test")
#: The splits that are extracted; train800val200 is their first two concatenated (see module doc).
EXTRACTED_SPLITS = ("train800", "val200", "test")
SPLIT_SIZES = {"train800": 800, "val200": 200, "train800val200": 1000}
GROUPS = ("natural", "specialized", "structured")


@dataclasses.dataclass(frozen=True)
class VtabTask:
    folder: str  # NOAH folder name = the study's task name
    label: str  # display name
    group: str  # natural | specialized | structured
    n_classes: int
    test_size: int  # images in test.txt (docs/datasets.md §12)
    paper_key: str  # key in paper_results.yaml vtab.top1
    image_size: tuple[int, int] | None = None  # (w, h) of the stored images, for generated copies


#: The 19 tasks in the paper's order (natural, specialized, structured).
TASKS: dict[str, VtabTask] = {t.folder: t for t in (
    VtabTask("caltech101", "Caltech101", "natural", 102, 6084, "caltech101"),
    VtabTask("cifar", "CIFAR-100", "natural", 100, 10000, "cifar100", (32, 32)),
    VtabTask("dtd", "DTD", "natural", 47, 1880, "dtd"),
    VtabTask("oxford_flowers102", "Flowers102", "natural", 102, 6149, "flowers102"),
    VtabTask("oxford_iiit_pet", "Pets", "natural", 37, 3669, "pets"),
    VtabTask("sun397", "SUN397", "natural", 397, 21750, "sun397"),
    VtabTask("svhn", "SVHN", "natural", 10, 26032, "svhn", (32, 32)),
    VtabTask("patch_camelyon", "Camelyon", "specialized", 2, 32768, "camelyon", (96, 96)),
    VtabTask("eurosat", "EuroSAT", "specialized", 10, 5400, "eurosat", (64, 64)),
    VtabTask("resisc45", "Resisc45", "specialized", 45, 6300, "resisc45", (256, 256)),
    VtabTask("diabetic_retinopathy", "Retinopathy", "specialized", 5, 42670, "retinopathy", (300, 300)),
    VtabTask("clevr_count", "Clevr-Count", "structured", 8, 15000, "clevr_count", (480, 320)),
    VtabTask("clevr_dist", "Clevr-Dist", "structured", 6, 15000, "clevr_dist", (480, 320)),
    VtabTask("dmlab", "DMLab", "structured", 6, 22735, "dmlab", (360, 360)),
    VtabTask("kitti", "KITTI-Dist", "structured", 4, 711, "kitti_dist", (1242, 375)),
    VtabTask("dsprites_loc", "dSpr-Loc", "structured", 16, 73728, "dsprites_loc", (64, 64)),
    VtabTask("dsprites_ori", "dSpr-Ori", "structured", 16, 73728, "dsprites_ori", (64, 64)),
    VtabTask("smallnorb_azi", "sNORB-Azim", "structured", 18, 12150, "smallnorb_azi", (96, 96)),
    VtabTask("smallnorb_ele", "sNORB-Elev", "structured", 9, 12150, "smallnorb_ele", (96, 96)),
)}


@dataclasses.dataclass(frozen=True)
class VtabSpec(DatasetSpec):
    """A study's ``kind: vtab`` entry: where the task folders live and which tasks are used."""

    tasks: tuple[str, ...] = tuple(TASKS)
    #: Images per split for generated copies, as ((split, n), ...); train800val200 is derived.
    split_sizes: tuple[tuple[str, int], ...] = (("train800", 16), ("val200", 8), ("test", 16))

    def task_root(self, task: str) -> Path:
        return self.root / task

    def split_datasets(self) -> dict[tuple[str, str], str]:
        """(task, split) -> extraction dataset name, for the extracted splits of every task."""
        return {(t, s): split_dataset_name(self.name, t, s) for t in self.tasks for s in EXTRACTED_SPLITS}


@dataclasses.dataclass(frozen=True)
class VtabSplitSpec(DatasetSpec):
    """One (task, split) of a ``vtab`` dataset, extracted like any other dataset.

    ``source`` is ``"split"``: its files belong to ``parent`` (generated, unpacked or manual), and
    its manifest rule depends on the parent's folder (rules/transfer.smk).
    """

    parent: str = ""
    parent_source: str = ""
    task: str = ""
    split: str = ""
    task_dir: str = ""

    @property
    def root(self) -> Path:
        return Path(self.task_dir)

    def instructions(self) -> str:
        default_root = Path(self.resources_dir) / "datasets" / self.parent / self.subdir
        return self.manual_text.format(default_root=default_root).rstrip()


def split_dataset_name(dataset: str, task: str, split: str) -> str:
    return f"{dataset}-{task}-{split}"


def expand_dataset(spec: DatasetSpec, entry: dict[str, Any]) -> dict[str, DatasetSpec]:
    """A study dataset -> the datasets it stands for: itself, plus one per VTAB (task, split).

    Raises :class:`DatasetError` naming the key for VTAB-only fields on other kinds.
    """
    if spec.kind != KIND:
        extra = [key for key in ("tasks", "split_sizes") if key in entry]
        if extra:
            raise DatasetError(f"datasets.{spec.name}.{extra[0]}: only datasets of kind {KIND!r} take {extra[0]!r}")
        return {spec.name: spec}
    tasks = tuple(entry.get("tasks") or TASKS)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise DatasetError(f"datasets.{spec.name}.tasks: unknown VTAB task(s) {unknown}; known: {', '.join(TASKS)}")
    sizes = dict(VtabSpec.split_sizes)
    sizes.update(entry.get("split_sizes") or {})
    parent = VtabSpec(**{f.name: getattr(spec, f.name) for f in dataclasses.fields(DatasetSpec)},
                      tasks=tasks, split_sizes=tuple(sizes.items()))
    out: dict[str, DatasetSpec] = {spec.name: parent}
    for (task, split), name in parent.split_datasets().items():
        expected = SPLIT_SIZES.get(split) if spec.source != "generate" else None
        out[name] = VtabSplitSpec(
            name=name, kind=KIND, source="split", reader=f"vtab_split:{split}", class_space=CLASS_SPACE,
            subdir=spec.subdir, expected_images=expected, generator=None, download=None, manual_root=None,
            archive=None, images_per_class=1, num_classes=TASKS[task].n_classes, seed=spec.seed,
            resources_dir=spec.resources_dir, manual_text=spec.manual_text,
            parent=spec.name, parent_source=spec.source, task=task, split=split,
            task_dir=str(parent.task_root(task)),
        )
    return out


# ------------------------------------------------------------------------------------- reading
def _split_file(task_dir: Path, split: str) -> Path:
    return Path(task_dir) / f"{split}.txt"


def _split_lines(path: Path) -> list[str]:
    """The lines of a split file; a UTF-8 byte-order mark (Windows editors write one) is dropped,
    since it would otherwise stick to the first image path and make that image "missing"."""
    with open(path, encoding="utf-8-sig") as f:
        return f.readlines()


def read_split(task_dir: str | os.PathLike, split: str, check_files: bool = True) -> list[Sample]:
    """``<task_dir>/<split>.txt`` -> [(relative image path, label)] in file order."""
    task_dir = Path(task_dir)
    path = _split_file(task_dir, split)
    if not task_dir.is_dir():
        raise DatasetError(
            f"VTAB task folder {task_dir} does not exist; expected the NOAH layout "
            f"<root>/{task_dir.name}/{{images/<split>/NNNNNN.jpg, {', '.join(s + '.txt' for s in SPLITS)}}}"
        )
    if not path.is_file():
        present = sorted(p.name for p in task_dir.glob("*.txt"))
        raise DatasetError(
            f"VTAB split file {path} does not exist (found: {', '.join(present) or 'no .txt files'}). "
            f"Each task folder must hold {', '.join(s + '.txt' for s in SPLITS)}; see docs/vtab.md."
        )
    samples: list[Sample] = []
    try:
        lines = _split_lines(path)
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path}: not UTF-8 text ({err}); save it as UTF-8 (e.g. `iconv -t UTF-8`) and rerun") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.rsplit(None, 1)
        try:
            rel, label = parts[0].strip(), int(parts[1])
        except (IndexError, ValueError):
            raise DatasetError(f"{path}:{number}: expected 'relative/path label', got {line.rstrip()!r}") from None
        rel = os.path.normpath(rel)
        if os.path.isabs(rel) or rel.startswith(".."):
            raise DatasetError(f"{path}:{number}: image path {rel!r} must be relative to {task_dir}")
        if label < 0:
            raise DatasetError(f"{path}:{number}: negative label {label}")
        samples.append((rel, label))
    if not samples:
        raise DatasetError(f"VTAB split file {path} lists no images")
    if check_files:
        missing = [rel for rel, _ in samples if not (task_dir / rel).is_file()]
        if missing:
            shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise DatasetError(f"{path}: {len(missing)} listed image(s) missing under {task_dir}: {shown}")
    return samples


def _register_split_readers() -> None:
    for split in SPLITS:
        def read(root: Path, class_space: str, split: str = split) -> list[Sample]:
            return read_split(root, split)

        read.__doc__ = f"VTAB ``<task>/{split}.txt`` (root = the task folder); labels from the file."
        register_reader(f"vtab_split:{split}")(read)


_register_split_readers()


@register_reader("vtab_split")
def _read_whole_vtab(root: Path, class_space: str) -> list[Sample]:
    raise DatasetError(
        f"{root}: a vtab dataset is read per task and split (datasets <name>-<task>-<split>, reader "
        "vtab_split:<split>), never as a whole"
    )


def check_trainval_union(task_dir: str | os.PathLike) -> None:
    """Raise unless ``train800val200`` lists ``train800`` then ``val200``: same labels, same bytes.

    The workflow relies on it to reuse the train800 and val200 features for train800val200.
    """
    task_dir = Path(task_dir)
    train, val = read_split(task_dir, "train800"), read_split(task_dir, "val200")
    trainval = read_split(task_dir, "train800val200")
    union = train + val
    problem = None
    if len(trainval) != len(union):
        problem = f"it lists {len(trainval)} images, train800 + val200 list {len(union)}"
    else:
        for i, ((a, la), (b, lb)) in enumerate(zip(trainval, union)):
            if la != lb:
                problem = f"line {i + 1}: label {la} ({a}) differs from {lb} ({b})"
            elif a != b and (
                (task_dir / a).stat().st_size != (task_dir / b).stat().st_size or sha256_file(task_dir / a) != sha256_file(task_dir / b)
            ):
                problem = f"line {i + 1}: image {a} differs from {b}"
            if problem:
                break
    if problem:
        raise DatasetError(
            f"{_split_file(task_dir, 'train800val200')} is not train800.txt followed by val200.txt ({problem}). "
            "The workflow uses the train800 and val200 features for train800val200 instead of extracting it "
            "again, which is only right for the standard VTAB-1k layout; rebuild this task folder as docs/vtab.md says."
        )


# ------------------------------------------------------------------------------------ generating
@register_generator("vtab")
def generate_vtab(spec: DatasetSpec, out: Path, rng: np.random.Generator) -> int:
    """Small copies of the spec's tasks in the NOAH layout, real folder and file names.

    Each split holds ``split_sizes`` images whose labels cycle through ``num_classes`` (default 4)
    of the task's classes, spread over its label range; ``train800val200`` is written as NOAH
    does, its own copy of the train800 then val200 images (byte-identical files).
    """
    if not isinstance(spec, VtabSpec):
        raise DatasetError(f"datasets.{spec.name}: the vtab generator needs a vtab dataset spec")
    sizes = dict(spec.split_sizes)
    n = 0
    for task_name in spec.tasks:
        task = TASKS[task_name]
        # One stream per task, so adding or dropping a task leaves the other tasks' images as they were.
        rng = np.random.default_rng([spec.seed, list(TASKS).index(task_name)])
        task_dir = out / spec.subdir / task_name
        k = min(task.n_classes, spec.num_classes or 4)
        labels = np.linspace(0, task.n_classes - 1, k).round().astype(int).tolist()
        lists: dict[str, list[Sample]] = {}
        for split in EXTRACTED_SPLITS:
            folder = task_dir / "images" / split
            folder.mkdir(parents=True, exist_ok=True)
            lists[split] = []
            for i in range(sizes[split]):
                label = labels[i % len(labels)]
                image = random_image(rng, label * 7 + len(task_name))
                if task.image_size:
                    image = image.resize(task.image_size, Image.BILINEAR)
                rel = f"images/{split}/{i:06d}.jpg"
                image.save(task_dir / rel, format="JPEG", quality=90)
                lists[split].append((rel, label))
                n += 1
        folder = task_dir / "images" / "train800val200"
        folder.mkdir(parents=True, exist_ok=True)
        lists["train800val200"] = []
        for i, (rel, label) in enumerate(lists["train800"] + lists["val200"]):
            copy = f"images/train800val200/{i:06d}.jpg"
            shutil.copyfile(task_dir / rel, task_dir / copy)
            lists["train800val200"].append((copy, label))
        for split in SPLITS:
            _split_file(task_dir, split).write_text("".join(f"{rel} {label}\n" for rel, label in lists[split]))
    return n


# ------------------------------------------------------------------------------------ manifests
def build_split_manifest(spec: VtabSplitSpec) -> dict[str, Any]:
    """The manifest of one (task, split), after the VTAB-specific checks.

    Labels must lie in the task's class range; for ``train800`` the train800val200 union is
    checked (see :func:`check_trainval_union`); a test split of unexpected size is logged (the
    pre-extracted copies are unofficial), while train800 / val200 of real data must hold 800 / 200.
    """
    from beyond_imagenet.datasets.manifest import build_manifest

    task = TASKS[spec.task]
    parent_root = Path(spec.task_dir).parent
    if not parent_root.is_dir():
        raise DatasetError(f"datasets.{spec.parent}: VTAB folder {parent_root} does not exist.\n{spec.instructions()}")
    if not Path(spec.task_dir).is_dir():
        present = sorted(p.name for p in parent_root.iterdir() if p.is_dir())
        raise DatasetError(
            f"datasets.{spec.parent}: task folder {spec.task_dir} ({task.label}) does not exist; {parent_root} holds "
            f"{', '.join(present[:25]) or 'no folders'}. Add the task or drop it from datasets.{spec.parent}.tasks."
        )
    manifest = build_manifest(spec)
    labels = [label for _, label in manifest["samples"]]
    if max(labels) >= task.n_classes:
        raise DatasetError(
            f"{_split_file(Path(spec.task_dir), spec.split)}: label {max(labels)} outside the "
            f"{task.n_classes} classes of {task.label}; is this the {spec.task} folder?"
        )
    if spec.split == "train800":
        check_trainval_union(spec.task_dir)
        manifest["trainval_union_checked"] = True
    if spec.split == "test" and spec.parent_source != "generate" and manifest["n_images"] != task.test_size:
        log.warning("%s: test.txt lists %d images, the VTAB-1k test split of %s has %d",
                    spec.name, manifest["n_images"], task.label, task.test_size)
    manifest.update(parent=spec.parent, task=spec.task, split=spec.split, n_classes=task.n_classes)
    return manifest

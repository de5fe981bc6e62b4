"""A labelled folder of your own classes (``kind: labelled_folder``; docs/data-and-weights.md).

Layouts (class names are the folder names, or the CSV's labels; labels are their sorted positions)::

    <root>/<class>/<file>                      # splits drawn (``splits:``), seeded and stratified
    <root>/<train|val|test>/<class>/<file>     # splits given by sub-folders (val may be left out)
    <root>/... + labels: file.csv              # columns path,label[,split]; paths relative to root

The manifest (:func:`build_labelled_manifest`) records the samples, the class names and the splits
the folder gives; the splits file (:func:`draw_manifest_splits`, ``results/splits/<dataset>.json``)
the split of every sample and, with ``splits.k_shot``, the k-shot training subsets. The features do
not depend on the splits: changing ``splits:`` redraws the splits file and reruns the probes only.

``splits`` (all optional)::

    train: 0.6 | 5     # a fraction of each class, or a count per class (k-shot); default 0.6
    val: 0.2 | 2       # the same; default 0.2 (a count: 1)
    test: 0.2          # fractions only; default the rest
    seed: 0
    group_by: '^[^_]+' # a regex on the file name: images whose match is equal (copies of one
                       # photograph) always land in the same split; counts are then of groups
    k_shot: [1, 2, 5]  # also probe with k training images per class (nested subsets of train)

Every malformed folder is refused naming the file or key and what to do (:class:`DatasetError`).
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from beyond_imagenet.datasets import DatasetError, DatasetSpec
from beyond_imagenet.datasets.readers import (
    Sample,
    _bad_names,
    _is_dir,
    _is_sample,
    _list,
    _refuse_flat,
    _utf8_error,
    register_reader,
)

KIND = "labelled_folder"
CLASS_SPACE = "own"
SPLIT_NAMES = ("train", "val", "test")
DEFAULT_FRACTIONS = {"train": 0.6, "val": 0.2}


def _shown(items: list[str], n: int = 10) -> str:
    return ", ".join(items[:n]) + (f" ... and {len(items) - n} more" if len(items) > n else "")


# ------------------------------------------------------------------------------------- reading
def _class_folder(root: Path, folder: os.DirEntry, prefix: str) -> list[str]:
    """The sample ids of one class folder (``<prefix><class>/<file>``); an empty folder, nested
    folders and non-UTF-8 names are refused naming the folder."""
    entries = _list(folder.path, "class folder")
    bad = _bad_names(f"{root}/{prefix}{folder.name}", entries)
    if bad:
        raise _utf8_error(f"{root}/{prefix}{folder.name}", bad)
    nested = [e.name for e in entries if _is_dir(e)]
    if nested:
        raise DatasetError(
            f"{root}/{prefix}{folder.name}: holds sub-folder(s) {_shown(nested)}; a class folder holds image files "
            "only. Move their images up into the class folder, or remove them.")
    files = [f"{prefix}{folder.name}/{e.name}" for e in entries if _is_sample(e)]
    if not files:
        raise DatasetError(
            f"{root}/{prefix}{folder.name}: class {folder.name!r} has no images. Add its images or remove the "
            "empty folder.")
    return files


def _folder_layout(root: Path) -> tuple[list[tuple[str, str]], list[str] | None]:
    """(id, class name) of every image, and the given split of each (None: no split folders)."""
    top = _list(root, "dataset folder")
    folders = [e for e in top if _is_dir(e)]
    if not folders:
        _refuse_flat(root, top)
        raise DatasetError(f"{root}: no class folders. Put each class's images in a folder named after the class.")
    names = {e.name for e in folders}
    if names <= set(SPLIT_NAMES) and "train" in names:
        if "test" not in names:
            raise DatasetError(f"{root}: split folders {sorted(names)} without test/. Add {root}/test/<class>/..., "
                               "or put the class folders directly under the root and let `splits:` draw the splits.")
        pairs, given = [], []
        for split_folder in folders:
            classes = [e for e in _list(split_folder.path, "split folder") if _is_dir(e)]
            if not classes:
                raise DatasetError(f"{root}/{split_folder.name}: no class folders in this split folder. Add "
                                   f"{root}/{split_folder.name}/<class>/<images>, or remove it.")
            for folder in classes:
                for sid in _class_folder(root, folder, f"{split_folder.name}/"):
                    pairs.append((sid, folder.name))
                    given.append(split_folder.name)
        return pairs, given
    mixed = sorted(names & set(SPLIT_NAMES))
    if mixed:
        raise DatasetError(
            f"{root}: folder(s) {mixed} look like split folders but sit beside class folders "
            f"({_shown(sorted(names - set(SPLIT_NAMES)))}). Either every top folder is a split (train/, val/, "
            "test/, each holding class folders) or every one is a class; rename or move them.")
    pairs = [(sid, folder.name) for folder in folders for sid in _class_folder(root, folder, "")]
    return pairs, None


def _csv_layout(root: Path, labels: str) -> tuple[list[tuple[str, str]], list[str] | None]:
    """(id, class name) per CSV row (``path,label[,split]``), and the given split of each."""
    path = Path(labels)
    if not path.is_file():
        raise DatasetError(f"labels: CSV file {path} does not exist. Give a CSV with the columns path,label[,split] "
                           "(paths relative to the dataset root).")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
            columns = rows[0].keys() if rows else []
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path}: not UTF-8 text ({err}); save it as UTF-8 and rerun") from None
    missing = [c for c in ("path", "label") if c not in columns]
    if not rows or missing:
        raise DatasetError(f"{path}: needs a header line with the columns path,label[,split] and one row per image "
                           f"(missing: {', '.join(missing) or 'every row'}).")
    has_split = "split" in columns
    pairs, given, seen = [], [], {}
    for line, row in enumerate(rows, 2):
        rel, label = (row.get("path") or "").strip(), (row.get("label") or "").strip()
        where = f"{path}:{line}"
        if not rel or not label:
            raise DatasetError(f"{where}: empty path or label; every row names an image and its class.")
        rel = os.path.normpath(rel)
        if os.path.isabs(rel) or rel.startswith(".."):
            raise DatasetError(f"{where}: image path {rel!r} must be relative to the dataset root {root}.")
        if rel in seen:
            raise DatasetError(f"{where}: {rel} is listed again (first on line {seen[rel]}); list each image once.")
        seen[rel] = line
        if not (root / rel).is_file():
            raise DatasetError(f"{where}: image {root / rel} does not exist; fix the path or remove the row.")
        if has_split:
            split = (row.get("split") or "").strip()
            if split not in SPLIT_NAMES:
                raise DatasetError(f"{where}: split {split!r} is not one of {', '.join(SPLIT_NAMES)}.")
            given.append(split)
        pairs.append((rel, label))
    return pairs, given if has_split else None


def read_labelled(root: str | os.PathLike, labels: str | None = None
                  ) -> tuple[list[Sample], list[str], list[str] | None]:
    """``(samples, class names, given split per sample or None)``; labels = positions in the sorted
    class names. One class only, an empty class, duplicate files and a class seen in val/test but
    never in train are refused, each naming what is wrong."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist or is not a directory")
    pairs, given = _csv_layout(root, labels) if labels else _folder_layout(root)
    names = sorted({c for _, c in pairs})
    if len(names) < 2:
        raise DatasetError(f"{root}: one class only ({names[0] if names else 'none'}); a classifier needs at "
                           "least two. Add a folder (or CSV label) per class.")
    index = {c: i for i, c in enumerate(names)}
    samples = [(sid, index[c]) for sid, c in pairs]
    _refuse_duplicates(root, [sid for sid, _ in samples])
    if given is not None:
        _check_given_splits(root, pairs, given)
    return samples, names, given


def _refuse_duplicates(root: Path, ids: list[str]) -> None:
    """Two files with the same bytes: a mislabelled image (two classes) or a test image that is also
    a training image. Hashed only where sizes collide."""
    by_size: dict[int, list[str]] = {}
    for sid in ids:
        try:
            by_size.setdefault(os.stat(root / sid).st_size, []).append(sid)
        except OSError:
            continue  # a dangling symlink: a bad image, named at extraction
    pairs = []
    for same in (v for v in by_size.values() if len(v) > 1):
        first: dict[str, str] = {}
        for sid in same:
            digest = hashlib.sha256((root / sid).read_bytes()).hexdigest()
            if digest in first:
                pairs.append(f"{first[digest]} = {sid}")
            else:
                first[digest] = sid
    if pairs:
        raise DatasetError(
            f"{root}: {len(pairs)} file(s) are byte-identical duplicates: {_shown(pairs)}. Keep one copy: in two "
            "classes it is mislabelled, in two splits the test is measured on a training image.")


def _check_given_splits(root: Path, pairs: list[tuple[str, str]], given: list[str]) -> None:
    train = {c for (_, c), s in zip(pairs, given) if s == "train"}
    if not train:
        raise DatasetError(f"{root}: the given splits have no training images; add train images.")
    if "test" not in given:
        raise DatasetError(f"{root}: the given splits have no test images; add test images.")
    for split in ("val", "test"):
        unseen = sorted({c for (_, c), s in zip(pairs, given) if s == split} - train)
        if unseen:
            example = next(sid for (sid, c), s in zip(pairs, given) if s == split and c == unseen[0])
            raise DatasetError(
                f"{root}: class(es) {', '.join(unseen)} appear in {split} (e.g. {example}) but never in train: a probe "
                f"cannot learn them. Add training images of {unseen[0]!r}, or remove it from {split}.")


def class_count(root: str | os.PathLike, labels: str | None = None) -> int | None:
    """The number of classes of a labelled folder from a cheap look (folder names, or the CSV's
    label column), for its chance level when the workflow is planned; None where it cannot say
    (the manifest step names what is wrong)."""
    try:
        if labels:
            with open(labels, newline="", encoding="utf-8-sig") as f:
                names = {(row.get("label") or "").strip() for row in csv.DictReader(f)} - {""}
        else:
            top = [e for e in _list(Path(root), "dataset folder") if _is_dir(e)]
            if {e.name for e in top} <= set(SPLIT_NAMES) and any(e.name == "train" for e in top):
                names = {c.name for e in top for c in _list(e.path, "split folder") if _is_dir(c)}
            else:
                names = {e.name for e in top}
    except (OSError, DatasetError, csv.Error, UnicodeDecodeError):
        return None
    return len(names) if len(names) >= 2 else None


@register_reader(KIND)
def read_labelled_folder(root: Path, class_space: str) -> list[Sample]:
    """``<root>/<class>/<file>`` or ``<root>/<split>/<class>/<file>``: your own class names (the folder
    names); labels = positions in the sorted names. A CSV of labels is read through the manifest."""
    return read_labelled(root)[0]


# -------------------------------------------------------------------------------------- splits
def _group_keys(ids: list[str], pattern: str | None) -> list[str]:
    if not pattern:
        return list(ids)
    regex = re.compile(pattern)
    keys = []
    for sid in ids:
        name = sid.rsplit("/", 1)[-1]
        match = regex.search(name)
        if not match:
            raise DatasetError(f"splits.group_by: {pattern!r} does not match the file name {sid!r}; every file "
                               "name needs a group (e.g. '^[^_]+' for <photo>_<copy>.jpg).")
        keys.append(match.group(1) if regex.groups else match.group(0))
    return keys


def _counts(n: int, settings: dict[str, Any], cls: str, unit: str) -> dict[str, int]:
    """How many of a class's ``n`` groups go to train, val and test."""
    train, val, test = settings.get("train"), settings.get("val"), settings.get("test")
    counts_mode = train is not None and train >= 1
    if counts_mode:
        if test is not None:
            raise DatasetError("splits.test: with a per-class count for train (k-shot), test is the rest of each "
                               "class; leave test out.")
        val = 1 if val is None else val
        if val < 1 and val != 0:
            raise DatasetError("splits.val: with a per-class count for train, give val as a count too (e.g. 1).")
        n_train, n_val = int(train), int(val)
    else:
        rest = test is None
        train = DEFAULT_FRACTIONS["train"] if train is None else train
        val = DEFAULT_FRACTIONS["val"] if val is None else val
        test = 1 - train - val if rest else test
        if any(v >= 1 for v in (val, test)) or train + val + test > 1 + 1e-9 or test <= 1e-9:
            raise DatasetError(f"splits: fractions train {train:g}, val {val:g}, test {test:g} must each lie in (0, 1) "
                               "and sum to at most 1 (or give train as a per-class count).")
        n_val = max(1, int(round(val * n))) if val > 0 else 0
        n_train = max(1, int(round(train * n)))
        # test: the rest of the class when not given (no image left unused by rounding)
        n_test = n - n_train - n_val if rest else max(1, int(round(test * n)))
        n_train = min(n_train, n - max(n_test, 1) - n_val)
        if n_test < 1 and n_train >= 1:
            n_test = n - n_train - n_val
        if n_train >= 1:
            return {"train": n_train, "val": n_val, "test": n_test}
    need = n_train + n_val + (1 if counts_mode else 0)
    if n < need or n_train < 1:
        raise DatasetError(
            f"class {cls!r}: {n} {unit}, too few for the splits (train {n_train}, val {n_val}, test at least 1). "
            f"Add {unit} of {cls!r}, lower the splits' counts or fractions, or remove the class.")
    return {"train": n_train, "val": n_val, "test": n - n_train - n_val}


def draw_splits(samples: list[Sample], names: list[str], settings: dict[str, Any]) -> list[str]:
    """The split of each sample, stratified by class and seeded (a stream per class: adding a
    class leaves the others' splits as they were); with ``group_by``, whole groups move together."""
    ids = [sid for sid, _ in samples]
    keys = _group_keys(ids, settings.get("group_by"))
    unit = "groups (group_by)" if settings.get("group_by") else "images"
    split = [""] * len(samples)
    seed = int(settings.get("seed", 0))
    for label, cls in enumerate(names):
        members = [i for i, (_, lab) in enumerate(samples) if lab == label]
        groups = sorted({keys[i] for i in members})
        rng = np.random.default_rng([seed, label])
        order = [groups[j] for j in rng.permutation(len(groups))]
        counts = _counts(len(groups), settings, cls, unit)
        assign = {}
        for g, key in enumerate(order):
            assign[key] = "train" if g < counts["train"] else "val" if g < counts["train"] + counts["val"] else \
                "test" if g < counts["train"] + counts["val"] + counts["test"] else ""
        for i in members:
            split[i] = assign[keys[i]]
    return split


def val_from_train(samples: list[Sample], given: list[str], settings: dict[str, Any]) -> list[str]:
    """Given splits without val: ``splits.val`` (default 0.2) of each class's training groups,
    seeded, becomes val (at least one group where a class has two or more)."""
    fraction = settings.get("val", DEFAULT_FRACTIONS["val"])
    keys = _group_keys([sid for sid, _ in samples], settings.get("group_by"))
    split = list(given)
    seed = int(settings.get("seed", 0))
    for label in sorted({lab for _, lab in samples}):
        members = [i for i, (_, lab) in enumerate(samples) if lab == label and given[i] == "train"]
        groups = sorted({keys[i] for i in members})
        if len(groups) < 2:
            continue
        n_val = int(fraction) if fraction >= 1 else max(1, int(round(fraction * len(groups))))
        n_val = min(n_val, len(groups) - 1)
        rng = np.random.default_rng([seed, label])
        val = {groups[j] for j in rng.permutation(len(groups))[:n_val]}
        for i in members:
            if keys[i] in val:
                split[i] = "val"
    if "val" not in split:
        raise DatasetError("the given splits have no val/ and no class has two training images (groups) to draw "
                           "val from; add val/ (a class folder per class) or more training images.")
    return split


def draw_k_shot(samples: list[Sample], split: list[str], names: list[str], ks: list[int], seed: int
                ) -> dict[str, list[int]]:
    """k -> indices of k training samples per class, nested (the k=2 set holds the k=1 set), seeded."""
    out: dict[str, list[int]] = {}
    orders = {}
    for label, cls in enumerate(names):
        members = [i for i, (_, lab) in enumerate(samples) if lab == label and split[i] == "train"]
        rng = np.random.default_rng([seed, label, 1])
        orders[label] = [members[j] for j in rng.permutation(len(members))]
    for k in sorted(set(int(k) for k in ks)):
        short = [f"{names[lab]} ({len(o)})" for lab, o in orders.items() if len(o) < k]
        if short:
            raise DatasetError(f"splits.k_shot: {k} training images per class, but class(es) {_shown(short)} have "
                               "fewer training images; lower k or add images.")
        out[str(k)] = sorted(i for o in orders.values() for i in o[:k])
    return out


# ------------------------------------------------------------------------------------ manifest
def build_labelled_manifest(spec: DatasetSpec) -> dict[str, Any]:
    """The manifest of a labelled folder: its samples, class names and the splits the folder or CSV
    gives (``given_split``; None: drawn by :func:`draw_manifest_splits`). The ``splits:`` settings
    are not part of it: new splits redraw the splits file only, never the extraction."""
    from beyond_imagenet.datasets.manifest import manifest_record

    try:  # build_manifest has checked that the folder exists
        samples, names, given = read_labelled(spec.root, spec.labels)
    except DatasetError as err:
        raise DatasetError(f"datasets.{spec.name}: {err}") from None
    return {
        **manifest_record(spec, samples, len(samples)),
        "class_names": names,
        "given_split": given,
        "split_source": "drawn" if given is None else "csv" if spec.labels else "folders",
    }


def draw_manifest_splits(manifest: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """The splits file of a labelled folder (``results/splits/<dataset>.json``): the split of every
    manifest sample (given, or drawn by ``settings``, the dataset's ``splits:``) and the k-shot
    subsets (sample indices). Given splits with ``splits.train``/``test`` are refused."""
    name = manifest["dataset"]
    samples = [(sid, int(label)) for sid, label in manifest["samples"]]
    names, given = manifest["class_names"], manifest.get("given_split")
    try:
        if given is not None:
            extra = [k for k in ("train", "test") if k in settings]
            if extra:
                where = "CSV split column" if manifest.get("split_source") == "csv" else "train/val/test folders"
                raise DatasetError(f"splits.{extra[0]}: the splits are given by the {where}; drop splits.{extra[0]} "
                                   "(only val, seed, group_by and k_shot apply).")
            split = given if "val" in given else val_from_train(samples, given, settings)
        else:
            split = draw_splits(samples, names, settings)
        k_shot = draw_k_shot(samples, split, names, settings.get("k_shot") or [], int(settings.get("seed", 0)))
    except DatasetError as err:
        raise DatasetError(f"datasets.{name}.{err}" if str(err).startswith("splits") else f"datasets.{name}: {err}") \
            from None
    for part in SPLIT_NAMES:
        if part not in split:
            raise DatasetError(f"datasets.{name}: the {part} split is empty; add images or change `splits:`.")
    return {"dataset": name, "fingerprint": manifest["fingerprint"], "split_source": manifest.get("split_source", ""),
            "splits": settings, "split": split, "split_counts": {s: split.count(s) for s in SPLIT_NAMES},
            "k_shot": k_shot}


def manifest_splits(manifest: dict[str, Any], splits: dict[str, Any], ids: list[str]) -> dict[str, np.ndarray]:
    """Row indices of ``ids`` (an output's, skipped images left out) per split, plus ``k<k>`` for
    each k-shot subset, from a labelled folder's manifest and splits file."""
    if splits.get("fingerprint") != manifest["fingerprint"]:
        raise DatasetError(f"the splits of {manifest['dataset']} were drawn for another version of its manifest; "
                           "rerun the workflow (it redraws them)")
    where = {sid: n for n, sid in enumerate(ids)}
    sample_ids = [sid for sid, _ in manifest["samples"]]
    out = {}
    for name in SPLIT_NAMES:
        out[name] = np.asarray([where[s] for s, sp in zip(sample_ids, splits["split"]) if sp == name and s in where],
                               dtype=int)
    for k, members in splits.get("k_shot", {}).items():
        out[f"k{k}"] = np.asarray([where[sample_ids[i]] for i in members if sample_ids[i] in where], dtype=int)
    return out


def class_prompt_names(names: list[str]) -> list[str]:
    """Class names as the zero-shot prompts say them: folder names with ``_`` and ``-`` as spaces."""
    return [re.sub(r"[_-]+", " ", n).strip() for n in names]

"""A labelled folder of one's own classes (issue 23, items 1 and 2): the labelled_folder kind, its
splits and strict checks, and transfer (linear probe, k-shot probes, CLIP zero-shot from the class
names) on it through the workflow, with the real EfficientNet-Lite0 weights and a tiny open_clip model."""

from __future__ import annotations

import csv
import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest

from beyond_imagenet.datasets import DatasetError, resolve_dataset
from beyond_imagenet.datasets.labelled import draw_manifest_splits, read_labelled
from beyond_imagenet.datasets.manifest import build_manifest
from beyond_imagenet.datasets.photos import OWN_CLASSES, labelled_photos, write_own_class_folder
from beyond_imagenet.study import ConfigError, validate_config
from conftest import default_config, run_snakemake, write_config

GROUP_BY = "^[^_]+"  # <photo>_<copy>.jpg: every copy of a photograph in one split


@pytest.fixture(scope="module")
def own_folder(tmp_path_factory):
    """Six classes of one's own (bird, building, person, pet, plant, vehicle), three source
    photographs each, each photograph and two augmented copies."""
    return write_own_class_folder(tmp_path_factory.mktemp("own") / "photos", copies=3)


def manifest_of(root, **entry):
    """The manifest of a labelled folder merged with its splits file (as the workflow draws it)."""
    spec = resolve_dataset("mine", {"kind": "labelled_folder", "source": "manual", "root": str(root), **entry})
    manifest = build_manifest(spec)
    return {**manifest, **draw_manifest_splits(manifest, entry.get("splits", {}))}


def source_of(sid: str) -> str:
    return re.match(GROUP_BY, sid.rsplit("/", 1)[-1]).group(0)


# ------------------------------------------------------------------------------------- reading
def test_class_names_come_from_the_folders(own_folder):
    samples, names, given = read_labelled(own_folder)
    assert names == sorted(OWN_CLASSES) and given is None
    assert len(samples) == 6 * 3 * 3
    assert all(names[label] == sid.split("/")[0] for sid, label in samples)
    spec = resolve_dataset("mine", {"kind": "image_folder", "classes": "own", "source": "manual", "root": str(own_folder)})
    assert spec.kind == "labelled_folder" and spec.class_space == "own"


def test_drawn_splits_are_stratified_disjoint_by_photograph_and_reproducible_by_seed(own_folder):
    splits = {"train": 1, "val": 1, "group_by": GROUP_BY, "k_shot": [1, 2], "seed": 0}
    first = manifest_of(own_folder, splits=splits)
    assert first["class_names"] == sorted(OWN_CLASSES) and first["split_source"] == "drawn"
    # one source photograph per class and split; no photograph in two splits
    by_split = {s: {source_of(sid) for (sid, _), sp in zip(first["samples"], first["split"]) if sp == s}
                for s in ("train", "val", "test")}
    assert all(len(v) == 6 for v in by_split.values())
    assert not (by_split["train"] & by_split["test"]) and not (by_split["val"] & by_split["test"])
    assert first["split_counts"] == {"train": 18, "val": 18, "test": 18}
    # k-shot: k of each class's training images, nested
    one, two = (set(first["k_shot"][k]) for k in ("1", "2"))
    assert len(one) == 6 and len(two) == 12 and one < two
    assert all(first["split"][i] == "train" for i in two)
    # the same seed: the same splits and k-shot sets; another seed: others, the same images
    again = manifest_of(own_folder, splits=splits)
    assert again["split"] == first["split"] and again["k_shot"] == first["k_shot"]
    other = manifest_of(own_folder, splits={**splits, "seed": 1})
    assert other["split"] != first["split"] and other["fingerprint"] == first["fingerprint"]


def test_fractions_leave_no_image_unused(own_folder):
    manifest = manifest_of(own_folder, splits={"train": 0.5, "val": 0.2, "seed": 3})
    counts = manifest["split_counts"]
    assert sum(counts.values()) == manifest["n_images"] and min(counts.values()) >= 6


def test_split_folders_and_a_csv_give_the_splits(own_folder, tmp_path):
    """train/ and test/ folders (val drawn from train by photograph), and a CSV of path,label,split
    naming the 20 foolbox photographs by their WordNet lemma."""
    split_root = tmp_path / "splits"
    for sid, _ in read_labelled(own_folder)[0]:
        cls, name = sid.split("/")
        split = "test" if name.startswith(("foolbox14", "foolbox05", "camera", "foolbox16", "foolbox04",
                                           "foolbox07")) else "train"
        (split_root / split / cls).mkdir(parents=True, exist_ok=True)
        shutil.copy(own_folder / sid, split_root / split / cls / name)
    manifest = manifest_of(split_root, splits={"val": 1, "group_by": GROUP_BY})
    assert manifest["split_source"] == "folders"
    assert all(sid.startswith(f"{sp}/") or (sp == "val" and sid.startswith("train/"))
               for (sid, _), sp in zip(manifest["samples"], manifest["split"]))
    assert manifest["split_counts"] == {"train": 18, "val": 18, "test": 18}

    import open_clip

    rows = [("path", "label", "split")]
    for path, label in labelled_photos():  # the second jeep photograph is the test image
        name = open_clip.IMAGENET_CLASSNAMES[label].replace(" ", "_")
        rows.append((f"photos/{path.name}", name, "test" if path.name.startswith("imagenet_07_") else "train"))
        (tmp_path / "photos").mkdir(exist_ok=True)
        shutil.copy(path, tmp_path / "photos" / path.name)
    labels = tmp_path / "labels.csv"
    with open(labels, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    samples, names, given = read_labelled(tmp_path, str(labels))
    assert len(names) == 19 and {"jeep", "folding_chair", "Bullmastiff"} <= set(names) and len(samples) == 20
    assert given.count("test") == 1 and samples[given.index("test")] == ("photos/imagenet_07_609.jpg",
                                                                          names.index("jeep"))


# ------------------------------------------------------------------------------ strict checks
def _copy(own_folder, tmp_path):
    root = tmp_path / "mine"
    shutil.copytree(own_folder, root)
    return root


@pytest.mark.parametrize("break_it, message", [
    (lambda r: (r / "empty").mkdir(), r"class 'empty' has no images"),
    (lambda r: [shutil.rmtree(r / c) for c in sorted(OWN_CLASSES)[1:]], r"one class only \(bird\)"),
    (lambda r: shutil.copy(r / "bird" / "foolbox14_0.jpg", r / "pet" / "dup.jpg"),
     r"byte-identical duplicates: bird/foolbox14_0.jpg = pet/dup.jpg"),
    (lambda r: (r / "pet" / "nested").mkdir(), r"pet: holds sub-folder\(s\) nested"),
    (lambda r: (r / "test").mkdir(), r"\['test'\] look like split folders but sit beside class folders"),
])
def test_malformed_folders_are_refused_naming_what_is_wrong(own_folder, tmp_path, break_it, message):
    root = _copy(own_folder, tmp_path)
    break_it(root)
    with pytest.raises(DatasetError, match=message):
        manifest_of(root)


def test_a_test_class_never_seen_in_training_is_refused(own_folder, tmp_path):
    root = tmp_path / "split"
    for cls in OWN_CLASSES:
        for n, path in enumerate(sorted((own_folder / cls).iterdir())):
            split = "test" if n < 3 or cls == "plant" else "train"  # the first photograph's copies: test
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, root / split / cls / path.name)
    with pytest.raises(DatasetError, match=r"class\(es\) plant appear in test \(e\.g\. test/plant/.*\) but never in "
                                           r"train.*Add training images of 'plant'"):
        manifest_of(root)


def test_bad_splits_are_refused_naming_the_key_or_class(own_folder, tmp_path):
    with pytest.raises(DatasetError, match=r"class 'bird': 3 groups \(group_by\), too few.*train 2, val 1"):
        manifest_of(own_folder, splits={"train": 2, "val": 1, "group_by": GROUP_BY})
    with pytest.raises(DatasetError, match=r"splits.k_shot: 5 training images per class, but class\(es\) bird \(3\)"):
        manifest_of(own_folder, splits={"train": 1, "val": 1, "group_by": GROUP_BY, "k_shot": [5]})
    with pytest.raises(DatasetError, match=r"splits.group_by: 'zzz' does not match the file name 'bird/foolbox14_0"):
        manifest_of(own_folder, splits={"group_by": "zzz"})
    with pytest.raises(DatasetError, match=r"datasets.mine.subset: a labelled folder is sliced by `splits:`"):
        manifest_of(own_folder, subset={"images": 3})
    with pytest.raises(DatasetError, match=r"datasets.mine.splits: only a folder of your own classes"):
        resolve_dataset("mine", {"kind": "image_folder", "source": "manual", "root": "x", "splits": {"seed": 1}})
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\nbird/foolbox14_0.jpg,bird\nbird/missing.jpg,bird\n")
    with pytest.raises(DatasetError, match=r"labels.csv:3: image .*bird/missing.jpg does not exist"):
        manifest_of(own_folder, labels=str(labels))
    labels.write_text("path,label,split\nbird/foolbox14_0.jpg,bird,training\n")
    with pytest.raises(DatasetError, match=r"labels.csv:2: split 'training' is not one of train, val, test"):
        manifest_of(own_folder, labels=str(labels))
    labels.write_text("file,class\nbird/foolbox14_0.jpg,bird\n")
    with pytest.raises(DatasetError, match=r"columns path,label\[,split\].*missing: path, label"):
        manifest_of(own_folder, labels=str(labels))


def _study(root, **transfer):
    models = default_config()["models"]
    return {"models": {"effnet_lite0": models["effnet_lite0"], "vit_clip": models["vit_clip"]},
            "datasets": {"mine": {"kind": "labelled_folder", "source": "manual", "root": str(root),
                                  "splits": {"train": 1, "val": 1, "group_by": GROUP_BY, "k_shot": [1, 2]}}},
            "evaluations": {"transfer": {"datasets": ["mine"], **transfer}}}


def test_the_study_accepts_a_labelled_folder_for_transfer_only(own_folder):
    config = validate_config(_study(own_folder))
    assert config["evaluations"]["transfer"]["zero_shot"]["templates"] == ["a photo of a {}."]
    with pytest.raises(ConfigError, match=r"transfer.zero_shot.templates.0: 'a photo' does not match"):
        validate_config(_study(own_folder, zero_shot={"templates": ["a photo"]}))
    bad = _study(own_folder)
    bad["evaluations"]["accuracy"] = {"datasets": ["mine"]}
    with pytest.raises(ConfigError, match=r"'mine' \(labelled_folder, own\) cannot be used for accuracy"):
        validate_config(bad)


# --------------------------------------------------------------------------- through the workflow
@pytest.mark.workflow
def test_probes_and_zero_shot_on_a_labelled_folder_through_the_workflow(own_folder, tmp_path):
    """The real EfficientNet-Lite0 (features) and a tiny random open_clip model on the six own
    classes: a probe, k-shot probes and (CLIP only) zero-shot from the class names, each with a
    bootstrap interval, compared per model; the test photographs are never training photographs."""
    config = {**_study(own_folder, probe={"device": "cpu", "weight_decays": {"num": 9}},
                       zero_shot={"templates": ["a photo of a {}.", "a picture of a {}."]}),
              "study": "own", "zero_shot": {"templates": 1}, "uncertainty": {"resamples": 200},
              "extraction": {"batch_size": 16, "num_workers": 0, "shard_size": 16, "device": "cpu"}}
    jobs = run_snakemake(write_config(tmp_path / "own.yaml", config), tmp_path)
    assert jobs["probe_transfer"] == 2
    results = tmp_path / "results"
    manifest = json.loads((results / "manifests" / "mine.json").read_text())
    splits = json.loads((results / "splits" / "mine.json").read_text())
    train_photos = {source_of(s) for (s, _), sp in zip(manifest["samples"], splits["split"]) if sp != "test"}
    for model in ("effnet_lite0", "vit_clip"):
        probe = json.loads((results / "probes" / model / "mine.json").read_text())["results"]
        tasks = [r["task"] for r in probe]
        assert tasks == ["linear_probe", "k_shot_1", "k_shot_2"] + (["zero_shot"] if model == "vit_clip" else [])
        for r in probe:
            assert r["n_test"] == 18 and len(r["test_correct"]) == 18 and r["class_names"] == sorted(OWN_CLASSES)
            assert not {source_of(i) for i in r["test_ids"]} & train_photos
        assert probe[1]["n_train"] == 6 and probe[2]["n_train"] == 12 and probe[0]["n_train"] == 18
    table = pd.read_csv(results / "metrics" / "transfer.csv")
    top1 = table[table["metric"] == "test_top1"].set_index(["model", "task"])
    assert top1[["ci_low", "ci_high"]].notna().all().all()
    assert ("vit_clip", "zero_shot") in top1.index and ("effnet_lite0", "zero_shot") not in top1.index
    assert top1.loc[("effnet_lite0", "linear_probe"), "value"] > top1.loc[("vit_clip", "linear_probe"), "value"]
    comparisons = pd.read_csv(results / "metrics" / "comparisons.csv")
    assert (comparisons["headline"] == "linear probe top-1 % (mine)").any()
    profile = pd.read_csv(results / "metrics" / "profile.csv")
    assert set(profile.loc[profile["headline"] == "linear probe top-1 % (mine)", "model"]) == {"effnet_lite0",
                                                                                              "vit_clip"}
    assert (results / "figures" / "transfer_mine.png").is_file()
    assert np.isfinite(top1["value"]).all()
    # new splits (another seed) are drawn again and rerun the probes, never the manifest or extraction
    config["datasets"]["mine"]["splits"]["seed"] = 1
    jobs = run_snakemake(write_config(tmp_path / "own.yaml", config), tmp_path, dryrun=True)
    assert jobs["draw_splits"] == 1 and jobs["probe_transfer"] == 2
    assert not jobs["build_manifest"] and not jobs["extract_outputs"]


def test_the_study_file_of_the_my_model_page_is_valid(own_folder):
    """docs/my-model-on-my-images.md's study file validates as written (its root pointed at a folder)."""
    import yaml

    from conftest import REPO

    text = (REPO / "docs" / "my-model-on-my-images.md").read_text()
    block = next(b for b in re.findall(r"```yaml\n(.*?)```", text, re.S) if "study: my_images" in b)
    config = yaml.safe_load(block)
    config["datasets"]["photos"]["root"] = str(own_folder)
    config = validate_config(config)
    assert config["datasets"]["photos"]["splits"]["k_shot"] == [1, 2, 5]
    manifest = manifest_of(own_folder, splits=config["datasets"]["photos"]["splits"])
    assert set(manifest["k_shot"]) == {"1", "2", "5"}

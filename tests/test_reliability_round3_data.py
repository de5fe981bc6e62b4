"""Issue 24 (data side): what a user's paths, folders, split files and image formats did that gave
wrong numbers that looked right, or an error that did not say what to do.

Each test injects the case (a copied or moved project, ``~`` in a path, a class folder named ``²``,
the flat ImageNet val folder, a split file with a byte-order mark, 32-bit TIFFs) and checks that it
is fixed or refused with a message naming the file or key and the remedy, and, where a remedy is
printed, that following it works. The concurrent-download cases are in test_download.py (they need
its local HTTP server).
"""

from __future__ import annotations

import io
import os
import re
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from beyond_imagenet import classes
from beyond_imagenet.datasets import DatasetError, resolve_dataset
from beyond_imagenet.datasets.generate import imagenet_val_file_names
from beyond_imagenet.datasets.manifest import build_manifest, load_manifest, write_manifest
from beyond_imagenet.datasets.readers import read_imagenet_val_folders, read_samples
from beyond_imagenet.datasets.vtab import read_split
from beyond_imagenet.extract import BadImagesError, load_rgb, read_outputs
from beyond_imagenet.study import Study, load_config
from conftest import REPO, default_config, dry_run_jobs, run_snakemake, write_config
from test_extract import make_images, run
from test_real_images import photo_folder

A = "n01440764"


# ------------------------------------------------------------------ manifests: copied and moved projects
def _project(folder, monkeypatch):
    """A project folder with images at ``photos/`` (``root: photos`` in its study) and a manifest
    built the way the workflow's job builds it: with the project as working directory."""
    make_images(folder / "photos", n=6)
    monkeypatch.chdir(folder)
    spec = resolve_dataset("mine", {"kind": "image_folder", "source": "manual", "root": "photos"})
    manifest = folder / "results" / "manifests" / "mine.json"
    write_manifest(build_manifest(spec), manifest)
    return spec, manifest


def test_a_copied_project_reads_its_own_images(tmp_path, monkeypatch):
    """Guards: the manifest recorded the absolute root, so a `cp -a` copy whose images then differed
    from the original's extracted every new model from the original project's folder."""
    _project(tmp_path / "original", monkeypatch)
    shutil.copytree(tmp_path / "original", tmp_path / "copy", symlinks=True)  # cp -a
    for path in (tmp_path / "original" / "photos" / A).iterdir():  # the two projects' images now differ
        Image.new("RGB", (40, 40), (255, 0, 0)).save(path, format="JPEG")
    monkeypatch.chdir(tmp_path / "copy")
    manifest = load_manifest("results/manifests/mine.json", images=True)
    assert manifest["root"] == str(tmp_path / "copy" / "photos")
    sid = manifest["samples"][0][0]
    assert (tmp_path / "copy" / "photos" / sid).read_bytes() != (tmp_path / "original" / "photos" / sid).read_bytes()
    copy_out = run(manifest["root"], manifest["samples"], tmp_path / "copy.h5")
    own_out = run(tmp_path / "copy" / "photos", manifest["samples"], tmp_path / "own.h5")
    np.testing.assert_array_equal(read_outputs(copy_out)["logits"], read_outputs(own_out)["logits"])


def test_a_moved_project_keeps_working(tmp_path, monkeypatch):
    """Guards: a moved project failed once per image ("file not found" for every one of them)."""
    _project(tmp_path / "before", monkeypatch)
    monkeypatch.chdir(tmp_path)
    os.rename(tmp_path / "before", tmp_path / "after")
    monkeypatch.chdir(tmp_path / "after")
    manifest = load_manifest("results/manifests/mine.json", images=True)
    assert manifest["root"] == str(tmp_path / "after" / "photos")
    assert all((tmp_path / "after" / "photos" / sid).is_file() for sid, _ in manifest["samples"])


def test_an_absolute_root_stays_absolute(tmp_path, monkeypatch):
    """A `root:` given as an absolute path (a shared copy of a dataset) is the same folder from
    any project: recorded as it is."""
    make_images(tmp_path / "shared", n=4)
    monkeypatch.chdir(tmp_path)
    spec = resolve_dataset("mine", {"kind": "image_folder", "source": "manual", "root": str(tmp_path / "shared")})
    assert build_manifest(spec)["root"] == str((tmp_path / "shared").resolve())


def test_a_manifest_whose_root_is_gone_is_refused_once_and_the_remedy_works(tmp_path, monkeypatch):
    """A manifest of an earlier version (absolute root) in a moved project: one error naming the
    manifest, the folder and what to do; deleting it and rebuilding (what a rerun does) works."""
    spec, manifest_path = _project(tmp_path / "before", monkeypatch)
    text = manifest_path.read_text().replace('"root":"photos"', f'"root":"{tmp_path / "before" / "photos"}"')
    assert str(tmp_path / "before") in text
    manifest_path.write_text(text)
    monkeypatch.chdir(tmp_path)
    os.rename(tmp_path / "before", tmp_path / "after")
    monkeypatch.chdir(tmp_path / "after")
    with pytest.raises(DatasetError) as err:
        load_manifest("results/manifests/mine.json", images=True)
    message = str(err.value)
    assert "results/manifests/mine.json" in message and str(tmp_path / "before" / "photos") in message
    assert "does not exist" in message and "Delete the manifest and rerun" in message
    load_manifest("results/manifests/mine.json")  # reading outputs only needs no images: not refused
    os.remove("results/manifests/mine.json")  # the remedy, then what the rerun's manifest job does
    write_manifest(build_manifest(spec), "results/manifests/mine.json")
    assert load_manifest("results/manifests/mine.json", images=True)["root"] == str(tmp_path / "after" / "photos")


# ------------------------------------------------------------------------------------ ~ in paths
def test_tilde_is_expanded_in_every_path_setting(tmp_path, monkeypatch):
    """Guards: `root: ~/photos` "did not exist", `results_dir: ~/runs` made a folder named `~`,
    and `checkpoint:` / `archive:` under ~ were not found."""
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    make_images(home / "photos", n=4)
    (home / "ckpt.pth").write_bytes(b"weights")
    config = default_config()
    config["results_dir"] = "~/runs"
    config["resources_dir"] = "~/res"
    config["extraction"]["lock_dir"] = "~/locks"
    config["datasets"]["mine"] = {"kind": "image_folder", "source": "manual", "root": "~/photos"}
    config["datasets"]["imagenet_val"] = {"kind": "imagenet_val", "source": "manual", "archive": "~/val.tar"}
    config["models"]["vit_sup"]["checkpoint"] = "~/ckpt.pth"
    monkeypatch.chdir(tmp_path)
    study = Study(load_config(write_config(tmp_path / "study.yaml", config)))  # the checkpoint is found
    assert study.results == home / "runs" and study.resources == str(home / "res")
    assert study.datasets["mine"].root == home / "photos" and study.datasets["mine"].root.is_dir()
    assert study.datasets["imagenet_val"].archive == str(home / "val.tar")
    assert study.models["vit_sup"].checkpoint_path == home / "ckpt.pth"
    assert study.config["extraction"]["lock_dir"] == str(home / "locks")
    assert study.manifest("mine").startswith(str(home / "runs"))
    assert not (tmp_path / "~").exists()
    # Paths without ~ are left exactly as written (no cached output changes identity).
    config = default_config()
    assert load_config(write_config(tmp_path / "plain.yaml", config))["results_dir"] == "results"


@pytest.mark.workflow
def test_tilde_paths_through_the_workflow(tmp_path, monkeypatch):
    """The same through Snakemake: the plan finds `root: ~/photos` (the check of manual folders
    used to stop the run: "does not exist") and puts results under ~/runs, not in a folder `~`."""
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    make_images(home / "photos", n=4)
    config = {
        "study": "tilde", "results_dir": "~/runs",
        "extraction": {"batch_size": 8, "num_workers": 0, "shard_size": 8, "device": "cpu"},
        "models": {"vit_sup": default_config()["models"]["vit_sup"]},
        "datasets": {"mine": {"kind": "image_folder", "source": "manual", "root": "~/photos"}},
        "evaluations": {"accuracy": {"datasets": ["mine"]}},
    }
    work = tmp_path / "work"
    work.mkdir()
    jobs = dry_run_jobs(write_config(tmp_path / "study.yaml", config), work,
                        targets=[str(home / "runs" / "manifests" / "mine.json")])
    assert ("build_manifest", {"dataset": "mine"}) in jobs
    assert not (work / "~").exists()


# ------------------------------------------------------------------------- class folder names
@pytest.mark.parametrize("name", ["²", "١", "٣٣"])
def test_a_non_ascii_digit_folder_is_named_not_crashed_or_misread(tmp_path, name):
    """Guards: `²` passed str.isdigit() and crashed int() with a raw ValueError; `١` (Arabic-Indic
    one) would have been read as class 1 silently."""
    make_images(tmp_path / "mine", n=4)
    (tmp_path / "mine" / name).mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "mine" / name / "x.png")
    with pytest.raises(DatasetError) as err:
        read_samples("image_folder", tmp_path / "mine", "imagenet1k")
    message = str(err.value)
    assert f"{tmp_path / 'mine'}: 1 folder(s)" in message and name in message
    assert "Name each class folder by its wnid (n01440764) or its ImageNet-1k index (0)" in message
    # ImageNet-V2's reader (class-index folders only) refuses it too.
    for index, path in enumerate(sorted((tmp_path / "mine").glob("n*"))):
        path.rename(tmp_path / "mine" / str(index))
    with pytest.raises(DatasetError, match=f"1 folder\\(s\\) are not class indices 0..999: {name}"):
        read_samples("class_index_folders", tmp_path / "mine", "imagenet1k")


# ----------------------------------------------------------------------- the flat ImageNet val folder
def test_the_flat_val_folder_is_named_and_the_printed_command_sorts_it(tmp_path):
    """Guards: `root:` at the folder ILSVRC2012_img_val.tar unpacks to said "no image files found in
    any class folder" (there are 50,000). The message names the flat layout, `archive:` and a
    command; running that command makes the folder readable."""
    names = imagenet_val_file_names()
    flat = tmp_path / "val flat"  # a space: the printed command must quote it
    flat.mkdir()
    chosen = {names[0][0]: 0, names[0][1]: 0, names[417][0]: 417, names[999][3]: 999}
    for name in chosen:
        Image.new("RGB", (16, 16)).save(flat / name, format="JPEG")
    with pytest.raises(DatasetError) as err:
        read_imagenet_val_folders(flat, "imagenet1k")
    message = str(err.value)
    assert "4 files directly and no class folders" in message and "ILSVRC2012_img_val.tar" in message
    assert "archive: /path/to/ILSVRC2012_img_val.tar" in message
    command = re.search(r"^  (python -m beyond_imagenet\.datasets\.imagenet_val .*)$", message, re.MULTILINE).group(1)
    argv = shlex.split(command)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    wnids = classes.imagenet_wnids()
    assert sorted(read_imagenet_val_folders(flat, "imagenet1k")) == sorted(
        (f"{wnids[label]}/{name}", label) for name, label in chosen.items())


def test_the_sort_command_refuses_a_folder_with_other_files(tmp_path):
    from beyond_imagenet.datasets.imagenet_val import sort_flat_val_folder

    name = imagenet_val_file_names()[0][0]
    Image.new("RGB", (16, 16)).save(tmp_path / name, format="JPEG")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"1 file\(s\) are not ImageNet val images \(e.g. notes.txt\); nothing was moved"):
        sort_flat_val_folder(tmp_path)
    assert (tmp_path / name).is_file()


def test_a_flat_folder_of_own_images_is_named(tmp_path):
    """The same for one's own photos dropped into `root:` without class folders."""
    (tmp_path / "mine").mkdir()
    Image.new("RGB", (16, 16)).save(tmp_path / "mine" / "holiday.jpg")
    with pytest.raises(DatasetError, match=r"holds 1 files directly and no class folders \(e.g. holiday.jpg\)"
                                           r".*move the images into class folders"):
        read_samples("image_folder", tmp_path / "mine", "imagenet1k")
    with pytest.raises(DatasetError, match="no class folders"):
        read_samples("wnid_folders", tmp_path / "mine", "imagenet1k")


# ------------------------------------------------------------------------------- VTAB split files
def test_a_split_file_with_a_byte_order_mark_reads_its_first_image(tmp_path):
    """Guards: a BOM (Windows editors) stuck to the first path, and that existing image was "missing"."""
    (tmp_path / "images" / "test").mkdir(parents=True)
    for i in range(2):
        Image.new("RGB", (8, 8)).save(tmp_path / "images" / "test" / f"{i:06d}.jpg")
    text = "images/test/000000.jpg 3\r\nimages/test/000001.jpg 1\r\n"
    (tmp_path / "test.txt").write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert read_split(tmp_path, "test") == [("images/test/000000.jpg", 3), ("images/test/000001.jpg", 1)]
    (tmp_path / "test.txt").write_bytes("images/test/000000.jpg 3\n".encode("utf-16"))
    with pytest.raises(DatasetError, match=r"test\.txt: not UTF-8 text .*save it as UTF-8"):
        read_split(tmp_path, "test")


# ---------------------------------------------------------------------------- 32-bit TIFF images
def _tiff(path, array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="TIFF")
    path.write_bytes(buffer.getvalue())
    return path


GREY = np.array([[0, 64, 128], [192, 250, 255]], dtype=np.uint8)


def _as_8bit(path) -> np.ndarray:
    return np.asarray(load_rgb(path))[..., 0]


def test_a_float_tiff_in_0_1_reaches_the_model_as_its_8bit_levels(tmp_path):
    """Guards: a [0, 1] float TIFF came out black (PIL clips floats at the 0-255 scale)."""
    path = _tiff(tmp_path / "f.tif", (GREY / 255.0).astype(np.float32))
    assert Image.open(path).mode == "F"
    np.testing.assert_array_equal(_as_8bit(path), GREY)
    # Floats on the 0-255 scale (PIL's own reading) stay as they are.
    np.testing.assert_array_equal(_as_8bit(_tiff(tmp_path / "f255.tif", GREY.astype(np.float32))), GREY)


def test_a_32bit_integer_tiff_is_scaled_not_saturated(tmp_path):
    """Guards: a 32-bit integer TIFF using its range saturated to white (scaled as if 16-bit)."""
    full = np.round(GREY.astype(np.float64) * (2**31 - 1) / 255).astype(np.int32)
    path = _tiff(tmp_path / "i32.tif", full)
    assert Image.open(path).mode == "I"
    np.testing.assert_array_equal(_as_8bit(path), GREY)
    # 16-bit data stored as 32-bit integers reads as the 16-bit image does.
    sixteen = (GREY.astype(np.int32) * 257)
    np.testing.assert_array_equal(_as_8bit(_tiff(tmp_path / "i16in32.tif", sixteen)), GREY)
    np.testing.assert_array_equal(_as_8bit(_tiff(tmp_path / "i16.tif", sixteen.astype(np.uint16))), GREY)


@pytest.mark.parametrize(("array", "why"), [
    (np.array([[0.0, 1.5], [300.0, 2.0]], dtype=np.float32), r"32-bit float image with values in \[0, 300\]"),
    (np.array([[-1.0, 0.5], [0.2, 0.1]], dtype=np.float32), r"32-bit float image with values in \[-1, 0.5\]"),
    (np.array([[np.nan, 0.5], [0.2, 0.1]], dtype=np.float32), r"32-bit float image with values in \[nan"),
    (np.array([[-5, 0], [100, 7]], dtype=np.int32), r"integer image with negative values \(down to -5\)"),
])
def test_a_tiff_without_a_defined_intensity_scale_is_a_named_bad_image(tmp_path, array, why):
    """Refused, not guessed: named at extraction, with what to do."""
    make_images(tmp_path / "data", n=4)
    _tiff(tmp_path / "data" / A / "odd.tif", array)
    samples = read_samples("wnid_folders", tmp_path / "data", "imagenet1k")
    with pytest.raises(BadImagesError, match=f"odd.tif: ValueError: {why}.*Convert it to an 8- or 16-bit image"):
        run(tmp_path / "data", samples, tmp_path / "out.h5")


# ------------------------------------------------------------------ the same through the workflow
@pytest.mark.workflow
def test_a_copied_then_moved_project_extracts_from_its_own_folder(tmp_path):
    """The real workflow: a project run to the end, copied with `cp -a`, the copy moved, and the
    original's images then broken. A model added to the copy is extracted from the copy's images
    (the manifest is not rebuilt: nothing it was made from changed in the copy)."""
    original = tmp_path / "original"
    photo_folder(original / "photos")
    models = default_config()["models"]
    config = {
        "study": "copy", "zero_shot": {"templates": 1},
        "extraction": {"batch_size": 8, "num_workers": 0, "shard_size": 8, "device": "cpu"},
        "models": {"vit_sup": models["vit_sup"]},
        "datasets": {"photos": {"kind": "image_folder", "source": "manual", "root": "photos"}},
        "evaluations": {"accuracy": {"datasets": ["photos"]}},
    }
    run_snakemake(write_config(original / "study.yaml", config), original)
    subprocess.run(["cp", "-a", str(original), str(tmp_path / "copy")], check=True)
    os.rename(tmp_path / "copy", tmp_path / "moved")
    for path in (original / "photos").rglob("*.jpg"):
        path.write_bytes(b"not an image any more")  # were the copy to read these, its extraction would fail
    moved = tmp_path / "moved"
    config["models"]["convnet_sup"] = models["convnet_sup"]
    jobs = run_snakemake(write_config(moved / "study.yaml", config), moved)
    assert "build_manifest" not in jobs  # the copied manifest is used as it is
    out = read_outputs(moved / "results" / "extracted" / "convnet_sup" / "photos.h5", fields=("logits", "ids"))
    assert len(out["ids"]) == 20 and np.isfinite(out["logits"]).all()

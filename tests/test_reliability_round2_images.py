"""Issue 15 (image folders): what a user's folder can hold that the manifest step and the
extraction used to drop silently, re-list too late, or crash on with a raw OSError.

Each test injects the case into a small wnid-folder dataset and checks the reader, the folder
signature (which reruns the manifest of a manual folder) or the extraction.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from PIL import Image

from beyond_imagenet.datasets import DatasetError
from beyond_imagenet.datasets.manifest import folder_signature
from beyond_imagenet.datasets.readers import read_wnid_folders
from beyond_imagenet.extract import MAX_ASPECT_RATIO, BadImagesError, load_rgb, read_outputs
from test_extract import make_images, run

A, B = "n01440764", "n01443537"


def test_signature_sees_a_file_overwritten_in_place(tmp_path):
    """Guards: `cp good.JPEG bad.JPEG` (what the bad-image message advises) changes no folder time,
    so the old signature (folder mtimes only) kept the stale manifest, and under on_bad_image: skip
    the fixed image stayed skipped."""
    make_images(tmp_path, n=6)
    folder = tmp_path / A
    before = folder_signature(tmp_path)
    stamp = folder.stat().st_mtime_ns
    bad, good = sorted(folder.iterdir())[:2]
    shutil.copyfile(good, bad)  # content (and size) replaced in place, no entry added or removed
    os.utime(folder, ns=(stamp, stamp))  # a folder time that does not move (coarse clocks, copies)
    assert folder.stat().st_mtime_ns == stamp
    assert folder_signature(tmp_path) != before


def test_signature_sees_a_same_size_rewrite(tmp_path):
    """A file rewritten with the same size: its mtime changes, and so must the signature."""
    make_images(tmp_path, n=4)
    path = sorted((tmp_path / A).iterdir())[0]
    before = folder_signature(tmp_path)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    st = path.stat()
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert path.stat().st_size == st.st_size and folder_signature(tmp_path) != before
    assert folder_signature(tmp_path) == folder_signature(tmp_path)  # and it is stable


def test_signature_does_not_raise_on_odd_entries(tmp_path):
    """A dangling symlink, a symlink loop, a name that is not UTF-8: the signature (computed while
    Snakemake reads the workflow) still returns, and changes when they appear."""
    make_images(tmp_path, n=4)
    before = folder_signature(tmp_path)
    (tmp_path / A / "gone.JPEG").symlink_to(tmp_path / "nowhere.JPEG")
    (tmp_path / A / "loop.JPEG").symlink_to(tmp_path / A / "loop.JPEG")
    (tmp_path / B / os.fsdecode(b"caf\xe9.JPEG")).write_bytes(b"x")
    assert folder_signature(tmp_path) != before


def test_a_dangling_symlink_is_a_bad_image_not_dropped(tmp_path):
    """Guards: a dangling symlink in a class folder vanished from the manifest, reported nowhere.
    It is now a sample, and extraction names it (on_bad_image: error) or records it as skipped."""
    samples = make_images(tmp_path / "data", n=8)
    link = tmp_path / "data" / A / "img_900.JPEG"
    link.symlink_to(tmp_path / "moved-away.JPEG")
    listed = read_wnid_folders(tmp_path / "data", "imagenet1k")
    assert (f"{A}/img_900.JPEG", 0) in listed and len(listed) == len(samples) + 1
    with pytest.raises(BadImagesError, match=r"img_900\.JPEG: FileNotFoundError: a symlink that leads nowhere"):
        run(tmp_path / "data", listed, tmp_path / "out.h5")
    out = run(tmp_path / "data", listed, tmp_path / "skip.h5", on_bad_image="skip")
    data = read_outputs(out, fields=("ids", "skipped_ids"))
    assert list(data["skipped_ids"]) == [f"{A}/img_900.JPEG"] and len(data["ids"]) == len(samples)


def test_a_symlink_loop_in_a_class_folder_is_a_bad_image(tmp_path):
    make_images(tmp_path, n=4)
    (tmp_path / A / "loop.JPEG").symlink_to(tmp_path / A / "loop.JPEG")
    assert (f"{A}/loop.JPEG", 0) in read_wnid_folders(tmp_path, "imagenet1k")
    with pytest.raises(FileNotFoundError, match="leads nowhere"):
        load_rgb(tmp_path / A / "loop.JPEG")


def test_a_class_folder_that_is_a_symlink_loop_is_named(tmp_path):
    """Guards: a looping class-folder symlink was silently left out (is_dir() is False on ELOOP)."""
    make_images(tmp_path, n=4)
    (tmp_path / "n01484850").symlink_to(tmp_path / "n01484850")
    with pytest.raises(DatasetError, match=r"class folder\(s\) n01484850 are symlinks that lead nowhere"):
        read_wnid_folders(tmp_path, "imagenet1k")


def test_a_file_name_that_is_not_utf8_is_named(tmp_path):
    """Guards: a raw UnicodeEncodeError in the manifest step; the file is named, bytes escaped."""
    make_images(tmp_path, n=4)
    (tmp_path / B / os.fsdecode(b"caf\xe9.JPEG")).write_bytes(b"x")
    with pytest.raises(DatasetError) as err:
        read_wnid_folders(tmp_path, "imagenet1k")
    assert f"{tmp_path}/{B}/caf\\xe9.JPEG" in str(err.value) and "not valid UTF-8" in str(err.value)
    assert "Rename" in str(err.value)


def test_an_unreadable_class_folder_is_named(tmp_path, monkeypatch):
    """Guards: a raw PermissionError from os.scandir. (Tests run as root, who reads any folder, so
    the refusal is injected at os.scandir, exactly where the kernel would refuse it.)"""
    make_images(tmp_path, n=4)
    real = os.scandir
    locked = str(tmp_path / B)

    def scandir(path="."):
        if os.fspath(path) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(DatasetError, match=rf"class folder {locked} cannot be listed \(Permission denied\)"):
        read_wnid_folders(tmp_path, "imagenet1k")
    assert isinstance(folder_signature(tmp_path), str)  # the signature still returns


@pytest.mark.parametrize("size", [(1, 4000), (65000, 1)])
def test_an_extreme_aspect_ratio_is_refused_before_decoding(tmp_path, size):
    """Guards: a 1 x 4,000 px PNG of ~100 bytes cost about 1 GB in Resize(256) (its long side
    becomes 1,024,000 px), 1 x 65,000 about 17 GB. It is now a bad image, named, refused from
    its header before any pixel is decoded or resized."""
    samples = make_images(tmp_path / "data", n=4)
    Image.new("RGB", size).save(tmp_path / "data" / A / "thin.png")
    assert (tmp_path / "data" / A / "thin.png").stat().st_size < 2000
    samples = samples + [(f"{A}/thin.png", 0)]
    with pytest.raises(BadImagesError, match=rf"thin\.png: ValueError: image is {size[0]} x {size[1]} px, "
                                             rf"more than {MAX_ASPECT_RATIO}:1"):
        run(tmp_path / "data", samples, tmp_path / "out.h5")


def test_ordinary_and_wide_images_still_load(tmp_path):
    """A panorama well inside the bound loads as before."""
    array = np.random.default_rng(0).integers(0, 255, size=(20, 20 * MAX_ASPECT_RATIO, 3), dtype=np.uint8)
    Image.fromarray(array).save(tmp_path / "wide.png")
    assert np.array_equal(np.asarray(load_rgb(tmp_path / "wide.png")), array)


def test_other_folder_readers_keep_dangling_symlinks_and_name_bad_names(tmp_path):
    """ImageNet-V2's class-index folders go through the same listing: a dangling symlink is a
    (bad) sample, a non-UTF-8 name is named."""
    from beyond_imagenet.datasets.imagenet_variants import read_class_index_folders

    for k in range(2):
        (tmp_path / str(k)).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / str(k) / "a.jpeg")
    (tmp_path / "1" / "gone.jpeg").symlink_to(tmp_path / "nowhere.jpeg")
    assert ("1/gone.jpeg", 1) in read_class_index_folders(tmp_path, "imagenet1k")
    (tmp_path / "0" / os.fsdecode(b"\xff.jpeg")).write_bytes(b"x")
    with pytest.raises(DatasetError, match=r"\\xff\.jpeg"):
        read_class_index_folders(tmp_path, "imagenet1k")


def test_image_folder_lists_class_folders_like_the_other_readers(tmp_path):
    """Guards the image_folder reader (added beside the hardened readers): a dangling symlink in a
    class folder is a sample (a bad image named at extraction), not silently dropped, and a
    sub-folder of a class folder is refused, as in read_wnid_folders."""
    from beyond_imagenet.datasets.readers import read_image_folder

    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "a.jpg").write_bytes(b"x")
    os.symlink(tmp_path / "gone.jpg", tmp_path / "7" / "b.jpg")
    assert read_image_folder(tmp_path, "imagenet1k") == [("7/a.jpg", 7), ("7/b.jpg", 7)]
    (tmp_path / "7" / "deeper").mkdir()
    with pytest.raises(DatasetError, match="sub-folder"):
        read_image_folder(tmp_path, "imagenet1k")

"""beyond_imagenet.io: the infrastructure helpers every module uses (atomic files and folders,
hashing, lock files, the HDF5 attribute codec). The codec and the hashes are pinned to what the
code before them wrote: a change would refuse or recompute every cached output of a user."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from beyond_imagenet.io import (CHUNK_SIZE, LockFile, atomic_folder, atomic_path, atomic_write_text, file_digest,
                                h5_attr, md5_file, read_h5_attrs, sha256_file, tmp_name, write_h5_attrs)

ATTRS = {"config": {"b": 2, "a": [1, None], "c": {"z": True, "y": 0.5}}, "layers": ["x", 3], "pair": (1, 2),
         "checkpoint": None, "flag": True, "off": False, "n": 7, "f": 0.25, "s": "str", "empty": ""}

# What the hand-written encoders of extract.py / heads.py / cka.py stored, by hand: containers as
# json.dumps(..., sort_keys=True), None as "", the rest as it is.
ENCODED = {
    "config": '{"a": [1, null], "b": 2, "c": {"y": 0.5, "z": true}}',
    "layers": '["x", 3]',
    "pair": "[1, 2]",
    "checkpoint": "",
    "flag": True,
    "off": False,
    "n": 7,
    "f": 0.25,
    "s": "str",
    "empty": "",
}


def test_codec_encodes_as_the_old_code_did():
    for key, value in ATTRS.items():
        assert h5_attr(value) == ENCODED[key] and type(h5_attr(value)) is type(ENCODED[key]), key
    assert h5_attr(ATTRS["config"]) == json.dumps(ATTRS["config"], sort_keys=True)
    # anything JSON cannot encode is stored as its str (default=str), as extract.py did
    assert h5_attr({"path": Path("/a/b"), "dtype": np.dtype("float16")}) == '{"dtype": "float16", "path": "/a/b"}'


def test_codec_round_trip_through_hdf5(tmp_path):
    path = tmp_path / "a.h5"
    with h5py.File(path, "w", track_order=True) as f:
        write_h5_attrs(f.attrs, ATTRS)
        group = f.create_group("g")
        group.attrs["raw"] = np.bytes_(b"bytes")  # a fixed-length byte string, as other writers make
    with h5py.File(path, "r") as f:
        assert list(f.attrs) == sorted(ATTRS)  # written in key order
        back = read_h5_attrs(f.attrs)
        assert read_h5_attrs(f["g"].attrs) == {"raw": "bytes"}
    assert back == ENCODED
    for key in ("config", "layers", "pair", "checkpoint", "s", "empty"):
        assert type(back[key]) is str, key
    assert isinstance(back["flag"], np.bool_) and back["flag"] and not back["off"]
    assert isinstance(back["n"], np.integer) and isinstance(back["f"], np.floating)
    assert json.loads(back["config"]) == {"a": [1, None], "b": 2, "c": {"y": 0.5, "z": True}}


def test_a_written_head_passes_its_identity_check(tmp_path):
    import torch

    from beyond_imagenet.extract import StaleOutputError, check_attrs
    from beyond_imagenet.heads import write_head

    path = tmp_path / "head.h5"
    write_head(path, torch.zeros(2, 3), ATTRS)
    check_attrs(path, ATTRS)
    with pytest.raises(StaleOutputError, match="config: file has"):
        check_attrs(path, {**ATTRS, "config": {"a": [1]}})


@pytest.mark.parametrize("size", [0, 5, CHUNK_SIZE, 3 * CHUNK_SIZE + 17])
def test_file_hashes_match_hashlib(tmp_path, size):
    data = np.random.default_rng(size).bytes(size)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    assert sha256_file(path, chunk_size=7) == hashlib.sha256(data).hexdigest()  # many chunks
    assert md5_file(path) == hashlib.md5(data).hexdigest()
    assert file_digest(path, "sha1") == hashlib.sha1(data).hexdigest()


def test_callers_hash_through_the_one_helper(tmp_path):
    from beyond_imagenet import download, models

    path = tmp_path / "weights.pt"
    path.write_bytes(b"x" * (2 * CHUNK_SIZE + 1))
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    assert download.sha256_file(path) == models.checkpoint_sha256(path) == expected


def test_lock_file_is_exclusive_until_released(tmp_path):
    path = tmp_path / "writer.lock"
    first = LockFile(path)
    assert first.acquire()
    assert path.read_text() == f"{os.getpid()}\n"  # names its holder
    second = LockFile(path)
    assert not second.acquire()  # non-blocking: fails at once while held
    assert second.holder == str(os.getpid()) and second.handle.closed
    with pytest.raises(BlockingIOError, match=f"held by pid {os.getpid()}"):
        with LockFile(path):
            pass
    first.release()
    assert first.handle.closed
    third = LockFile(path)
    assert third.acquire()
    third.release()
    with LockFile(open(path, "a+")) as fourth:  # an open file works too (devices.py's shared files)
        assert fourth.held
    assert not fourth.held


def test_atomic_folder_renames_only_a_complete_folder(tmp_path):
    out = tmp_path / "ds"
    with pytest.raises(RuntimeError, match="half way"):
        with atomic_folder(out) as tmp:
            assert tmp == tmp_name(out) and tmp.is_dir() and not out.exists()
            (tmp / "a.txt").write_text("half")
            (tmp.with_name(tmp.name + "-part0") / "b").mkdir(parents=True)  # a scratch folder
            raise RuntimeError("half way")
    assert list(tmp_path.iterdir()) == []  # no folder, no temporary, no scratch folder

    (out / "old").mkdir(parents=True)
    with atomic_folder(out) as tmp:
        (tmp / "a.txt").write_text("whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"]  # replaced, not merged

    with pytest.raises(FileExistsError):
        with atomic_folder(out, hidden=False, replace=False) as tmp:
            assert tmp.name == f"ds.tmp-{os.getpid()}"
            (tmp / "other.txt").write_text("mine")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"] and (out / "a.txt").read_text() == "whole"


def test_atomic_folder_removes_a_killed_writers_leftover(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    (tmp_path / f".ds.tmp-{dead}" / "x").mkdir(parents=True)
    with atomic_folder(tmp_path / "ds") as tmp:
        (tmp / "a").write_text("a")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


@pytest.mark.parametrize("durable", [False, True])
def test_atomic_path_leaves_nothing_on_failure(tmp_path, durable):
    out = tmp_path / "sub" / "table.csv"
    with pytest.raises(ValueError):
        with atomic_path(out, durable=durable) as tmp:
            tmp.write_text("half")
            raise ValueError
    assert list((tmp_path / "sub").iterdir()) == []
    with atomic_path(out, durable=durable) as tmp:
        tmp.write_text("whole")
    atomic_write_text(tmp_path / "sub" / "note.txt", "é\n", encoding="utf-8")
    assert out.read_text() == "whole" and (tmp_path / "sub" / "note.txt").read_bytes() == "é\n".encode()
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["note.txt", "table.csv"]

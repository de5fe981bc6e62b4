"""Issue 15 (cached outputs and checkpoint shards): damage a careful user cannot see.

A cached output changed in place, a truncated output, an empty or truncated checkpoint shard
(a power loss), a disk that fills up while a shard is written: each is injected into a real
extraction (tests/test_extract.py's tiny network) and must be detected, named, and never trusted.
"""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

from beyond_imagenet import extract as extract_module
from beyond_imagenet.extract import CorruptOutputError, DiskFullError, read_outputs
from beyond_imagenet.io import tmp_name
from beyond_imagenet.metrics.calibration import expected_calibration_error, softmax
from test_extract import TinyNet, make_images, run

FIELDS = ("logits", "features", "labels", "ids")


def _ece(path):
    out = read_outputs(path, fields=("logits", "labels"))
    probs = softmax(out["logits"])
    return expected_calibration_error(probs.max(1), probs.argmax(1) == out["labels"], n_bins=15)


def test_an_output_changed_in_place_is_refused_and_removed(tmp_path):
    """Guards: an output edited in place with the same size (bit rot, a bad copy) was read without
    complaint and changed the metrics. Every array's sha256 is recorded and checked on read."""
    samples = make_images(tmp_path / "data")
    out = run(tmp_path / "data", samples, tmp_path / "out" / "toy.h5")
    before = _ece(out)
    size = out.stat().st_size
    with h5py.File(out, "r+") as f:  # one logit changed where it is stored: same size, same layout
        logits = f["logits"]
        row = logits[3]
        row[row.argmax()] += 25.0
        logits[3] = row
    assert out.stat().st_size == size
    with h5py.File(out, "r") as f:  # without the check, the metric silently moves
        probs = softmax(f["logits"][()])
        assert expected_calibration_error(probs.max(1), probs.argmax(1) == f["labels"][()], n_bins=15) != before
    with pytest.raises(CorruptOutputError) as err:
        read_outputs(out, fields=FIELDS)
    message = str(err.value)
    assert str(out) in message and "'logits' array does not match the sha256" in message
    assert "run the same snakemake command again" in message
    assert not out.exists()  # removed, so the rerun re-extracts it


def test_an_unchanged_output_reads_and_its_checksums_cover_every_array(tmp_path):
    samples = make_images(tmp_path / "data")
    out = run(tmp_path / "data", samples, tmp_path / "out" / "toy.h5", on_bad_image="skip")
    data = read_outputs(out, fields=(*FIELDS, "skipped_ids", "skipped_reasons"))
    assert len(data["ids"]) == len(samples)
    import json

    assert set(json.loads(data["attrs"]["sha256"])) == {*FIELDS, "skipped_ids", "skipped_reasons"}


@pytest.mark.parametrize("keep", [0, 0.5])
def test_a_truncated_output_is_named_and_removed_for_the_rerun(tmp_path, keep):
    """Guards: a truncated .h5 failed with an HDF5 error naming neither the file nor what to do,
    and a rerun did not re-extract it (the file still existed)."""
    samples = make_images(tmp_path / "data")
    out = run(tmp_path / "data", samples, tmp_path / "out" / "toy.h5")
    data = out.read_bytes()
    out.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CorruptOutputError) as err:
        read_outputs(out, {"model": "tiny"})
    assert f"{out} is damaged and was not used: HDF5 cannot read it" in str(err.value)
    assert not out.exists()
    again = run(tmp_path / "data", samples, out)  # what the rerun does: the same file again
    assert again.read_bytes() == data


def _killed_after_two_shards(tmp_path):
    samples = make_images(tmp_path / "data")
    reference = run(tmp_path / "data", samples, tmp_path / "a" / "toy.h5").read_bytes()
    out = tmp_path / "b" / "toy.h5"
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "data", samples, out, net=TinyNet(fail_after_batches=4))
    shards = sorted((tmp_path / "b" / ".toy.h5.parts").glob("shard-*.npz"))
    assert len(shards) == 2  # 8 images per shard, killed in the 5th batch of 4
    return samples, reference, out, shards


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_a_damaged_shard_is_recomputed_from_there(tmp_path, damage):
    """Guards: an empty or truncated shard (a power loss; shards were not fsynced) made every
    rerun die with 'File is not a zip file'. The resume checks the shards it reuses and recomputes
    from the first bad one; the file is the same as an uninterrupted run's."""
    samples, reference, out, shards = _killed_after_two_shards(tmp_path)
    data = shards[1].read_bytes()
    shards[1].write_bytes(b"" if damage == "empty" else data[: len(data) // 2])
    net = TinyNet()
    run(tmp_path / "data", samples, out, net=net)
    assert net.calls == 3  # 20 images, 4 a batch: shard 0 reused, batches 3-5 computed again
    assert out.read_bytes() == reference


def test_a_shard_of_the_wrong_length_is_recomputed(tmp_path):
    samples, reference, out, shards = _killed_after_two_shards(tmp_path)
    with np.load(shards[0]) as z:
        arrays = {k: z[k] for k in z.files}
    np.savez(shards[0], **{k: v[:1] if k in ("logits", "features", "index") else v for k, v in arrays.items()})
    net = TinyNet()
    run(tmp_path / "data", samples, out, net=net)
    assert net.calls == 5 and out.read_bytes() == reference


def test_shards_and_outputs_are_fsynced_before_the_rename(tmp_path, monkeypatch):
    """Durability: each shard's data and its folder entry are fsynced (file, then folder)."""
    synced = []
    real = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    samples = make_images(tmp_path / "data")
    out = run(tmp_path / "data", samples, tmp_path / "out" / "toy.h5")
    parts = out.parent / ".toy.h5.parts"
    for k in range(3):
        tmp = str(tmp_name(parts / f"shard-{k:06d}.npz"))
        assert synced.index(tmp) < synced.index(str(parts), synced.index(tmp))
    assert str(tmp_name(out)) in synced and synced[-1] == str(out.parent)


def test_disk_full_while_writing_a_shard_is_one_clear_message(tmp_path):
    """Guards: four chained tracebacks ending in 'No space left on device'. The kernel's ENOSPC is
    injected for real: the temporary name of shard 1 is a symlink to /dev/full. One message names
    the file, says nothing half-written is kept and that a rerun resumes; the rerun does."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    samples = make_images(tmp_path / "data")
    reference = run(tmp_path / "data", samples, tmp_path / "a" / "toy.h5").read_bytes()
    out = tmp_path / "b" / "toy.h5"
    parts = out.parent / ".toy.h5.parts"
    parts.mkdir(parents=True)
    full = tmp_name(parts / "shard-000001.npz")
    full.symlink_to("/dev/full")
    with pytest.raises(DiskFullError) as err:
        run(tmp_path / "data", samples, out)
    message = str(err.value)
    assert f"No space left on device while writing {parts / 'shard-000001.npz'}" in message
    assert "Nothing half-written was kept" in message and "resumes after the 1 checkpoint shard" in message
    assert err.value.__cause__ is None and err.value.__suppress_context__
    assert not full.exists() and not (parts / "shard-000001.npz").exists() and not out.exists()
    net = TinyNet()
    run(tmp_path / "data", samples, out, net=net)
    assert net.calls == 3 and out.read_bytes() == reference


def test_disk_full_while_assembling_the_output_keeps_the_shards(tmp_path, monkeypatch):
    """ENOSPC from HDF5 while the final file is written: one message, the shards stay, the rerun
    assembles it without a forward pass."""
    samples = make_images(tmp_path / "data")
    out = tmp_path / "b" / "toy.h5"
    real = extract_module._write_output

    def full(*args, **kw):
        raise OSError(28, "Can't write data (file write failed: errno = 28, error message = 'No space left on device')")

    monkeypatch.setattr(extract_module, "_write_output", full)
    with pytest.raises(DiskFullError, match=rf"while writing {out}.*only this file is assembled again"):
        run(tmp_path / "data", samples, out)
    assert len(list((out.parent / ".toy.h5.parts").glob("shard-*.npz"))) == 3 and not out.exists()
    monkeypatch.setattr(extract_module, "_write_output", real)
    net = TinyNet()
    run(tmp_path / "data", samples, out, net=net)
    assert net.calls == 0 and read_outputs(out)["ids"].size == len(samples)


def test_a_damaged_output_also_drops_its_key_and_group_marker(tmp_path):
    """A damaged results/extracted/<m>/<f> goes with its extraction key and the group marker that
    lists it, so the next run reruns that group's job (which recomputes it and reuses the rest);
    other groups' markers stay."""
    import json

    samples = make_images(tmp_path / "data")
    extracted = tmp_path / "results" / "extracted" / "tiny"
    out = run(tmp_path / "data", samples, extracted / "toy.h5")
    (extracted / "toy.h5.key").write_text("key")
    listing = extracted / "all.group.json"
    listing.write_text(json.dumps({"outputs": [str(out)]}))
    other = extracted / "other.group.json"
    other.write_text(json.dumps({"outputs": [str(extracted / "else.h5")]}))
    with h5py.File(out, "r+") as f:
        f["labels"][0] = f["labels"][0] + 1
    with pytest.raises(CorruptOutputError, match="It was removed"):
        read_outputs(out, fields=FIELDS)
    assert not out.exists() and not (extracted / "toy.h5.key").exists()
    assert not listing.exists() and other.exists()

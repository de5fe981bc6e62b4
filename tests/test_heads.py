"""The cached zero-shot head (beyond_imagenet/heads.py: cached_head): built by the first job of a
CLIP model that needs it, reused by the others, never clobbered, never left half-written."""

import h5py
import pytest
import torch

import beyond_imagenet.models as models
from beyond_imagenet.heads import cached_head, read_head, write_head
from beyond_imagenet.models import ModelSpec

CPU = torch.device("cpu")
IDENTITY = {"model": "vit_clip", "model_source": "open_clip", "model_arch": "tiny-vit-clip", "weights": "random",
            "zero_shot_templates": "1"}


def clip_spec():
    return ModelSpec.from_config("vit_clip", {"source": "open_clip", "name": "tiny-vit-clip", "pretrained": False})


@pytest.fixture
def builds(monkeypatch):
    """The builder replaced by a deterministic one; the list of its calls (templates, device)."""
    calls = []

    def build(spec, templates, device):
        calls.append((templates, device))
        return torch.arange(12, dtype=torch.float32).reshape(3, 4) + len(calls)

    monkeypatch.setattr(models, "build_zero_shot_head", build)
    return calls


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


def test_a_real_head_is_the_builders_bytes_and_is_then_reused(tmp_path, monkeypatch):
    """What the extraction job uses is what build_zero_shot_head makes (the separate head job's
    file had the same bytes: same function, same inputs); a second call reads it, building nothing."""
    spec, path = clip_spec(), tmp_path / "heads" / "vit_clip.h5"
    expected = models.build_zero_shot_head(spec, 1, CPU)
    head = cached_head(path, spec, IDENTITY, 1, CPU)
    assert head.dtype == torch.float32 and torch.equal(head, expected)
    assert torch.equal(read_head(path, IDENTITY), expected)

    def refuse(*args, **kwargs):
        raise AssertionError("the cached head was built again")

    monkeypatch.setattr(models, "build_zero_shot_head", refuse)
    assert torch.equal(cached_head(path, spec, IDENTITY, 1, CPU), expected)
    assert leftovers(path.parent) == []


def test_built_once_then_reused(tmp_path, builds):
    path = tmp_path / "heads" / "vit_clip.h5"
    first = cached_head(path, clip_spec(), IDENTITY, 1, CPU)
    mtime = path.stat().st_mtime_ns
    second = cached_head(path, clip_spec(), IDENTITY, 1, CPU)
    assert builds == [(1, CPU)]
    assert torch.equal(first, second) and path.stat().st_mtime_ns == mtime
    assert leftovers(path.parent) == []


def test_a_stale_head_is_replaced(tmp_path, builds):
    """A head of other templates (or weights) at the path is built again and replaced."""
    path = tmp_path / "vit_clip.h5"
    write_head(path, torch.zeros(3, 4), {**IDENTITY, "zero_shot_templates": "80"})
    head = cached_head(path, clip_spec(), IDENTITY, 1, CPU)
    assert len(builds) == 1
    assert torch.equal(head, torch.arange(12, dtype=torch.float32).reshape(3, 4) + 1)
    assert torch.equal(read_head(path, IDENTITY), head)
    assert leftovers(tmp_path) == []


def test_an_unreadable_head_is_replaced(tmp_path, builds):
    path = tmp_path / "vit_clip.h5"
    path.write_bytes(b"not an HDF5 file")
    head = cached_head(path, clip_spec(), IDENTITY, 1, CPU)
    assert len(builds) == 1 and torch.equal(read_head(path, IDENTITY), head)


def test_a_concurrent_writers_head_wins(tmp_path, monkeypatch):
    """Another job of the model puts its head in place while this one builds: this job uses that
    file's head, not its own, and leaves the file as the other job wrote it."""
    path = tmp_path / "vit_clip.h5"
    theirs = torch.full((3, 4), 7.0)

    def build(spec, templates, device):
        write_head(path, theirs, IDENTITY)  # the other job finishes first
        return torch.zeros(3, 4)

    monkeypatch.setattr(models, "build_zero_shot_head", build)
    before = path.exists()
    head = cached_head(path, clip_spec(), IDENTITY, 1, CPU)
    assert not before
    assert torch.equal(head, theirs) and torch.equal(read_head(path, IDENTITY), theirs)
    assert leftovers(tmp_path) == []


def test_a_concurrent_stale_file_is_replaced(tmp_path, monkeypatch):
    """A file of another identity appearing meanwhile (an older run's job) does not win."""
    path = tmp_path / "vit_clip.h5"

    def build(spec, templates, device):
        write_head(path, torch.full((3, 4), 7.0), {**IDENTITY, "weights": "other"})
        return torch.ones(3, 4)

    monkeypatch.setattr(models, "build_zero_shot_head", build)
    head = cached_head(path, clip_spec(), IDENTITY, 1, CPU)
    assert torch.equal(head, torch.ones(3, 4)) and torch.equal(read_head(path, IDENTITY), head)


def test_a_failed_build_leaves_nothing(tmp_path, monkeypatch):
    path = tmp_path / "heads" / "vit_clip.h5"

    def build(spec, templates, device):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(models, "build_zero_shot_head", build)
    with pytest.raises(RuntimeError, match="out of memory"):
        cached_head(path, clip_spec(), IDENTITY, 1, CPU)
    assert not path.exists()
    assert not path.parent.exists() or leftovers(path.parent) == []


def test_a_failed_write_leaves_no_temporary_file(tmp_path, builds, monkeypatch):
    """Writing the file fails half-way (a full disk): neither the head nor its temporary file stays."""
    path = tmp_path / "vit_clip.h5"

    def half_write(tmp, head, attrs):
        with h5py.File(tmp, "w") as f:
            f.create_dataset("weights", data=head.numpy())
        raise OSError("No space left on device")

    import beyond_imagenet.heads as heads

    monkeypatch.setattr(heads, "_write_h5", half_write)
    with pytest.raises(OSError, match="No space left"):
        cached_head(path, clip_spec(), IDENTITY, 1, CPU)
    assert list(tmp_path.iterdir()) == []


def test_without_hard_links_the_head_is_renamed_into_place(tmp_path, builds, monkeypatch):
    """A filesystem that refuses hard links (EPERM/ENOTSUP on some network mounts): the head is
    still written whole, by a rename, and no temporary file is left."""
    import errno
    import os

    def no_links(src, dst):
        raise OSError(errno.EPERM, "hard links not supported", str(dst))

    monkeypatch.setattr(os, "link", no_links)
    path = tmp_path / "heads" / "vit_clip.h5"
    head = cached_head(path, clip_spec(), IDENTITY, 1, CPU)
    assert torch.equal(head, read_head(path, IDENTITY)) and builds == [(1, CPU)]
    assert leftovers(path.parent) == []

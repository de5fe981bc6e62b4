"""Extraction engine: HDF5 contract, resume after a kill, bad images, odd modes, stale caches, OOM."""

import io

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from beyond_imagenet.extract import (BadImagesError, StaleOutputError, _Forward, check_attrs, extract, load_rgb,
                                     read_outputs)

TRANSFORM = transforms.Compose([transforms.Resize(32), transforms.CenterCrop(32), transforms.ToTensor()])


class TinyNet(torch.nn.Module):
    """Deterministic stand-in for a model: features = pooled pixels, logits = a fixed projection."""

    def __init__(self, fail_after_batches=None, oom_above=None):
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(12, 1000)
        self.calls = 0
        self.fail_after_batches = fail_after_batches
        self.oom_above = oom_above

    def forward(self, x):
        if self.oom_above is not None and x.shape[0] > self.oom_above:
            raise torch.cuda.OutOfMemoryError("simulated")
        self.calls += 1
        if self.fail_after_batches is not None and self.calls > self.fail_after_batches:
            raise KeyboardInterrupt("simulated kill")
        features = torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)
        return self.proj(features), features


def make_images(root, n=20):
    rng = np.random.default_rng(0)
    samples = []
    for i in range(n):
        wnid = ["n01440764", "n01443537"][i % 2]
        (root / wnid).mkdir(parents=True, exist_ok=True)
        array = rng.integers(0, 255, size=(40 + i, 50, 3), dtype=np.uint8)
        Image.fromarray(array).save(root / wnid / f"img_{i:03d}.JPEG")
        samples.append((f"{wnid}/img_{i:03d}.JPEG", i % 2))
    return samples


def run(root, samples, out, net=None, **kw):
    kw = {"batch_size": 4, "num_workers": 0, "shard_size": 8, "progress": False, **kw}
    return extract(net or TinyNet(), TRANSFORM, root, samples, out, {"model": "tiny", "dataset": "toy"}, **kw)


def test_hdf5_round_trip(tmp_path):
    samples = make_images(tmp_path / "data")
    out = run(tmp_path / "data", samples, tmp_path / "out" / "toy.h5", features_dtype="float32")
    data = read_outputs(out, {"model": "tiny", "dataset": "toy", "n_images": 20},
                        fields=("logits", "features", "labels", "ids", "skipped_ids"))
    assert data["logits"].shape == (20, 1000) and data["logits"].dtype == np.float32
    assert data["features"].shape == (20, 12)
    assert list(data["ids"]) == [s for s, _ in samples]
    assert list(data["labels"]) == [label for _, label in samples]
    assert data["attrs"]["n_skipped"] == 0 and len(data["skipped_ids"]) == 0
    # Same numbers as running the network directly on the same images.
    image = TRANSFORM(load_rgb(tmp_path / "data" / samples[3][0]))[None]
    logits, _ = TinyNet()(image)
    np.testing.assert_allclose(data["logits"][3], logits[0].detach().numpy(), rtol=1e-5, atol=1e-5)
    assert not (tmp_path / "out" / ".toy.h5.parts").exists()


def test_killed_run_resumes_to_an_identical_file(tmp_path):
    samples = make_images(tmp_path / "data")
    reference = run(tmp_path / "data", samples, tmp_path / "a" / "toy.h5")
    killed = tmp_path / "b" / "toy.h5"
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "data", samples, killed, net=TinyNet(fail_after_batches=3))
    assert not killed.exists(), "no output may exist after a kill"
    parts = sorted((tmp_path / "b" / ".toy.h5.parts").glob("shard-*.npz"))
    assert len(parts) == 1  # 8 images per shard, killed in the 4th batch of 4
    net = TinyNet()
    run(tmp_path / "data", samples, killed, net=net)
    assert net.calls == 3, "the resumed run must start after the last flushed shard"
    assert killed.read_bytes() == reference.read_bytes()


def test_checkpoint_of_another_run_is_discarded(tmp_path):
    samples = make_images(tmp_path / "data")
    out = tmp_path / "b" / "toy.h5"
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "data", samples, out, net=TinyNet(fail_after_batches=3))
    net = TinyNet()
    run(tmp_path / "data", samples, out, net=net, batch_size=2)  # different run key
    assert net.calls == 10


@pytest.mark.parametrize("change", ["attrs", "images"])
def test_checkpoint_of_another_model_or_image_list_is_discarded(tmp_path, change):
    samples = make_images(tmp_path / "data")
    out = tmp_path / "b" / "toy.h5"
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "data", samples, out, net=TinyNet(fail_after_batches=3))
    net = TinyNet()
    if change == "attrs":  # another model (or weights, preprocessing...) recorded for the same file
        extract(net, TRANSFORM, tmp_path / "data", samples, out, {"model": "other", "dataset": "toy"},
                batch_size=4, num_workers=0, shard_size=8, progress=False)
        assert net.calls == 5  # all 20 images again, none from the other model's shards
    else:  # the same settings on another image list (first image swapped with the last)
        run(tmp_path / "data", [samples[-1], *samples[1:-1], samples[0]], out, net=net)
        assert net.calls == 5
        assert list(read_outputs(out)["ids"])[0] == samples[-1][0]


def test_a_second_writer_of_the_same_output_is_refused(tmp_path):
    """A job left running (Snakemake killed on its own) holds its output's lock: a second job for the
    same file fails at once, naming the process, and does not touch the first one's shards."""
    import subprocess
    import sys

    samples = make_images(tmp_path / "data", n=4)
    out = tmp_path / "b" / "toy.h5"
    parts = tmp_path / "b" / ".toy.h5.parts"
    parts.mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         f"f = open({str(parts / 'writer.lock')!r}, 'a+'); fcntl.flock(f, fcntl.LOCK_EX)\n"
         "f.write(str(os.getpid())); f.flush(); print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        (parts / "shard-000000.npz").write_bytes(b"the other writer's shard")
        with pytest.raises(RuntimeError, match=f"being written by another process \\(pid {holder.pid}\\)"):
            run(tmp_path / "data", samples, out)
        assert (parts / "shard-000000.npz").read_bytes() == b"the other writer's shard"
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()
    run(tmp_path / "data", samples, out)  # once it is gone, the output is written
    assert out.exists() and not parts.exists()


def write_bad_files(root):
    good = io.BytesIO()
    Image.fromarray(np.zeros((30, 30, 3), np.uint8) + 100).save(good, format="JPEG")
    folder = root / "n01440764"
    (folder / "corrupt.JPEG").write_bytes(b"\xff\xd8\xff\xe0" + b"garbage" * 50)
    (folder / "truncated.JPEG").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    (folder / "empty.JPEG").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image")
    return [("n01440764/corrupt.JPEG", 0), ("n01440764/truncated.JPEG", 0), ("n01440764/empty.JPEG", 0),
            ("n01440764/notes.txt", 0)]


def test_bad_images_all_named_and_nothing_written(tmp_path):
    samples = make_images(tmp_path / "data")
    bad = write_bad_files(tmp_path / "data")
    out = tmp_path / "out" / "toy.h5"
    with pytest.raises(BadImagesError) as err:
        run(tmp_path / "data", samples[:5] + bad + samples[5:], out)
    message = str(err.value)
    for sid, _ in bad:
        assert sid in message
    assert "4 image(s)" in message
    assert not out.exists() and not (tmp_path / "out" / ".toy.h5.parts").exists()


def test_skip_records_skipped_ids(tmp_path):
    samples = make_images(tmp_path / "data")
    bad = write_bad_files(tmp_path / "data")
    out = run(tmp_path / "data", samples[:5] + bad + samples[5:], tmp_path / "toy.h5", on_bad_image="skip")
    data = read_outputs(out, fields=("labels", "ids", "skipped_ids", "skipped_reasons"))
    assert sorted(data["skipped_ids"]) == sorted(s for s, _ in bad)
    assert list(data["ids"]) == [s for s, _ in samples]
    assert data["attrs"]["n_skipped"] == 4 and data["attrs"]["n_images"] == 20
    assert all(reason for reason in data["skipped_reasons"])


def test_odd_but_valid_modes_are_converted(tmp_path):
    array16 = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)
    array16[0, 0] = 65535
    Image.fromarray(array16).save(tmp_path / "gray16.png")
    Image.fromarray(np.full((20, 20), 77, np.uint8), mode="L").save(tmp_path / "gray.jpg")
    Image.new("CMYK", (20, 20), (10, 20, 30, 0)).save(tmp_path / "cmyk.jpg")
    Image.new("RGBA", (20, 20), (200, 100, 50, 128)).save(tmp_path / "rgba.png")
    Image.new("P", (20, 20), 3).save(tmp_path / "palette.png")
    for name in ("gray16.png", "gray.jpg", "cmyk.jpg", "rgba.png", "palette.png"):
        image = load_rgb(tmp_path / name)
        assert image.mode == "RGB", name
    wide = np.asarray(load_rgb(tmp_path / "gray16.png"))
    assert wide[0, 0, 0] == 255 and wide.max() == 255
    assert len(np.unique(wide)) > 100, "16-bit grey must be rescaled, not clipped to white"


def test_stale_output_is_refused(tmp_path):
    samples = make_images(tmp_path / "data", n=4)
    out = run(tmp_path / "data", samples, tmp_path / "toy.h5")
    check_attrs(out, {"model": "tiny", "n_images": 4})
    with pytest.raises(StaleOutputError, match="model: file has 'tiny', expected 'other'"):
        read_outputs(out, {"model": "other"})
    with pytest.raises(StaleOutputError, match="n_images"):
        check_attrs(out, {"n_images": 5})


def test_cuda_oom_halves_the_batch_and_gives_the_same_result(tmp_path):
    samples = make_images(tmp_path / "data")
    reference = run(tmp_path / "data", samples, tmp_path / "a.h5")
    out = run(tmp_path / "data", samples, tmp_path / "b.h5", net=TinyNet(oom_above=1))
    with h5py.File(reference) as a, h5py.File(out) as b:
        np.testing.assert_allclose(a["logits"][()], b["logits"][()], rtol=1e-5, atol=1e-6)
    forward = _Forward(TinyNet(oom_above=2), torch.device("cpu"))
    forward(torch.zeros(8, 3, 32, 32))
    assert forward.max_rows == 2


def test_device_normalisation_gives_the_same_tensors_as_the_full_transform(tmp_path):
    from timm.data import create_transform

    from beyond_imagenet.extract import split_transform

    full = create_transform(input_size=(3, 64, 64), crop_pct=0.875, interpolation="bilinear",
                            mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    geometry, normalize = split_transform(full)
    assert normalize is not None
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8))
    uint8 = geometry(image)
    assert uint8.dtype == torch.uint8
    torch.testing.assert_close(normalize(uint8[None])[0], full(image), rtol=0, atol=0)
    # A transform without a trailing ToTensor/Normalize is left alone.
    assert split_transform(TRANSFORM) == (TRANSFORM, None)

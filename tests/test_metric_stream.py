"""The metric stage reads each output once, in row blocks, with its checksums verified while it
streams (beyond_imagenet.extract.stream_outputs, workflow.read_items with a per-image reducer)."""

import json
import types

import h5py
import numpy as np
import pytest
from test_extract import make_images, run

from beyond_imagenet import extract as extract_module
from beyond_imagenet.extract import (
    CorruptOutputError,
    _digest,
    _RowDigest,
    read_outputs,
    stream_outputs,
)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("shape", [(7, 5), (7, 0), (0, 3), (1, 4)])
@pytest.mark.parametrize("rows", [1, 2, 3, 100])
def test_row_blocks_hash_like_the_whole_array(dtype, shape, rows):
    data = np.random.default_rng(0).normal(size=shape).astype(dtype)
    digest = _RowDigest("logits", data.dtype, data.shape)
    for start in range(0, shape[0], rows):
        digest.update(data[start:start + rows])
    assert digest.hexdigest() == _digest("logits", data)
    assert digest.hexdigest() != _digest("features", data)  # the name is part of it


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """One output written by the project's own writer (20 images, 1,000 logits, 12 features)."""
    root = tmp_path_factory.mktemp("stream")
    samples = make_images(root / "data")
    path = run(root / "data", samples, root / "out" / "toy.h5", features_dtype="float32")
    return path, samples


@pytest.mark.parametrize("block_bytes", [1, 3 * 4000, 10**9])
def test_blocks_give_what_the_whole_arrays_give(written, block_bytes):
    path, samples = written
    whole = read_outputs(path, fields=("logits", "features", "labels", "ids"))
    starts = []

    def per_block(block):
        starts.append(block["start"])
        assert len(block["logits"]) == len(block["labels"]) == len(block["ids"]) == len(block["features"])
        return {"predicted": block["logits"].argmax(axis=1), "norm": np.linalg.norm(block["features"], axis=1),
                "row": block["start"] + np.arange(len(block["labels"]))}

    out = stream_outputs(path, per_block, arrays=("logits", "features"), block_bytes=block_bytes)
    rows = max(1, block_bytes // (1000 * 4 + 12 * 4))
    assert starts == list(range(0, 20, rows))
    np.testing.assert_array_equal(out["predicted"], whole["logits"].argmax(axis=1))
    np.testing.assert_array_equal(out["norm"], np.linalg.norm(whole["features"], axis=1))
    np.testing.assert_array_equal(out["row"], np.arange(20))
    assert list(out["ids"]) == [s for s, _ in samples] and list(out["labels"]) == list(whole["labels"])
    assert "logits" not in out and "features" not in out  # only what the reducer kept


def test_a_changed_array_is_refused_after_streaming(tmp_path, written):
    path = tmp_path / "toy.h5"
    path.write_bytes(written[0].read_bytes())
    with h5py.File(path, "r+") as f:
        f["logits"][17, 3] += 1.0  # in the last block
    with pytest.raises(CorruptOutputError, match="'logits' array does not match the sha256"):
        stream_outputs(path, lambda block: {"predicted": block["logits"].argmax(axis=1)}, block_bytes=4000)
    assert not path.exists()  # removed: the next run recomputes it


def test_an_error_of_the_reducer_is_not_a_damaged_file(written):
    def per_block(block):
        raise ValueError("labels must lie in 0..199")

    with pytest.raises(ValueError, match="labels must lie") as info:
        stream_outputs(written[0], per_block)
    assert not isinstance(info.value, CorruptOutputError)
    assert written[0].exists()


def test_ids_of_the_same_images_are_one_array_for_every_model(tmp_path, written):
    copy = tmp_path / "other_model.h5"
    copy.write_bytes(written[0].read_bytes())
    cache = {}
    a = stream_outputs(written[0], lambda block: {}, ids_cache=cache)
    b = stream_outputs(copy, lambda block: {}, ids_cache=cache)
    assert a["ids"] is b["ids"] and len(cache) == 1


def _job(tmp_path, written, models=("m1", "m2")):
    """A compute_accuracy job over copies of the written output (one per model)."""
    path, _ = written
    attrs = read_outputs(path, fields=())["attrs"]
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"samples": [], "fingerprint": attrs.get("manifest_fingerprint", ""),
                                    "n_images": 20, "root": str(tmp_path)}))
    cached = []
    for model in models:
        out = tmp_path / f"{model}.h5"
        out.write_bytes(path.read_bytes())
        cached.append({"model": model, "dataset": "toy", "variant": "", "kind": "imagenet_val",
                       "class_space": "imagenet1k", "output": str(out), "manifest": str(manifest), "expect": {}})
    params = types.SimpleNamespace(cached=cached, models={m: {"model": m} for m in models},
                                   uncertainty={"resamples": 20, "seed": 0, "level": 0.95})
    return types.SimpleNamespace(params=params)


def test_a_metric_job_reads_each_output_once(tmp_path, written, monkeypatch):
    from beyond_imagenet.evaluations import get
    from beyond_imagenet.uncertainty import table_and_comparisons

    monkeypatch.setattr("beyond_imagenet.workflow.expected_attrs", lambda identity, manifest: {})
    reads = []
    real = extract_module.stream_outputs

    def counted(path, *args, **kwargs):
        reads.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(extract_module, "stream_outputs", counted)
    job = _job(tmp_path, written)
    rows, comparisons = table_and_comparisons(get("accuracy"), job)
    assert sorted(reads) == sorted(item["output"] for item in job.params.cached)  # once each
    top1 = {r["model"]: r["value"] for r in rows if r["metric"] == "top1"}
    whole = read_outputs(written[0], fields=("logits", "labels"))
    expected = float(np.mean(whole["logits"].argmax(axis=1) == whole["labels"]))
    assert top1 == {"m1": expected, "m2": expected}
    assert all(not np.isnan(r["ci_low"]) for r in rows if r["metric"] == "top1")
    assert len(comparisons) == 1 and comparisons[0]["difference"] == 0

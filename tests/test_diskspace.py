"""Store what is read (Study.stored_arrays, the writer's ``arrays``) and the disk estimate of a study
(beyond_imagenet/diskspace.py)."""

import dataclasses
from pathlib import Path

import h5py
import pytest
from conftest import default_config
from test_extract import make_images, run

from beyond_imagenet import diskspace
from beyond_imagenet.evaluations import EVALUATIONS
from beyond_imagenet.extract import StaleOutputError, check_attrs, read_outputs
from beyond_imagenet.study import Study, validate_config


def _study(tmp_path, **changes) -> Study:
    config = validate_config({**default_config(), "results_dir": str(tmp_path / "results"),
                              "resources_dir": str(tmp_path / "resources"), **changes})
    return Study(config)


def test_each_output_stores_only_what_an_evaluation_reads(tmp_path):
    study = _study(tmp_path)
    model = "vit_sup"
    for dataset in ("imagenet_val", "imagenet_c", "pug_imagenet", "cue_conflict"):
        assert study.stored_arrays(model, dataset) == ["logits"], dataset  # no features: nothing reads them
    assert study.stored_arrays(model, "vtab-dtd-test") == ["features"]  # probes read features only
    assert study.stored_arrays(model, "imagenet_val", "scale-3") == ["logits"]
    assert study.output_identity(model, "imagenet_c")["arrays"] == "logits"


def test_an_evaluation_that_starts_reading_features_refuses_the_old_file(tmp_path, monkeypatch):
    samples = make_images(tmp_path / "data")
    path = run(tmp_path / "data", samples, tmp_path / "toy.h5", arrays=("logits",))
    with h5py.File(path) as f:
        assert "logits" in f and "features" not in f
    assert read_outputs(path, fields=())["attrs"]["arrays"] == "logits"
    check_attrs(path, {"arrays": "logits"})
    with pytest.raises(StaleOutputError, match="lacks features"):
        check_attrs(path, {"arrays": "features,logits"})
    with pytest.raises(StaleOutputError, match="has no 'features' array: it was extracted when no evaluation"):
        read_outputs(path, fields=("features",))
    # A file holding more than is read is fine (and an older file without the attribute holds both).
    both = run(tmp_path / "data", samples, tmp_path / "both.h5")
    check_attrs(both, {"arrays": "logits"})

    # The study side: a (made-up) evaluation reading features of imagenet_val changes the identity.
    probe = dataclasses.replace(EVALUATIONS["accuracy"], name="val_probe", reads="features")
    monkeypatch.setitem(EVALUATIONS, "val_probe", probe)
    study = _study(tmp_path)
    study.evaluations["val_probe"] = {"datasets": ["imagenet_val"]}
    assert study.output_identity("vit_sup", "imagenet_val")["arrays"] == "features,logits"


def test_disk_estimate_rows_and_what_is_still_to_write(tmp_path):
    study = _study(tmp_path)
    rows = diskspace.estimate_rows(study)
    assert sorted(study.output(r["model"], r["dataset"], r["variant"] or None) for r in rows) == study.all_outputs()
    c = next(r for r in rows if r["dataset"] == "imagenet_c" and r["model"] == "vit_sup")
    assert c["images"] == 4 * 1 * 75 and c["arrays"] == "logits"
    assert c["bytes"] == diskspace.FILE_BYTES + c["images"] * (diskspace.ROW_BYTES + diskspace.LOGIT_BYTES)
    probe = next(r for r in rows if r["dataset"] == "vtab-dtd-test" and r["model"] == "vit_sup")
    assert probe["images"] == 16  # the generated split size
    assert probe["bytes"] == diskspace.FILE_BYTES + 16 * (diskspace.ROW_BYTES + 192 * 2)  # ViT-Ti: 192, float16
    needed = diskspace.required_bytes(study)
    sizes = [r["bytes"] for r in rows]
    assert needed == sum(sizes) + max(sizes)
    # An output already there is not written again.
    present = Path(study.output("vit_sup", "imagenet_c"))
    present.parent.mkdir(parents=True)
    present.write_bytes(b"x" * 100)
    assert diskspace.required_bytes(study) == needed - c["bytes"]


def test_the_run_stops_when_the_free_disk_is_smaller(tmp_path):
    study = _study(tmp_path)
    lines = []
    needed = diskspace.check_free_space(study, free=10**15, echo=lines.append)
    assert "imagenet_c" in lines[0] and "to write" in lines[0]
    with pytest.raises(diskspace.DiskSpaceError, match=r"still need about .* but only 1\.0 kB is free"):
        diskspace.check_free_space(study, free=1000, echo=lines.append)
    assert needed > 1000


def test_paper_study_estimate_uses_the_catalogue_counts():
    from beyond_imagenet.study import load_config

    study = Study(load_config(Path(__file__).parents[1] / "studies" / "paper.yaml"))
    rows = {(r["model"], r["dataset"], r["variant"]): r for r in diskspace.estimate_rows(study)}
    c = rows[("vit_sup", "imagenet_c", "")]
    assert c["images"] == 3_750_000 and c["arrays"] == "logits"
    assert rows[("vit_sup", "vtab-dtd-test", "")]["images"] == 1880
    assert rows[("vit_sup", "vtab-dtd-test", "")]["arrays"] == "features"


def test_the_extraction_job_stores_what_its_identity_says(tmp_path):
    """run_group passes the expected identity as the attributes: its ``arrays`` decide the file."""
    from test_extract import TRANSFORM, TinyNet

    from beyond_imagenet.extract import extract

    samples = make_images(tmp_path / "data", n=6)
    path = extract(TinyNet(), TRANSFORM, tmp_path / "data", samples, tmp_path / "split.h5",
                   {"model": "tiny", "dataset": "toy", "arrays": "features"}, batch_size=4, num_workers=0,
                   shard_size=4, progress=False)
    with h5py.File(path) as f:
        assert "features" in f and "logits" not in f
    assert read_outputs(path, fields=("features",))["features"].shape == (6, 12)

"""Issue 15 through the whole workflow: a damaged cached output and a bad image fixed in place in
a manual folder, each followed by the rerun a user would do."""

from __future__ import annotations

import copy
import os
import shutil

import h5py
import pytest
import snakemake.shell  # noqa: F401
from PIL import Image

from conftest import write_config
from test_reliability_workflow import api_run, leftovers

pytestmark = pytest.mark.workflow

OUTPUT = "results/extracted/vit_sup/imagenet_val.h5"
TABLE = "results/metrics/accuracy.csv"


def _one_model(tiny_config, **extraction):
    config = copy.deepcopy(tiny_config)
    config["models"] = {"vit_sup": config["models"]["vit_sup"]}
    config["datasets"] = {"imagenet_val": {**config["datasets"]["imagenet_val"], "images_per_class": 2}}
    config["evaluations"] = {"accuracy": {"datasets": ["imagenet_val"]}}
    config["extraction"].update(extraction)
    return config


def test_a_truncated_output_is_named_and_the_rerun_re_extracts_it(tiny_config, tmp_path, capfd):
    """Guards: a truncated cached .h5 failed with an HDF5 error naming neither the file nor what
    to do, and the rerun did not re-extract it. Now the metric job names it and removes it; the
    same command run again re-extracts it and writes the same table. (Damaged in place here: a
    truncation changes the file's size, and its group reruns before any reader sees it.)"""
    configfile = write_config(tmp_path / "study.yaml", _one_model(tiny_config))
    work = tmp_path / "work"
    work.mkdir()
    api_run(configfile, work, [TABLE])
    table = (work / TABLE).read_bytes()
    output = work / OUTPUT
    data = output.read_bytes()
    stat = output.stat()
    # Bit rot in place: same size and time, so its group's marker cannot tell (a truncated or
    # replaced file, whose size or time changes, reruns its group first: test_job_structure.py).
    with h5py.File(output, "r+") as f:
        f["labels"][0] = f["labels"][0] + 1
    os.utime(output, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert output.stat().st_size == stat.st_size
    capfd.readouterr()
    with pytest.raises(Exception):  # nothing tells Snakemake: the table is recomputed by hand
        api_run(configfile, work, [TABLE], forcerun=["compute_accuracy"])
    err = capfd.readouterr().err
    assert f"{output.resolve()} is damaged and was not used" in err or f"{OUTPUT} is damaged and was not used" in err
    assert "run the same snakemake command again" in err
    assert not output.exists()
    api_run(configfile, work, [TABLE])
    assert output.read_bytes() == data and (work / TABLE).read_bytes() == table
    assert leftovers(work) == []


def test_a_file_overwritten_in_place_in_a_manual_folder_rebuilds_its_manifest(tiny_config, tmp_path):
    """Guards: `cp good.png bad.png` in a `source: manual` folder (what the bad-image message
    advises) changed no folder time, so the manifest was not rebuilt, its outputs not recomputed,
    and under on_bad_image: skip the fixed image stayed skipped. A manual cue-conflict folder (all
    1,280 names, tiny images), as in test_workflow.py."""
    from beyond_imagenet.metrics.shape_bias import CATEGORIES
    from conftest import run_snakemake

    root = tmp_path / "cue-conflict"
    for k, shape in enumerate(CATEGORIES):
        (root / shape).mkdir(parents=True)
        for i in range(80):
            texture = CATEGORIES[(k + i) % len(CATEGORIES)]
            Image.new("RGB", (4, 4), (k, i, 0)).save(root / shape / f"{shape}{i + 1}-{texture}{i % 10 + 1}.png")
    config = copy.deepcopy(tiny_config)
    config["extraction"]["on_bad_image"] = "skip"
    config["extraction"]["group"] = "dataset"  # the cue-conflict output's job needs only its own manifest
    config["datasets"]["cue_conflict"] = {"kind": "cue_conflict", "source": "manual", "root": str(root)}
    configfile = write_config(tmp_path / "manual.yaml", config)
    manifest = "results/manifests/cue_conflict.json"
    work = tmp_path / "run"
    bad, good = sorted((root / "dog").iterdir())[:2]
    bad.write_bytes(b"not an image")
    assert run_snakemake(configfile, work, targets=[manifest]) == {"build_manifest": 1}
    assert run_snakemake(configfile, work, targets=[manifest], dryrun=True) == {}
    stamps = {p: p.stat().st_mtime_ns for p in (root, root / "dog")}
    shutil.copyfile(good, bad)  # fixed in place: no entry added, removed or renamed
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    jobs = run_snakemake(configfile, work, targets=["results/extracted/vit_sup/cue_conflict.group.json"], dryrun=True)
    assert jobs["build_manifest"] == 1 and jobs["extract_outputs"] == 1

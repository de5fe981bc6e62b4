"""Issue 24 through the real workflow, on one finished tiny study (a checkpoint model and a random
one, 4 generated images each of ImageNet val and -R, accuracy and calibration, one extraction job
per model): the same study with its keys in
another order plans nothing; a checkpoint dated in the future is refused before any job, and the
printed `touch` works; a NaN checkpoint stops its extraction naming model, dataset and count, with
nothing written, and the rerun with good weights completes."""

from __future__ import annotations

import copy
import glob
import os
import subprocess
import time
from pathlib import Path

import pytest
import snakemake.shell  # noqa: F401  (see test_reliability_workflow.py)
import torch
from conftest import dry_run_jobs, run_snakemake, write_config
from snakemake_interface_common.exceptions import WorkflowError
from test_checkpoints import timm_state

pytestmark = pytest.mark.workflow

MODEL_JOBS = {"extract_outputs", "build_manifest", "generate_dataset"}


def _study(tiny_config, checkpoint) -> dict:
    config = copy.deepcopy(tiny_config)
    config["models"] = {"ckpt": {"source": "timm", "name": "convnext_atto", "pretrained": False,
                                 "checkpoint": str(checkpoint), "label": "from a file"},
                        "vit_sup": config["models"]["vit_sup"]}
    config["datasets"] = {k: config["datasets"][k] for k in ("imagenet_val", "imagenet_r")}
    config["evaluations"] = {"accuracy": {"datasets": ["imagenet_val"]},
                             "calibration": {"datasets": ["imagenet_val", "imagenet_r"], "n_bins": 10}}
    config["uncertainty"] = {"seed": 0, "resamples": 200, "level": 0.95}
    return config


@pytest.fixture(scope="module")
def finished(tmp_path_factory, request):
    """The tiny study, run to the end once: (config, its file, the workdir, the checkpoint)."""
    from conftest import default_config

    base = tmp_path_factory.mktemp("round3")
    checkpoint = base / "last.pth"
    torch.save(timm_state(seed=1), checkpoint)
    tiny = default_config()
    tiny["zero_shot"]["templates"] = 1
    for name in ("imagenet_val", "imagenet_r"):
        tiny["datasets"][name].update(num_classes=4, images_per_class=1)
    config = _study(tiny, checkpoint)
    configfile = write_config(base / "study.yaml", config)
    work = base / "work"
    work.mkdir()
    run_snakemake(configfile, work)
    assert dry_run_jobs(configfile, work) == []
    return config, configfile, work, checkpoint


def _reordered(value, keep_order=False):
    """Every mapping's keys reversed, recursively (lists as they are); ``keep_order``: not this one's."""
    if isinstance(value, dict):
        keys = list(value) if keep_order else list(reversed(value))
        return {k: _reordered(value[k]) for k in keys}
    if isinstance(value, list):
        return [_reordered(v) for v in value]
    return value


def test_the_same_study_with_its_keys_in_another_order_plans_nothing(finished, tmp_path):
    """Guards: Snakemake compares params by their text, a dict's in key order, so a study rewritten
    by a YAML tool reran every job. Every mapping reversed (sections, datasets, evaluations, every
    entry and setting; the models keep their order, which is the tables' row order): no job."""
    config, _, work, _ = finished
    reordered = {k: (_reordered(v, keep_order=True) if k == "models" else _reordered(v))
                 for k, v in reversed(config.items())}
    reordered["models"] = {m: _reordered(e) for m, e in config["models"].items()}
    assert list(reordered) != list(config) and list(reordered["datasets"]["imagenet_val"]) != \
        list(config["datasets"]["imagenet_val"])
    assert dry_run_jobs(write_config(tmp_path / "reordered.yaml", reordered), work) == []


def test_reordering_the_models_redraws_tables_but_runs_no_model(finished, tmp_path):
    """The models' order is the study's (rows, figures, comparison pairs a - b): reversing it reruns
    the tables and figures, never a model (no extraction, head or manifest)."""
    config, _, work, _ = finished
    swapped = {**config, "models": dict(reversed(config["models"].items()))}
    planned = {rule for rule, _ in dry_run_jobs(write_config(tmp_path / "swapped.yaml", swapped), work)}
    assert planned and not planned & MODEL_JOBS, planned


def test_a_checkpoint_dated_in_the_future_is_refused_before_any_job_and_touch_fixes_it(finished):
    """Guards: a checkpoint with a future modification time made every run recompute all the model's
    outputs and then fail on Snakemake's clock-skew check. Now the workflow stops while it is read,
    naming the key, the file and `touch`; after the printed command the study runs (the model's
    outputs once more, as the file is newer than them) and then plans nothing."""
    _, configfile, work, checkpoint = finished
    before = checkpoint.stat()
    try:
        os.utime(checkpoint, (before.st_atime, time.time() + 86400))
        with pytest.raises(WorkflowError) as err:
            dry_run_jobs(configfile, work)
        message = str(err.value)
        assert f"models.ckpt.checkpoint: {checkpoint} is dated" in message and "ahead of this machine's clock" in message
        assert f"touch {checkpoint}" in message and "no job was started" in message
        subprocess.run(["touch", str(checkpoint)], check=True)  # the printed remedy
        planned = dry_run_jobs(configfile, work)
        assert {"extract_outputs"} <= {rule for rule, _ in planned}
        assert all(w.get("model") in (None, "ckpt") for _, w in planned), planned  # the other model is untouched
        run_snakemake(configfile, work)  # no clock-skew failure
        assert dry_run_jobs(configfile, work) == []
    finally:
        os.utime(checkpoint, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_a_nan_checkpoint_stops_its_extraction_and_the_fixed_rerun_completes(finished, tmp_path):
    """Guards: a diverged fine-tune (NaN weights) ran without a warning and its all-NaN logits were
    scored as class 0. Its extraction job stops naming model, dataset and count; no output is written;
    with the weights fixed, the same command completes."""
    config, _, _, _ = finished
    broken = tmp_path / "diverged.pth"
    state = timm_state(seed=1)
    state["head.fc.weight"] = torch.full_like(state["head.fc.weight"], float("nan"))
    torch.save(state, broken)
    study = copy.deepcopy(config)
    study["models"] = {"ckpt": {**config["models"]["ckpt"], "checkpoint": str(broken)}}
    study["datasets"] = {"imagenet_val": config["datasets"]["imagenet_val"]}
    study["evaluations"] = {"accuracy": {"datasets": ["imagenet_val"]}}
    configfile = write_config(tmp_path / "nan.yaml", study)
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(WorkflowError):
        run_snakemake(configfile, work, targets=["results/metrics/accuracy.csv"])
    logs = "".join(Path(p).read_text() for p in glob.glob(str(work / "results/logs/extract_outputs/**/*.log"),
                                                            recursive=True))
    assert "model ckpt on dataset imagenet_val: 4 of 4 images gave NaN or infinite outputs" in logs, logs[-3000:]
    assert "nothing was written" in logs
    assert glob.glob(str(work / "results/**/*.h5"), recursive=True) == []
    assert not (work / "results/metrics/accuracy.csv").exists()
    torch.save(timm_state(seed=1), broken)  # the weights fixed
    run_snakemake(configfile, work, targets=["results/metrics/accuracy.csv"])
    assert (work / "results/metrics/accuracy.csv").exists()

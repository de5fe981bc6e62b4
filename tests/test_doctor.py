"""The pre-flight table (python -m beyond_imagenet.doctor) on a ready and an unready study, offline.

Weights are looked up in a fake Hugging Face cache laid out as huggingface_hub lays it out
(models--org--name/blobs/<sha256>, snapshots/<commit>/<file> -> blob, refs/main); the GPU, the
driver and the disk estimate are faked where a row depends on them."""

from __future__ import annotations

import hashlib
import os
import sys
import types
from pathlib import Path

import pytest
import torch
import yaml

from beyond_imagenet import devices, doctor

COMMIT = "89abcdef0123456789abcdef0123456789abcdef"
PATH = os.environ.get("PATH", "")


def fake_hub_cache(root: Path, repo: str, filename: str, data: bytes) -> Path:
    folder = root / f"models--{repo.replace('/', '--')}"
    digest = hashlib.sha256(data).hexdigest()
    (folder / "blobs").mkdir(parents=True)
    (folder / "blobs" / digest).write_bytes(data)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(COMMIT)
    snapshot = folder / "snapshots" / COMMIT / filename
    snapshot.parent.mkdir(parents=True)
    snapshot.symlink_to(Path("..", "..", "blobs", digest))
    return snapshot


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """No GPU, an empty hub cache under tmp_path, no disk estimate module (until a test adds one)."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    for var in (*devices.GPU_LIST_VARS, *devices.GPU_COUNT_VARS, "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(devices, "NVIDIA_PROC_VERSION", tmp_path / "no-driver")
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setitem(sys.modules, "beyond_imagenet.diskspace", None)  # import fails: "unknown"
    monkeypatch.chdir(tmp_path)
    return cache


def _photos(root: Path, per_class: dict[str, int]) -> None:
    from PIL import Image

    for wnid, n in per_class.items():
        (root / wnid).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (32, 32), (i * 30, 0, 0)).save(root / wnid / f"x_{i}.jpg")


def _study(tmp_path: Path, evaluation: str = "calibration", **datasets) -> Path:
    config = {
        "study": "doctor", "results_dir": "results", "resources_dir": "resources",
        "extraction": {"device": "auto"},
        "models": {"atto": {"source": "timm", "name": "convnext_atto", "pretrained": "d2_in1k"},
                   "rand": {"source": "timm", "name": "convnext_atto", "pretrained": False}},
        "datasets": datasets,
        "evaluations": {evaluation: {"datasets": list(datasets)}},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _rows(report) -> dict[tuple[str, str], doctor.Row]:
    return {(r.check, r.item): r for r in report.rows}


def test_ready_study(machine, tmp_path, capsys):
    snapshot = fake_hub_cache(machine, "timm/convnext_atto.d2_in1k", "model.safetensors", b"weights")
    _photos(tmp_path / "mine" / "imagenet-r", {"n01443537": 3, "n01484850": 2})
    study = _study(tmp_path, imagenet_r={"kind": "imagenet_r", "source": "manual",
                                         "root": str(tmp_path / "mine" / "imagenet-r")})
    assert doctor.main([str(study), "--offline"]) == 0
    out = capsys.readouterr().out
    assert "ready: nothing above stops the run" in out
    lines = {line.split()[0] + " " + line.split()[1]: line for line in out.splitlines()[2:] if len(line.split()) > 2}
    assert "ok" in lines["weights atto"].split() and str(snapshot) in lines["weights atto"]
    assert "random weights (seed 0)" in lines["weights rand"]
    assert "manual: 5 images in" in lines["dataset imagenet_r"]
    assert "(the full set has 30,000)" in lines["dataset imagenet_r"]  # a slice of the set: said, not failed
    assert "warn" in lines["device extraction.device"].split()  # auto without any GPU: runs on CPU
    assert "needed unknown" in lines["disk needed"]


def test_unready_study(machine, tmp_path, monkeypatch, capsys):
    """Everything that would stop the run is a FAIL row, and the exit status is 1."""
    from beyond_imagenet.study import load_config

    monkeypatch.setenv("SLURM_JOB_GPUS", "0")  # a GPU job whose torch cannot use the GPU
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    real_find_spec = doctor.importlib.util.find_spec
    monkeypatch.setattr(doctor.importlib.util, "find_spec",
                        lambda name, *a: None if name == "pyarrow" else real_find_spec(name, *a))
    diskspace = types.ModuleType("beyond_imagenet.diskspace")
    diskspace.required_bytes = lambda study: 10**18 if study.models else 0  # an exabyte: more than any disk has
    monkeypatch.setitem(sys.modules, "beyond_imagenet.diskspace", diskspace)
    study = _study(tmp_path, "robustness", imagenet_val={"kind": "imagenet_val", "source": "manual",
                                           "root": str(tmp_path / "no" / "val")},
                   imagenet_hard={"kind": "imagenet_hard", "source": "download"},
                   imagenet_r={"kind": "imagenet_r", "source": "download"})
    report = doctor.check(load_config(study), offline=True)
    rows = _rows(report)
    assert not report.ready
    failed = {(r.check, r.item) for r in report.failed}
    assert failed == {("device", "extraction.device auto"), ("weights", "atto"), ("dataset", "imagenet_val"),
                      ("dataset", "imagenet_hard"), ("dataset", "imagenet_r"), ("package", "pyarrow"),
                      ("disk", "needed / free")}
    assert "SLURM_JOB_GPUS=0" in rows["device", "extraction.device auto"].detail
    assert "not in the cache and the hub is offline" in rows["weights", "atto"].detail
    assert "pending: 0/1 file(s) downloaded" in rows["dataset", "imagenet_r"].detail
    assert "pip install pyarrow" in rows["package", "pyarrow"].detail
    assert rows["disk", "needed / free"].detail.startswith("needed 1,000,000,000.0 GB, free")
    table = report.table()
    assert "NOT READY: 7 problem(s)" in table
    assert "datasets.imagenet_val: ImageNet-1k val cannot be downloaded automatically" in table  # what to do
    assert doctor.main([str(study)]) == 1
    capsys.readouterr()


def test_online_a_missing_cache_or_download_is_only_a_warning(machine, tmp_path):
    """With internet (no --offline, no HF_HUB_OFFLINE) the jobs fetch what is missing."""
    from beyond_imagenet.study import load_config

    study = _study(tmp_path, imagenet_r={"kind": "imagenet_r", "source": "download"})
    report = doctor.check(load_config(study), offline=False)
    rows = _rows(report)
    assert report.ready
    assert rows["weights", "atto"].status == doctor.WARN and rows["dataset", "imagenet_r"].status == doctor.WARN


@pytest.mark.workflow
def test_onstart_stops_the_run_before_any_job(machine, tmp_path, monkeypatch, caplog):
    """The Snakefile's onstart runs the doctor: a GPU job on a torch that cannot use the GPU stops
    the whole run before any job starts (here the default study, moved to `device: auto`)."""
    from tests.conftest import REPO, run_snakemake

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["extraction"]["device"] = "auto"
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("PATH", PATH)  # Snakemake needs a shell (the driver is the faked file below)
    monkeypatch.setenv("SLURM_JOB_GPUS", "0")
    monkeypatch.setattr(devices, "NVIDIA_PROC_VERSION", tmp_path / "driver")
    (tmp_path / "driver").write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19\n")
    with pytest.raises(Exception) as err:  # Snakemake wraps the WorkflowError in its own exception
        run_snakemake(tmp_path / "study.yaml", tmp_path)
    text = str(err.value) + caplog.text
    assert "pre-flight check found problems" in text and "driver: 535.104.05" in text
    assert not (tmp_path / "results" / "manifests").exists() and not (tmp_path / "resources").exists()

"""A job given a GPU that torch cannot use stops with what to do; without any GPU, `auto` runs on
the CPU with a warning. The GPU, the driver and torch's CUDA build are faked (files, env, PATH)."""

import logging
import stat

import pytest
import torch

from beyond_imagenet import devices
from beyond_imagenet.devices import DeviceError, gpu_environment, lease_device

PROC_535 = ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023\n"
            "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n")
GPU_VARS = (*devices.GPU_LIST_VARS, *devices.GPU_COUNT_VARS)


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """A machine whose GPU facts the test sets: no GPU variables, no driver, no nvidia-smi, and a
    torch that sees no CUDA device (as on an old driver with a CUDA 13 wheel)."""
    for var in GPU_VARS:
        monkeypatch.delenv(var, raising=False)
    proc = tmp_path / "proc_nvidia_version"
    monkeypatch.setattr(devices, "NVIDIA_PROC_VERSION", proc)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))  # no real nvidia-smi
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", "13.0")

    class Machine:
        def driver(self, text=PROC_535):
            proc.write_text(text)

        def nvidia_smi(self, output):
            exe = bin_dir / "nvidia-smi"
            exe.write_text(f"#!/bin/sh\nprintf '{output}'\n")
            exe.chmod(exe.stat().st_mode | stat.S_IXUSR)

    return Machine()


def _lease(requested, tmp_path):
    with lease_device(requested, tmp_path / "locks") as device:
        return device


@pytest.mark.parametrize("requested", ["auto", "cuda"])
def test_slurm_gpu_job_with_a_torch_that_cannot_use_it_stops(machine, monkeypatch, tmp_path, requested):
    machine.driver()
    monkeypatch.setenv("SLURM_JOB_GPUS", "0")
    with pytest.raises(DeviceError) as err:
        _lease(requested, tmp_path)
    text = str(err.value)
    assert "SLURM_JOB_GPUS=0" in text
    assert "CUDA 13.0 build" in text and "driver >= 580.65" in text  # torch's build and what it needs
    assert "driver: 535.104.05" in text
    # The driver runs CUDA 12 wheels: the index to install from, and the explicit CPU way.
    assert "https://download.pytorch.org/whl/cu126" in text
    assert "extraction.device: cpu" in text
    assert not (tmp_path / "locks").exists()


def test_cuda_visible_devices_alone_is_a_gpu(machine, monkeypatch, tmp_path):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.raises(DeviceError, match="CUDA_VISIBLE_DEVICES=0"):
        _lease("auto", tmp_path)


def test_driver_found_by_nvidia_smi_and_cpu_only_torch(machine, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.version, "cuda", None)
    machine.nvidia_smi("550.54.15, NVIDIA A100-SXM4-80GB\\n550.54.15, NVIDIA A100-SXM4-80GB\\n")
    with pytest.raises(DeviceError) as err:
        _lease("auto", tmp_path)
    text = str(err.value)
    assert "CPU-only build" in text and "driver: 550.54.15" in text
    assert "2 GPU(s): NVIDIA A100-SXM4-80GB" in text


def test_driver_too_old_for_any_cuda_wheel(machine, tmp_path):
    machine.driver("NVRM version: NVIDIA UNIX x86_64 Kernel Module  418.226.00  Mon Nov  1 2021\n")
    with pytest.raises(DeviceError, match="update the driver"):
        _lease("auto", tmp_path)


def test_no_gpu_at_all_auto_runs_on_cpu_with_a_warning(machine, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="beyond_imagenet.devices"):
        assert _lease("auto", tmp_path).type == "cpu"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and "no GPU" in warnings[0].getMessage() and "extraction.device: cpu" in warnings[0].getMessage()


def test_no_gpu_at_all_cuda_stops(machine, tmp_path):
    with pytest.raises(DeviceError, match="has no GPU"):
        _lease("cuda", tmp_path)


def test_explicit_cpu_ignores_the_gpu(machine, monkeypatch, tmp_path, caplog):
    """`device: cpu` is the explicit way: no stop, no warning, even on a GPU node."""
    machine.driver()
    monkeypatch.setenv("SLURM_JOB_GPUS", "0")
    with caplog.at_level(logging.INFO, logger="beyond_imagenet.devices"):
        assert _lease("cpu", tmp_path).type == "cpu"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("env, given", [
    ({"CUDA_VISIBLE_DEVICES": ""}, False),
    ({"CUDA_VISIBLE_DEVICES": "-1"}, False),
    ({"SLURM_JOB_GPUS": "NoDevFiles"}, False),
    ({"SLURM_GPUS_ON_NODE": "0"}, False),
    ({"SLURM_GPUS_ON_NODE": "2"}, True),
    ({"SLURM_GPUS": "h100:1"}, True),
    ({"SLURM_STEP_GPUS": "0,1"}, True),
    ({"CUDA_VISIBLE_DEVICES": "GPU-0000-aaaa"}, True),
])
def test_what_counts_as_given_a_gpu(machine, env, given):
    assert gpu_environment(env).has_gpu is given


def test_hidden_devices_override_the_driver(machine):
    """CUDA_VISIBLE_DEVICES="" on a GPU node: the job was given no GPU, `auto` may use the CPU."""
    machine.driver()
    assert gpu_environment({"CUDA_VISIBLE_DEVICES": ""}).has_gpu is False
    assert gpu_environment({}).driver == "535.104.05"


"""The per-rule conda envs (envs/*.yaml): pinned to the lock, and their pip section is a requirements
file pip accepts and resolves (checked offline against this environment, which is the lock)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import yaml

from conftest import REPO

ENVS = sorted((REPO / "envs").glob("*.yaml"))


def _lock() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version.strip()
    return pins


def _pip_section(env) -> list[str]:
    spec = yaml.safe_load(env.read_text())
    (pip,) = [d["pip"] for d in spec["dependencies"] if isinstance(d, dict)]
    return pip


def test_every_rule_kind_has_an_env():
    assert {p.stem for p in ENVS} == {"torch", "analysis"}


@pytest.mark.parametrize("env", ENVS, ids=lambda p: p.stem)
def test_env_pins_match_the_lock(env):
    lock = _lock()
    pinned = [line for line in _pip_section(env) if "==" in line]
    assert pinned
    for line in pinned:
        name, version = line.split("==")
        assert lock[re.sub(r"[-_.]+", "-", name).lower()] == version, line


@pytest.mark.parametrize("env", ENVS, ids=lambda p: p.stem)
def test_env_pip_section_is_a_requirements_file_pip_resolves(env, tmp_path):
    """What conda does with the pip list: write it to a requirements file and pip install -r it.
    Offline (--no-index) against this venv, so every pin must be the installed (= locked) version,
    every line must be valid in a requirements file, and the checkout must install editable."""
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("\n".join(_pip_section(env)) + "\n")
    run = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--no-build-isolation",
         "--disable-pip-version-check", "-r", str(requirements)],
        capture_output=True, text=True, env={**os.environ, "BEYOND_IMAGENET_ROOT": str(REPO)}, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Would install beyond-imagenet" in run.stdout

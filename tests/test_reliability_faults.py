"""The fault-injection hook itself (beyond_imagenet/faults.py): inert unless armed, and then it kills
the whole process group, so a parent (Snakemake) dies with the job that reached the point."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from beyond_imagenet import faults
from conftest import REPO


def test_unarmed_or_other_point_does_nothing(monkeypatch):
    monkeypatch.setattr(faults, "FAULT", "")
    faults.at("extract-shard:1")
    monkeypatch.setattr(faults, "FAULT", "extract-shard:2")
    faults.at("extract-shard:1")  # still alive


def test_armed_point_kills_the_whole_process_group(tmp_path):
    parent = textwrap.dedent(
        f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "from beyond_imagenet import faults; faults.at('unpack:mid')"])
        child.wait()
        time.sleep(30)  # never reached: the child's fault kills this process too
        open({str(tmp_path / "survived")!r}, "w").close()
        """
    )
    env = {**os.environ, faults.ENV: "unpack:mid", "PYTHONPATH": str(REPO)}
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", parent], env=env, start_new_session=True,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert f"{faults.ENV}=unpack:mid: killing process group" in proc.stderr
    assert not (tmp_path / "survived").exists() and time.monotonic() - start < 30

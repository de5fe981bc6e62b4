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


def test_leftovers_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    """What a SIGKILLed writer leaves (a .tmp-<pid> file, a half-unpacked .tmp-<pid>-part0 folder)
    is removed before the next write; a live writer's temporary is left alone."""
    from beyond_imagenet.io import remove_leftovers, remove_stale_tmp

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(done.stdout)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / f".table.csv.tmp-{dead}").write_text("half a table")
        (tmp_path / f".table.csv.tmp-{live.pid}").write_text("being written")
        (tmp_path / f".ds.tmp-{dead}-part0" / "noise").mkdir(parents=True)
        (tmp_path / f".ds.tmp-{live.pid}").mkdir()
        remove_stale_tmp(tmp_path / "table.csv")
        remove_leftovers(tmp_path, ".ds.tmp-*")
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f".table.csv.tmp-{live.pid}",
                                                                      f".ds.tmp-{live.pid}"])
    finally:
        live.kill()
        live.wait()


def test_kill_while_assembling_the_hdf5_then_rerun_gives_the_same_file(tmp_path):
    """SIGKILL with the complete HDF5 written under its temporary name, not yet renamed (the largest
    write of a run): no output exists, and the rerun, which reassembles from the checkpoint shards,
    gives the uninterrupted run's file, leaving no temporary behind."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(REPO / "tests")!r})
        from pathlib import Path
        from test_extract import make_images, run
        data = Path({str(tmp_path / "data")!r})
        samples = make_images(data)  # the same files every time
        run(data, samples, Path(sys.argv[1]))
        """
    )

    def extract(out, fault=""):
        env = {**os.environ, "PYTHONPATH": str(REPO), faults.ENV: fault}
        return subprocess.run([sys.executable, "-c", script, str(out)], env=env, start_new_session=True,
                              capture_output=True, text=True, timeout=120)

    assert extract(tmp_path / "ref" / "toy.h5").returncode == 0
    out = tmp_path / "killed" / "toy.h5"
    killed = extract(out, "hdf5:before-rename")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not out.exists() and list(out.parent.glob(".toy.h5.tmp-*"))  # the complete temporary is left
    assert extract(out).returncode == 0
    assert out.read_bytes() == (tmp_path / "ref" / "toy.h5").read_bytes()
    assert sorted(p.name for p in out.parent.iterdir()) == ["toy.h5"]

"""GPU leasing across processes (issue #7): distinct devices, waiting, and a killed holder's device freed.

Each holder is a separate Python process that sees two fake CUDA devices (``torch.cuda``'s
is_available / device_count / get_device_properties(uuid) / set_device / get_device_name
replaced), leases one with beyond_imagenet.devices.lease_device, reports it in a status folder and
holds it until told to release. The stand-in ``torch`` has only what devices.py touches, so a
child starts in a fraction of a second instead of importing the real torch.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import REPO

CHILD = textwrap.dedent(
    r"""
    import sys, time, types
    from pathlib import Path

    class device:  # torch.device, enough for lease_device
        def __init__(self, type, index=None):
            self.type, self.index = type, index

    uuids = ["GPU-00000000-aaaa", "GPU-11111111-bbbb"]
    cuda = types.SimpleNamespace(
        is_available=lambda: True,
        device_count=lambda: len(uuids),
        get_device_properties=lambda i: types.SimpleNamespace(uuid=uuids[i], name=f"Fake GPU {i}"),
        get_device_name=lambda i: f"Fake GPU {i}",
        set_device=lambda i: None,
    )
    sys.modules["torch"] = types.SimpleNamespace(cuda=cuda, device=device)

    from beyond_imagenet.devices import lease_device

    lock_dir, name, status = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    with lease_device("auto", lock_dir, poll_seconds=0.05) as leased:
        (status / f"{name}.tmp").write_text(str(leased.index))
        (status / f"{name}.tmp").rename(status / f"{name}.leased")
        while not (status / f"{name}.release").exists():
            time.sleep(0.02)
    (status / f"{name}.done").write_text("")
    """
)


def wait_for(predicate, timeout=30.0, what=""):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_lease_across_processes(tmp_path):
    locks, status = tmp_path / "locks", tmp_path / "status"
    status.mkdir()
    script = tmp_path / "holder.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    names = ["a", "b", "c", "d"]
    procs = {n: subprocess.Popen([sys.executable, str(script), str(locks), n, str(status)], env=env,
                                 stderr=subprocess.PIPE, text=True) for n in names}

    def leased():
        return {p.stem: int(p.read_text()) for p in status.glob("*.leased")}

    try:
        # Two devices, four jobs: two hold distinct devices, two wait.
        wait_for(lambda: len(leased()) == 2, what="two holders")
        time.sleep(0.5)  # the waiters poll every 0.05 s: they had every chance to take a device
        first = leased()
        assert len(first) == 2 and set(first.values()) == {0, 1}
        (h1, d1), (h2, d2) = sorted(first.items())
        waiters = [n for n in names if n not in first]

        # A holder that releases normally: exactly one waiter takes its device.
        (status / f"{h1}.release").write_text("")
        wait_for(lambda: len(leased()) == 3, what="a waiter to take the released device")
        time.sleep(0.3)
        now = leased()
        assert len(now) == 3 and (status / f"{h1}.done").exists()
        (w1,) = [n for n in waiters if n in now]
        assert now[w1] == d1
        (w2,) = [n for n in waiters if n != w1]

        # A holder killed with SIGKILL: the kernel drops its lock, the last waiter gets that device.
        procs[h2].send_signal(signal.SIGKILL)
        procs[h2].wait(timeout=10)
        wait_for(lambda: w2 in leased(), what="the last waiter to take the killed holder's device")
        assert leased()[w2] == d2 and not (status / f"{h2}.done").exists()
        assert leased()[w1] != leased()[w2]

        for n in (w1, w2):
            (status / f"{n}.release").write_text("")
        for n in (h1, w1, w2):
            assert procs[n].wait(timeout=10) == 0, procs[n].stderr.read()
        # Lock files are keyed by device UUID, not by the index a job happens to see.
        assert sorted(p.name for p in locks.iterdir()) == ["gpu-GPU-00000000-aaaa.lock", "gpu-GPU-11111111-bbbb.lock"]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_cpu_when_no_gpu_is_visible(tmp_path):
    """Without CUDA nothing is locked and nothing waits (the default study's path)."""
    torch = pytest.importorskip("torch")
    from beyond_imagenet.devices import lease_device

    if torch.cuda.is_available():
        pytest.skip("a real GPU is visible")
    with lease_device("auto", tmp_path / "locks") as device:
        assert device.type == "cpu"
    assert not (tmp_path / "locks").exists()


def test_lock_folder_and_files_are_shared_by_all_users(tmp_path):
    """Another user's job must be able to take (and respect) a lease: the folder is sticky and
    world-writable, each lock file readable and writable by all, whatever the umask."""
    import stat

    from beyond_imagenet.devices import _shared_folder, _shared_lock_file

    old = os.umask(0o077)
    try:
        folder = tmp_path / "locks"
        _shared_folder(folder)
        handle = _shared_lock_file(folder / "gpu-x.lock")
        handle.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o1777
    assert stat.S_IMODE((folder / "gpu-x.lock").stat().st_mode) == 0o666

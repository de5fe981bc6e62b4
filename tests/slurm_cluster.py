"""A throw-away one-node SLURM cluster on localhost, for tests/test_slurm.py.

munged, MariaDB, slurmdbd, slurmctld and slurmd run as root from generated configs in one temporary
folder, on free local ports, with their own sockets: nothing under /etc is read or changed and no
system service is started. The node advertises the machine's real CPUs and memory (``slurmd -C``),
in two partitions named as in ``profiles/slurm`` (``cpu``, the default, and ``gpu``). Every daemon
started is stopped again by ``stop()`` (also when starting failed half-way).

Debian packages (bookworm: slurm-wlm 22.05, MariaDB 10.11, munge 0.5): ``install()`` installs them
with apt-get when asked to (root only), with service starts blocked while apt runs.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PACKAGES = ["slurmctld", "slurmd", "slurmdbd", "slurm-client", "munge", "mariadb-server"]
# The commands the cluster needs; all come with PACKAGES.
COMMANDS = ["munged", "mungekey", "mariadbd", "mariadb-install-db", "mariadb", "slurmdbd", "slurmctld",
            "slurmd", "sbatch", "sacct", "sacctmgr", "scontrol", "sinfo", "squeue"]
SBIN = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
CLUSTER = "bi-test"
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
FAKE_GPUS = 1
# Typed, so that a GPU-type request (profiles/slurm: BEYOND_IMAGENET_SLURM_GPU_MODEL) can be met and
# is accounted; an untyped --gpus=1 matches it as well.
FAKE_GPU_TYPE = "h100"
ACCOUNT = "bi-test"


def which(name: str) -> str | None:
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), *SBIN]))


def missing_commands() -> list[str]:
    return [name for name in COMMANDS if which(name) is None]


def install() -> None:
    """apt-get install PACKAGES (root only); services are kept from starting meanwhile (policy-rc.d)."""
    if os.geteuid() != 0:
        raise RuntimeError("installing SLURM needs root")
    policy = Path("/usr/sbin/policy-rc.d")
    ours = not policy.exists()
    if ours:
        policy.write_text("#!/bin/sh\n# written by tests/slurm_cluster.py while apt-get runs\nexit 101\n")
        policy.chmod(0o755)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True, text=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES],
                       check=True, env=env, capture_output=True, text=True)
    except subprocess.CalledProcessError as err:
        raise RuntimeError(f"{' '.join(err.cmd)} failed:\n{err.stdout[-2000:]}{err.stderr[-2000:]}") from err
    finally:
        if ours:
            policy.unlink()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_line() -> str:
    """The node as it really is (slurmd -C), bound to 127.0.0.1."""
    out = subprocess.run([which("slurmd"), "-C"], check=True, capture_output=True, text=True).stdout
    fields = dict(item.split("=", 1) for item in out.split() if "=" in item)
    keep = ["CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory"]
    return f"NodeName={fields['NodeName']} NodeAddr=127.0.0.1 " + " ".join(f"{k}={fields[k]}" for k in keep)


class Cluster:
    """Start with ``start()``; ``env`` is what a client (sbatch, sacct, Snakemake) needs."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="bi-slurm-", dir="/tmp"))
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.pidfiles: list[tuple[str, Path]] = []
        self.env = {**os.environ, "SLURM_CONF": str(self.dir / "slurm.conf"),
                    "PATH": os.pathsep.join([os.environ.get("PATH", ""), *SBIN])}
        self.node = ""
        self.linked_conf = False

    # -- helpers -------------------------------------------------------------------------------
    def log(self, name: str) -> str:
        path = self.dir / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else "(no log)"

    def run(self, *cmd: str, check: bool = True, timeout: float = 60) -> str:
        proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
        return proc.stdout

    def wait_for(self, what: str, test, timeout: float = 60, log: str | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited ({proc.returncode}) while waiting for {what}:\n"
                                       f"{self.log(name)}")
            try:
                if test():
                    return
            except (subprocess.SubprocessError, OSError, RuntimeError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"timed out waiting for {what}:\n{self.log(log) if log else ''}")

    def daemon(self, name: str, *cmd: str) -> None:
        """A daemon in the foreground, in its own process group, output to <name>.log."""
        with open(self.dir / f"{name}.log", "ab") as out:
            proc = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.procs.append((name, proc))

    # -- the cluster ---------------------------------------------------------------------------
    def start(self) -> "Cluster":
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        d = self.dir
        for sub in ("db", "spool", "state", "munge"):
            (d / sub).mkdir()
        os.chmod(d, 0o755)
        os.chmod(d / "munge", 0o700)
        # munge: own key, socket and seed.
        key, msock = d / "munge" / "munge.key", d / "munge" / "munge.socket"
        self.run(which("mungekey"), "--create", f"--keyfile={key}")
        self.daemon("munged", which("munged"), "--foreground", "--force", f"--socket={msock}",
                    f"--key-file={key}", f"--pid-file={d / 'munge' / 'munged.pid'}",
                    f"--seed-file={d / 'munge' / 'munged.seed'}", f"--log-file={d / 'munged.log'}")
        self.wait_for("munged", msock.exists, log="munged")
        # MariaDB on 127.0.0.1:<port>, its own datadir and socket.
        db_port, dbsock = free_port(), d / "mysql.sock"
        self.run(which("mariadb-install-db"), "--no-defaults", f"--datadir={d / 'db'}", "--user=root",
                 "--auth-root-authentication-method=socket", "--skip-test-db", timeout=180)
        self.daemon("mariadb", which("mariadbd"), "--no-defaults", f"--datadir={d / 'db'}", "--user=root",
                    f"--socket={dbsock}", f"--port={db_port}", "--bind-address=127.0.0.1",
                    f"--pid-file={d / 'mariadb.pid'}", "--skip-name-resolve", "--innodb-buffer-pool-size=64M",
                    f"--log-error={d / 'mariadb.log'}")
        self.wait_for("MariaDB", lambda: self.run(which("mariadb"), f"--socket={dbsock}", "-e", "select 1") is not None,
                      log="mariadb")
        self.run(which("mariadb"), f"--socket={dbsock}", "-e",
                 "CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';"
                 "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;")
        # slurm.conf + slurmdbd.conf (slurmdbd reads it next to $SLURM_CONF).
        dbd_port, ctld_port, slurmd_port = free_port(), free_port(), free_port()
        self.node = node_line()
        node_name = self.node.split()[0].split("=", 1)[1]
        common = f"AuthType=auth/munge\nAuthInfo=socket={msock}\n"
        (d / "slurmdbd.conf").write_text(
            common + f"DbdHost=localhost\nDbdAddr=127.0.0.1\nDbdPort={dbd_port}\nSlurmUser=root\n"
            f"LogFile={d / 'slurmdbd.log'}\nPidFile={d / 'slurmdbd.pid'}\n"
            f"StorageType=accounting_storage/mysql\nStorageHost=127.0.0.1\nStoragePort={db_port}\n"
            "StorageUser=slurm\nStoragePass=slurm\nStorageLoc=slurm_acct_db\n")
        os.chmod(d / "slurmdbd.conf", 0o600)
        # GPUs by count only (no device files): jobs can ask for --gpus and are accounted, see none.
        (d / "gres.conf").write_text(
            f"NodeName={node_name} Name=gpu Type={FAKE_GPU_TYPE} Count={FAKE_GPUS} File=/dev/null\n")
        (d / "slurm.conf").write_text(
            common + f"ClusterName={CLUSTER}\nSlurmctldHost={node_name}(127.0.0.1)\n"
            f"SlurmctldPort={ctld_port}\nSlurmdPort={slurmd_port}\nSlurmUser=root\nSlurmdUser=root\n"
            f"StateSaveLocation={d / 'state'}\nSlurmdSpoolDir={d / 'spool'}\n"
            f"SlurmctldPidFile={d / 'slurmctld.pid'}\nSlurmdPidFile={d / 'slurmd.pid'}\n"
            f"SlurmctldLogFile={d / 'slurmctld.log'}\nSlurmdLogFile={d / 'slurmd.log'}\n"
            "ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\nJobAcctGatherType=jobacct_gather/linux\n"
            "SelectType=select/cons_tres\nSelectTypeParameters=CR_Core_Memory\n"
            "AccountingStorageType=accounting_storage/slurmdbd\nAccountingStorageHost=127.0.0.1\n"
            f"AccountingStoragePort={dbd_port}\nAccountingStoragePass={msock}\n"
            f"GresTypes=gpu\nAccountingStorageTRES=gres/gpu,gres/gpu:{FAKE_GPU_TYPE}\n"
            "JobCompType=jobcomp/none\nMpiDefault=none\nReturnToService=2\nSchedulerType=sched/backfill\n"
            "SchedulerParameters=sched_interval=2\nSlurmctldTimeout=30\nSlurmdTimeout=30\nInactiveLimit=0\n"
            "MinJobAge=600\nKillWait=5\nWaitTime=0\n"
            f"{self.node} Gres=gpu:{FAKE_GPU_TYPE}:{FAKE_GPUS} State=UNKNOWN\n"
            f"PartitionName=cpu Nodes={node_name} Default=YES MaxTime=INFINITE State=UP\n"
            f"PartitionName=gpu Nodes={node_name} MaxTime=INFINITE State=UP\n")
        # Job steps need the config too, and snakemake-executor-plugin-slurm-jobstep drops SLURM_* variables
        # (SLURM_CONF too) before its srun: so the config is linked where every SLURM command looks.
        if SYSTEM_CONF.is_symlink() or SYSTEM_CONF.exists():
            raise RuntimeError(f"{SYSTEM_CONF} exists: this machine has a SLURM configuration; not touching it")
        SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
        SYSTEM_CONF.symlink_to(d / "slurm.conf")
        self.linked_conf = True
        self.daemon("slurmdbd", which("slurmdbd"), "-D")
        self.wait_for("slurmdbd", lambda: self.run(which("sacctmgr"), "-n", "list", "cluster") is not None, log="slurmdbd")
        self.run(which("sacctmgr"), "-i", "add", "cluster", CLUSTER)
        self.run(which("sacctmgr"), "-i", "add", "account", ACCOUNT, f"cluster={CLUSTER}")
        self.run(which("sacctmgr"), "-i", "add", "user", "root", f"account={ACCOUNT}", f"cluster={CLUSTER}")
        self.daemon("slurmctld", which("slurmctld"), "-D", "-i")
        self.wait_for("slurmctld", lambda: self.run(which("scontrol"), "ping").count("UP") > 0, log="slurmctld")
        self.daemon("slurmd", which("slurmd"), "-D", "-N", node_name)
        self.wait_for("the node to be idle",
                      lambda: "idle" in self.run(which("sinfo"), "-h", "-o", "%T", "-p", "cpu"), log="slurmd")

    def stop(self) -> None:
        """Stop every daemon this cluster started (slurm first, then its database, then munge)."""
        for name, proc in reversed(self.procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
                except ProcessLookupError:
                    pass
        # Job steps slurmd started run in their own sessions: none may outlive the cluster.
        for pid in self.slurmstepd_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.procs = []
        if self.linked_conf and SYSTEM_CONF.is_symlink() and Path(os.readlink(SYSTEM_CONF)) == self.dir / "slurm.conf":
            SYSTEM_CONF.unlink()
        self.linked_conf = False
        for _ in range(10):  # a daemon's last files may still be landing
            shutil.rmtree(self.dir, ignore_errors=True)
            if not self.dir.exists():
                break
            time.sleep(0.5)

    def slurmstepd_pids(self) -> list[int]:
        """slurmstepd processes that belong to this cluster (their command line names our spool dir)."""
        pids = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
                environ = (proc / "environ").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "slurmstepd" in cmdline and str(self.dir) in environ:
                pids.append(int(proc.name))
        return pids

    def alive(self) -> list[str]:
        return [name for name, proc in self.procs if proc.poll() is None]

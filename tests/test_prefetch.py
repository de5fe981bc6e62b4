"""Prefetch on a login node, then run with the network refused (a compute node without internet).

A local HTTP server plays both the dataset host (a tar of an ImageNet-R-layout folder) and the
Hugging Face hub (HF_ENDPOINT: HEAD/GET ``/<repo>/resolve/<revision>/<file>`` with the commit and
ETag headers huggingface_hub reads), serving real (random, seeded) convnext_atto weights for
``timm/convnext_atto.d2_in1k``. `python -m beyond_imagenet.prefetch` fills the hub cache in its
real layout (models--org--name/snapshots/<commit>/..., refs/main, blobs named by sha256); the
doctor, run offline, then says the study is ready; and the extraction runs through Snakemake with
HF_HUB_OFFLINE=1 and every internet socket refused in every process, planning no download job.
"""

from __future__ import annotations

import hashlib
import io
import os
import socket
import subprocess
from pathlib import Path
import sys
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from tests.conftest import REPO, dry_run_jobs, run_snakemake

REPO_ID = "timm/convnext_atto.d2_in1k"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
WNIDS = ("n01443537", "n01484850")  # goldfish, great white shark: ImageNet-R classes

# Imported by every Python process of the extraction (PYTHONPATH): internet sockets fail at once.
NO_NETWORK = '''
import socket
_connect = socket.socket.connect
def _refuse(self, address, *args):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        raise OSError(101, "network refused by the test (a compute node without internet)")
    return _connect(self, address, *args)
socket.socket.connect = _refuse
socket.socket.connect_ex = lambda self, address: _refuse(self, address) or 0
'''


def _weights() -> bytes:
    import timm
    import torch
    from safetensors.torch import save

    torch.manual_seed(0)
    model = timm.create_model("convnext_atto", pretrained=False)
    return save({k: v.contiguous() for k, v in model.state_dict().items()})


def _dataset_tar() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for c, wnid in enumerate(WNIDS):
            for i in range(2):
                image = io.BytesIO()
                Image.new("RGB", (64, 48), (40 * c + 20 * i, 90, 160)).save(image, format="JPEG")
                info = tarfile.TarInfo(f"imagenet-r/{wnid}/art_{i}.jpg")
                info.size = image.tell()
                image.seek(0)
                tar.addfile(info, image)
    return buffer.getvalue()


class Server:
    """Files by URL path; hub paths answer with the hub's headers; everything requested is logged."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.requests = files, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, body: bool):
                server.requests.append((self.command, self.path))
                data = server.files.get(self.path.split("?")[0])
                if data is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                if "/resolve/" in self.path:
                    self.send_header("X-Repo-Commit", COMMIT)
                    self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def do_HEAD(self):
                self._answer(False)

            def do_GET(self):
                self._answer(True)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def login_node(tmp_path):
    tar = _dataset_tar()
    server = Server({"/data/imagenet-r.tar": tar,
                     f"/{REPO_ID}/resolve/main/model.safetensors": _weights()})
    work = tmp_path / "work"
    work.mkdir()
    study = {
        "study": "prefetch", "results_dir": "results", "resources_dir": "resources", "preprocessing": "paper",
        "extraction": {"device": "cpu", "batch_size": 4, "num_workers": 0, "group": "model"},
        "models": {"atto": {"source": "timm", "name": "convnext_atto", "pretrained": "d2_in1k",
                            "family": "convnet"}},
        "datasets": {"imagenet_r": {"kind": "imagenet_r", "source": "download",
                                    "url": f"{server.url}/data/imagenet-r.tar",
                                    "sha256": hashlib.sha256(tar).hexdigest()}},
        "evaluations": {"calibration": {"datasets": ["imagenet_r"]}},
    }
    (work / "study.yaml").write_text(yaml.safe_dump(study))
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": server.url, "HF_HUB_DISABLE_XET": "1",
           "TORCH_HOME": str(tmp_path / "torch"), "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("HF_HUB_OFFLINE", None)
    yield work, env, server
    server.close()


def _module(name, work, env, *args):
    return subprocess.run([sys.executable, "-m", f"beyond_imagenet.{name}", "study.yaml", *args], check=False, cwd=work,
                          env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.workflow
def test_prefetch_then_extract_with_the_network_refused(login_node, tmp_path, monkeypatch):
    work, env, server = login_node
    # Before: the doctor, as a compute node sees it, says what is missing and exits 1.
    before = _module("doctor", work, env, "--offline")
    assert before.returncode == 1, before.stdout + before.stderr
    assert f"hf://{REPO_ID} not in the cache" in before.stdout
    assert "pending: 0/1 file(s) downloaded" in before.stdout and "NOT READY" in before.stdout

    done = _module("prefetch", work, env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ready: nothing above stops the run" in done.stdout

    # The hub cache in huggingface_hub's own layout, the blob named by its sha256.
    repo = tmp_path / "hf" / "hub" / "models--timm--convnext_atto.d2_in1k"
    assert (repo / "refs" / "main").read_text() == COMMIT
    snapshot = repo / "snapshots" / COMMIT / "model.safetensors"
    assert snapshot.resolve().parent == repo / "blobs"
    assert snapshot.resolve().name == hashlib.sha256(snapshot.read_bytes()).hexdigest()
    assert (work / "resources" / "datasets" / "imagenet_r" / ".complete").is_file()
    # (huggingface_hub also asks /api/... for its own bookkeeping: not files)
    fetched = sorted({path for method, path in server.requests if method == "GET" and not path.startswith("/api/")})
    assert fetched == ["/data/imagenet-r.tar", f"/{REPO_ID}/resolve/main/model.safetensors"]

    # A second prefetch finds everything and fetches nothing.
    server.requests.clear()
    again = _module("prefetch", work, env)
    assert again.returncode == 0, again.stderr
    assert not [r for r in server.requests if not r[1].startswith("/api/")], server.requests

    # A compute node: no hub, no internet at all (every process), HF_HUB_OFFLINE=1.
    server.close()
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(NO_NETWORK)
    for key in ("HF_HOME", "TORCH_HOME", "XDG_CACHE_HOME"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # Snakemake runs in this process (its onstart doctor too): huggingface_hub read HF_HOME at import.
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(guard), env["PYTHONPATH"]]))
    original = socket.socket.connect, socket.socket.connect_ex
    exec(NO_NETWORK, {})  # noqa: S102 - this process too (Snakemake itself)
    try:
        with pytest.raises(OSError, match="network refused"):
            socket.create_connection(("127.0.0.1", 9), timeout=1)
        from beyond_imagenet.study import Study, load_config

        study = Study(load_config(work / "study.yaml"))
        targets = study.extraction_targets()  # the output files; their groups' markers are the job outputs
        markers = sorted({study.output_marker(*Path(t).with_suffix("").parts[-2:]) for t in targets})
        planned = {rule for rule, _ in dry_run_jobs(work / "study.yaml", work, markers)}
        assert "unpack_dataset" not in planned, planned
        # fetch_dataset only writes the manifest: the prefetched folder is complete, nothing is
        # downloaded (the network guard would fail the run) nor unpacked again.
        run_snakemake(work / "study.yaml", work, targets=markers)
    finally:
        socket.socket.connect, socket.socket.connect_ex = original
    import h5py

    assert targets
    for target in targets:
        with h5py.File(work / target) as out:
            assert out["logits"].shape == (4, 1000)
            assert "pretrained:d2_in1k" in str(dict(out.attrs))


def test_prefetch_finds_a_damaged_cached_blob(login_node, tmp_path):
    """A blob whose sha256 no longer matches its name is named (delete it and prefetch again)."""
    work, env, _ = login_node
    assert _module("prefetch", work, env, "--weights-only").returncode == 1  # the dataset is not fetched
    blob = next((tmp_path / "hf" / "hub" / "models--timm--convnext_atto.d2_in1k" / "blobs").iterdir())
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.chmod(0o644)
    blob.write_bytes(bytes(data))
    again = _module("prefetch", work, env, "--weights-only")
    assert again.returncode == 1
    assert f"models.atto: {tmp_path}" in again.stderr and "damaged; delete it and prefetch again" in again.stderr

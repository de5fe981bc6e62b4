"""Reliability of the whole workflow (issue #7): downloads, kill -9, stale caches, determinism, concurrency.

One tiny study ("REL"): ViT-Ti (timm) and a tiny CLIP ViT on an ImageNet-R *downloaded* from a
file:// tar built here in the real layout (imagenet-r/<wnid>/<rendition>_<n>.jpg) with its sha256;
calibration only, 4 images, one checkpoint shard per image. Runs, in this order:

* baseline: uninterrupted, through Snakemake's API with two GPU slots (two extraction jobs may
  run at once); its tables and HDF5 files are snapshotted.
* kill chain, another workdir: Snakemake as a subprocess in a session of its own, SIGKILLed with
  its jobs (``BEYOND_IMAGENET_FAULT``, beyond_imagenet/faults.py) during unpacking, then during
  extraction, then while writing the metric table; each rerun resumes, and the last one completes
  with outputs byte-identical to the baseline (also the determinism check: two runs, two workdirs).
  A killed Snakemake leaves its directory lock behind (it records no PID, so it cannot tell a
  dead owner from a live one): before each rerun the tests do what `snakemake --unlock` does.
* a wrong sha256 in a third workdir; a stale HDF5 planted in the baseline's (last).

Each test asserts the state a protection guarantees, so it fails if that protection is removed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import snakemake.shell  # noqa: F401

from beyond_imagenet.faults import ENV as FAULT_ENV
from conftest import REPO, default_config, run_snakemake, write_config

pytestmark = pytest.mark.workflow

# snakemake.shell keeps the sys.stdout of its first import for every job it starts: imported here,
# at collection, that is pytest's session-wide stream, not a capfd stream closed after one test
# (which made every later in-process job fail with "I/O operation on closed file").
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
TABLE = "results/metrics/calibration.csv"
N_IMAGES = 4


# ------------------------------------------------------------------------------------- helpers
def build_imagenet_r_tar(path: Path) -> dict[str, bytes]:
    """A 4-image ImageNet-R in the real tar layout; returns {member path: bytes} of its files."""
    from PIL import Image

    from beyond_imagenet import classes
    from beyond_imagenet.datasets.generate import IMAGENET_R_RENDITIONS

    rng = np.random.default_rng(7)
    wnids = classes.imagenet_r_wnids()[::50][:N_IMAGES]
    files: dict[str, bytes] = {}
    for k, wnid in enumerate(wnids):
        pixels = rng.integers(0, 256, size=(48 + 8 * k, 64, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
        files[f"imagenet-r/{wnid}/{IMAGENET_R_RENDITIONS[k]}_{k}.jpg"] = buf.getvalue()

    def info(name: str, size: int | None = None) -> tarfile.TarInfo:
        member = tarfile.TarInfo(name)
        member.mtime, member.mode = 1_600_000_000, 0o644 if size is not None else 0o755
        if size is None:
            member.type = tarfile.DIRTYPE
        else:
            member.size = size
        return member

    with tarfile.open(path, "w") as tar:  # plain tar, as the real imagenet-r.tar
        tar.addfile(info("imagenet-r"))
        for name, data in files.items():
            tar.addfile(info(str(Path(name).parent)))
            tar.addfile(info(name, len(data)), io.BytesIO(data))
    return files


def rel_config(url: str, sha256: str) -> dict:
    config = default_config()
    config["models"] = {k: v for k, v in config["models"].items() if k in ("vit_sup", "vit_clip")}
    config["zero_shot"]["templates"] = 1
    # group: dataset = one extraction job per (model, dataset), logged as extract_outputs/<model>/<dataset>.log
    config["extraction"].update(batch_size=1, shard_size=1, num_workers=1, group="dataset")
    config["datasets"] = {"imagenet_r": {"kind": "imagenet_r", "source": "download", "url": url, "sha256": sha256}}
    config["evaluations"] = {"calibration": {"datasets": ["imagenet_r"], "n_bins": 15}}
    return config


def api_run(configfile, workdir, targets, gpus=1, forcerun=(), unlock=False):
    """Snakemake through its Python API in ``workdir`` (like conftest.run_snakemake, with N GPU slots)."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import (ConfigSettings, DAGSettings, OutputSettings, Quietness,
                                          ResourceSettings, StorageSettings)

    cwd = os.getcwd()
    try:
        with SnakemakeApi(OutputSettings(quiet={Quietness.PROGRESS, Quietness.RULES}, show_failed_logs=True)) as api:
            workflow = api.workflow(
                resource_settings=ResourceSettings(cores=2, resources={"gpu": gpus}),
                config_settings=ConfigSettings(configfiles=[Path(configfile).resolve()]),
                storage_settings=StorageSettings(), snakefile=REPO / "Snakefile", workdir=Path(workdir),
            )
            dag = workflow.dag(dag_settings=DAGSettings(targets=set(targets), forcerun=set(forcerun)))
            if unlock:
                dag.unlock()
                return None
            dag.execute_workflow(executor="local")
            return None
    finally:
        os.chdir(cwd)


def cli_run(configfile, workdir, targets, fault: str | None = None, timeout: float = 400):
    """``snakemake --cores 2`` as a subprocess in a new session (the default profile applies).

    With ``fault`` set, the armed point SIGKILLs the whole process group: Snakemake, its jobs and
    their DataLoader workers die together, as after ``kill -9`` of the session.
    """
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    if fault:
        env[FAULT_ENV] = fault
    cmd = [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "--configfile", str(configfile), "--cores", "2", *targets]
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"snakemake did not finish in {timeout} s:\n{out[-4000:]}")
    finally:
        try:  # nothing of that session may outlive the test
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return proc.returncode, out


def expect_killed(rc: int, out: str, fault: str) -> None:
    assert rc == -signal.SIGKILL, f"expected Snakemake to be killed by {fault}, rc={rc}:\n{out[-4000:]}"
    assert f"{FAULT_ENV}={fault}: killing process group" in out, out[-4000:]


def product_files(workdir: Path) -> dict[str, bytes]:
    """Every metric table and HDF5 file (outputs and zero-shot heads) of a run, by relative path."""
    results = workdir / "results"
    paths = [*results.glob("metrics/*.csv"), *results.glob("extracted/*/*.h5"), *results.glob("heads/*.h5")]
    return {str(p.relative_to(workdir)): p.read_bytes() for p in sorted(paths)}


def leftovers(workdir: Path) -> list[str]:
    """Temporary files and folders, checkpoint shards: none may survive a completed run."""
    found = []
    for root in (workdir / "results", workdir / "resources"):
        for p in root.rglob("*"):
            if re.search(r"\.tmp-\d+|\.parts$|\.part$|\.quarantine$", p.name):
                found.append(str(p.relative_to(workdir)))
    return found


def unpacked_files(folder: Path) -> dict[str, bytes]:
    """Files of a dataset folder (without the marker Snakemake adds to directory outputs)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*")
            if p.is_file() and p.name != ".snakemake_timestamp"}


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def rel(tmp_path_factory):
    """The archive (served via file://) and the study configs: right and wrong sha256."""
    base = tmp_path_factory.mktemp("rel_study")
    tar = base / "mirror" / "imagenet-r.tar"
    tar.parent.mkdir()
    files = build_imagenet_r_tar(tar)
    sha = hashlib.sha256(tar.read_bytes()).hexdigest()
    good = write_config(base / "rel.yaml", rel_config(tar.as_uri(), sha))
    wrong = write_config(base / "rel_wrong_sha.yaml", rel_config(tar.as_uri(), "0" * 64))
    return {"tar": tar, "files": files, "sha": sha, "config": good, "wrong_config": wrong}


@pytest.fixture(scope="module")
def baseline(rel, tmp_path_factory):
    """An uninterrupted run with two GPU slots; returns its workdir and a snapshot of its products."""
    workdir = tmp_path_factory.mktemp("rel_baseline")
    api_run(rel["config"], workdir, [TABLE], gpus=2)
    return {"workdir": workdir, "products": product_files(workdir)}


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Workdir shared by the kill-chain tests (they run in file order, each after the previous)."""
    return {"workdir": tmp_path_factory.mktemp("rel_killed"), "done": []}


def _step(chain, name, previous):
    if chain["done"] != previous:
        pytest.skip(f"needs the earlier kill-chain steps {previous}; done: {chain['done']}")
    chain["done"].append(name)


# --------------------------------------------------------------------------------------- tests
def test_download_unpack_manifest_extraction_from_a_local_archive(rel, baseline):
    workdir = baseline["workdir"]
    ran = {p.relative_to(workdir / "results/logs").parts[0].removesuffix(".log") for p in (workdir / "results/logs").rglob("*.log")}
    # one fetch_dataset job downloads, unpacks and lists the dataset
    assert ran == {"fetch_dataset", "extract_outputs", "compute_calibration"}  # the head: by extract_outputs
    # The archive was verified and unpacked as it is, with the completion marker.
    assert (workdir / "resources/downloads/imagenet_r/imagenet-r.tar").read_bytes() == rel["tar"].read_bytes()
    unpacked = unpacked_files(workdir / "resources/datasets/imagenet_r")
    assert unpacked.pop(".complete")
    assert unpacked == rel["files"]
    # The manifest lists every image with its label in the 200-class ImageNet-R space.
    from beyond_imagenet import classes

    manifest = json.loads((workdir / "results/manifests/imagenet_r.json").read_text())
    space = classes.imagenet_r_wnids()
    assert [(s, space.index(s.split("/")[0])) for s in sorted(f.split("/", 1)[1] for f in rel["files"])] == \
        [tuple(s) for s in manifest["samples"]]
    table = pd.read_csv(workdir / TABLE)
    n = table[table["metric"] == "n_images"].set_index("model")["value"]
    assert n.to_dict() == {"vit_clip": N_IMAGES, "vit_sup": N_IMAGES}


def test_concurrent_extraction_jobs_write_only_their_own_outputs(baseline):
    """Two GPU slots: each job writes its own file (recorded identity = its path), nothing is shared."""
    workdir = baseline["workdir"]
    outputs = sorted((workdir / "results/extracted").glob("*/*.h5"))
    assert [str(p.relative_to(workdir / "results/extracted")) for p in outputs] == \
        ["vit_clip/imagenet_r.h5", "vit_sup/imagenet_r.h5"]
    for path in outputs:
        with h5py.File(path, "r") as f:
            assert (f.attrs["model"], f.attrs["dataset"]) == (path.parent.name, path.stem)
            assert f["logits"].shape == (N_IMAGES, 1000) and int(f.attrs["n_skipped"]) == 0
        log = (workdir / "results/logs/extract_outputs" / path.parent.name / f"{path.stem}.log").read_text()
        written = set(re.findall(r"results/extracted/[^\s:]+", log))
        assert written == {f"results/extracted/{path.parent.name}/{path.name}"}, log
    assert outputs[0].read_bytes() != outputs[1].read_bytes()
    assert leftovers(workdir) == []


def test_wrong_checksum_is_quarantined_and_nothing_is_unpacked(rel, tmp_path, capfd):
    with pytest.raises(Exception):
        api_run(rel["wrong_config"], tmp_path, ["results/manifests/imagenet_r.json"])
    downloads = tmp_path / "resources/downloads/imagenet_r"
    assert (downloads / "imagenet-r.tar.quarantine").read_bytes() == rel["tar"].read_bytes()
    assert not (downloads / "imagenet-r.tar").exists() and not (downloads / "imagenet-r.tar.part").exists()
    assert not (tmp_path / "resources/datasets").exists()
    assert not (tmp_path / "results/manifests/imagenet_r.json").exists()
    log = (tmp_path / "results/logs/fetch_dataset/imagenet_r.log").read_text()
    assert "imagenet-r.tar.quarantine" in log
    err = capfd.readouterr().err  # the job's traceback: what went wrong and what to do
    assert "DownloadError: checksum mismatch" in err and f"expected sha256 {'0' * 64}" in err
    assert f"got {rel['sha']}" in err and "moved to quarantine" in err


def test_kill_during_unpacking_leaves_no_dataset_folder(rel, chain):
    _step(chain, "unpack", [])
    workdir = chain["workdir"]
    rc, out = cli_run(rel["config"], workdir, [TABLE], fault="unpack:mid")
    expect_killed(rc, out, "unpack:mid")
    assert (workdir / "resources/downloads/imagenet_r/imagenet-r.tar").read_bytes() == rel["tar"].read_bytes()
    # Died half way: a temporary folder with some files, and no dataset folder at all.
    datasets = workdir / "resources/datasets"
    assert not (datasets / "imagenet_r").exists()
    (tmp,) = datasets.glob("imagenet_r.tmp-*")
    assert 0 < len(unpacked_files(tmp)) < len(rel["files"])
    assert not (workdir / "results/manifests/imagenet_r.json").exists()


def test_kill_during_extraction_keeps_checkpoint_shards(rel, chain):
    _step(chain, "extract", ["unpack"])
    workdir = chain["workdir"]
    api_run(rel["config"], workdir, [TABLE], unlock=True)  # = `snakemake --unlock`: kill -9 leaves Snakemake's lock
    rc, out = cli_run(rel["config"], workdir, [TABLE], fault="extract-shard:1")
    expect_killed(rc, out, "extract-shard:1")
    # The rerun unpacked the archive completely and cleared the killed run's temporary folder.
    unpacked = unpacked_files(workdir / "resources/datasets/imagenet_r")
    assert unpacked.pop(".complete") and unpacked == rel["files"]
    assert list((workdir / "resources/datasets").iterdir()) == [workdir / "resources/datasets/imagenet_r"]
    # The extraction that reached the fault point died after its second checkpoint shard, the other
    # (they run in parallel: CPU jobs take no GPU slot) somewhere before; no output file exists.
    parts = sorted((workdir / "results/extracted").glob("*/.imagenet_r.h5.parts"))
    killed = [p for p in parts if (p / "shard-000001.npz").exists()]
    assert killed, parts
    assert sorted(p.name for p in killed[0].glob("shard-*.npz")) == ["shard-000000.npz", "shard-000001.npz"]
    assert not list((workdir / "results/extracted").glob("*/imagenet_r.h5"))
    chain["killed_model"] = killed[0].parent.name


def test_kill_while_writing_the_metric_table_leaves_no_table(rel, chain):
    _step(chain, "table", ["unpack", "extract"])
    workdir = chain["workdir"]
    api_run(rel["config"], workdir, [TABLE], unlock=True)
    rc, out = cli_run(rel["config"], workdir, [TABLE], fault="table:before-rename")
    expect_killed(rc, out, "table:before-rename")
    # The killed extraction resumed after its two shards instead of starting over.
    model = chain["killed_model"]
    log = (workdir / f"results/logs/extract_outputs/{model}/imagenet_r.log").read_text()
    assert f"after 2 of {N_IMAGES} checkpoint shards" in log, log
    assert not list((workdir / "results/extracted").glob("*/.*.parts"))
    # The table was complete under its temporary name, but never appeared under the real one.
    assert not (workdir / TABLE).exists()
    (tmp,) = (workdir / "results/metrics").glob(".calibration.csv.tmp-*")
    assert tmp.stat().st_size > 0


def test_rerun_after_the_kills_completes_with_nothing_left_over(rel, chain):
    _step(chain, "rerun", ["unpack", "extract", "table"])
    workdir = chain["workdir"]
    api_run(rel["config"], workdir, [TABLE], unlock=True)
    rc, out = cli_run(rel["config"], workdir, [TABLE])
    assert rc == 0, out[-4000:]
    assert (workdir / TABLE).is_file()
    assert leftovers(workdir) == []
    assert not run_snakemake(rel["config"], workdir, [TABLE], dryrun=True)  # nothing left to rerun


def test_two_runs_give_byte_identical_tables_and_outputs(baseline, chain):
    """Determinism: the killed-and-resumed run (one GPU slot, CLI) equals the baseline (two slots, API)."""
    if "rerun" not in chain["done"]:
        pytest.skip("needs the completed kill chain")
    products = product_files(chain["workdir"])
    assert sorted(products) == sorted(baseline["products"])
    assert len(products) == 1 + 2 + 1  # calibration.csv, two outputs, one zero-shot head (cached by extraction)
    different = [name for name in products if products[name] != baseline["products"][name]]
    assert different == []


def test_stale_output_is_recomputed_not_reused(rel, baseline, capfd):
    """vit_sup's file copied over vit_clip's (mtime kept): the group marker recorded the file's size
    and time, so the run names the replaced file and recomputes it (its group reruns) before any
    table reads it; the other files of the group are reused."""
    workdir = baseline["workdir"]
    sup, clip = (workdir / f"results/extracted/{m}/imagenet_r.h5" for m in ("vit_sup", "vit_clip"))
    stat = clip.stat()
    shutil.copyfile(sup, clip)
    os.utime(clip, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # so that Snakemake's own times do not tell
    api_run(rel["config"], workdir, [TABLE])
    err = capfd.readouterr().err
    assert "results/extracted/vit_clip/imagenet_r.h5 changed after its job wrote it" in err
    with h5py.File(clip, "r") as f:
        assert f.attrs["model"] == "vit_clip"
    assert (workdir / TABLE).exists()

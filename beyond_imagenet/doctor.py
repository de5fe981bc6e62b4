"""Pre-flight check of a study on this machine: ``python -m beyond_imagenet.doctor [STUDY] [--offline]``.

One table: torch and its CUDA build, the NVIDIA driver, the GPUs torch sees and what the study's
``extraction.device`` will do with them; each model's weights (in the local cache or not); each
manual dataset (present, with its image count); each downloaded dataset (done or pending); the
optional packages the study needs; the disk the study needs against what is free. Exit status 1
when the run cannot succeed (a ``FAIL`` row), else 0. It never uses the network: it reads the
caches the jobs read. ``--offline`` (or ``HF_HUB_OFFLINE=1``, as on compute nodes without internet)
turns what a job would have to download into failures. The Snakefile's ``onstart`` runs it too.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import shutil
import sys
from pathlib import Path
from typing import Any

OK, WARN, FAIL = "ok", "warn", "FAIL"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm", ".pgm"}


@dataclasses.dataclass
class Row:
    check: str
    item: str
    status: str
    detail: str


@dataclasses.dataclass
class Report:
    rows: list[Row]
    notes: list[str] = dataclasses.field(default_factory=list)  # what to do, printed below the table

    @property
    def failed(self) -> list[Row]:
        return [r for r in self.rows if r.status == FAIL]

    @property
    def ready(self) -> bool:
        return not self.failed

    def table(self) -> str:
        widths = [max(len(getattr(r, f)) for r in [Row("check", "item", "status", ""), *self.rows])
                  for f in ("check", "item", "status")]
        lines = [f"{'check':<{widths[0]}}  {'item':<{widths[1]}}  {'status':<{widths[2]}}  detail"]
        lines += [f"{r.check:<{widths[0]}}  {r.item:<{widths[1]}}  {r.status:<{widths[2]}}  {r.detail}"
                  for r in self.rows]
        verdict = ("ready: nothing above stops the run" if self.ready else
                   f"NOT READY: {len(self.failed)} problem(s) marked FAIL would stop the run")
        return "\n".join([*lines, verdict, *self.notes])


def count_images(folder: Path) -> int:
    """Image files under ``folder`` (by suffix; symlinks followed), without opening them."""
    n = 0
    for _, _, files in os.walk(folder, followlinks=True):
        n += sum(1 for f in files if os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES)
    return n


def _gb(n: int) -> str:
    return f"{n / 1e9:,.1f} GB"


# ------------------------------------------------------------------------------- the checks
def _torch_rows(device: str) -> list[Row]:
    import torch

    from beyond_imagenet.devices import gpu_environment, no_usable_cuda_message

    env = gpu_environment()
    rows = [Row("torch", torch.__version__, OK, f"CUDA build {torch.version.cuda}" if torch.version.cuda
                else "CPU-only build (torch.version.cuda is None)"),
            Row("driver", "NVIDIA", OK if env.driver else "-", env.driver or "no NVIDIA driver on this machine")]
    usable = torch.cuda.is_available()
    if usable:
        # Counted without initialising CUDA (names from nvidia-smi): Snakemake's own process runs
        # this in onstart and must not hold a CUDA context on a GPU its jobs lease.
        count = torch.cuda.device_count()
        rows.append(Row("gpus", "visible to torch", OK, f"{count}" + (f": {', '.join(env.gpus)}" if env.gpus else "")))
    else:
        rows.append(Row("gpus", "visible to torch", "-", "none" + (f" (machine: {'; '.join(env.given_by)})"
                                                               if env.has_gpu else "")))
    where = f"extraction.device {device}"
    if device == "cpu":
        rows.append(Row("device", where, OK, "models run on the CPU (explicit)"))
    elif usable:
        rows.append(Row("device", where, OK, "models run on the GPU(s) above"))
    elif env.has_gpu:
        rows.append(Row("device", where, FAIL, no_usable_cuda_message(env, device)))
    elif device == "cuda":
        rows.append(Row("device", where, FAIL, "no GPU on this machine (on a login node: expected; the "
                                               "jobs run on GPU nodes, check there)"))
    else:
        rows.append(Row("device", where, WARN, "no GPU here: jobs started on this machine run on the CPU "
                                               "(under SLURM they get a GPU node)"))
    return rows


def _model_rows(study, offline: bool) -> list[Row]:
    from beyond_imagenet.weights import cached_files, weight_source

    rows = []
    for name, spec in study.models.items():
        try:
            source = weight_source(spec)
        except Exception as err:  # noqa: BLE001 - a form this check does not know: the job will tell
            rows.append(Row("weights", name, WARN, f"cannot tell where the weights come from ({err})"))
            continue
        if source.kind == "none":
            rows.append(Row("weights", name, OK, f"built by {source.location} (seed {spec.seed}): nothing to fetch"
                            if source.location else f"random weights (seed {spec.seed}): nothing to fetch"))
            continue
        found = cached_files(source)
        if found is not None:
            rows.append(Row("weights", name, OK, f"{source.describe()}" if source.kind == "file" else
                            f"{source.describe()} cached: {found[-1]}"))
        elif source.kind == "file":
            rows.append(Row("weights", name, FAIL, f"checkpoint {source.location} does not exist"))
        elif offline:
            rows.append(Row("weights", name, FAIL, f"{source.describe()} not in the cache and the hub is offline: "
                                                   "run `python -m beyond_imagenet.prefetch <study>` where there is "
                                                   "internet (same HF_HOME)"))
        else:
            rows.append(Row("weights", name, WARN, f"{source.describe()} not in the cache: the job downloads it "
                                                   "(needs internet there; prefetch to avoid)"))
    return rows


def _dataset_rows(study, offline: bool, notes: list[str]) -> tuple[list[Row], list[str]]:
    """Rows for each study dataset (VTAB task splits under their parent), and packages needed;
    how to get a missing manual dataset goes to ``notes``."""
    from beyond_imagenet.download import COMPLETE_MARKER

    rows, packages = [], []
    for name, spec in study.datasets.items():
        if spec.source == "split":
            continue
        expected = spec.expected_images
        if spec.source == "generate":
            rows.append(Row("dataset", name, OK, "generated by the workflow"))
        elif spec.source == "manual" and spec.archive:
            ok = Path(spec.archive).is_file()
            rows.append(Row("dataset", name, OK if ok else FAIL, f"archive {spec.archive}" + (
                ", reorganised by the workflow" if ok else " does not exist (see below)")))
            if not ok:
                notes.append(f"datasets.{name}: {spec.instructions()}")
        elif spec.source == "manual":
            if not spec.root.is_dir():
                rows.append(Row("dataset", name, FAIL, f"manual: {spec.root} does not exist (see below)"))
                notes.append(f"datasets.{name}: {spec.instructions()}")
                continue
            n = count_images(spec.root)
            status = OK if n and (expected is None or n == expected) else WARN
            rows.append(Row("dataset", name, status, f"manual: {n:,} images in {spec.root}" + (
                f" (the full set has {expected:,})" if expected and n != expected else "")))
        else:  # download
            hub = bool(spec.download and "huggingface" in spec.download)
            if hub:
                packages += ["huggingface_hub", "pyarrow"]
            if (spec.dataset_dir / COMPLETE_MARKER).is_file():
                rows.append(Row("dataset", name, OK, f"downloaded: {spec.dataset_dir}"))
                continue
            files = spec.archive_paths
            have = sum(p.is_file() for p in files)
            what = (f"pending: {have}/{len(files)} file(s) downloaded" if files else
                    "pending: converted from the Hugging Face hub by the workflow")
            if offline:
                rows.append(Row("dataset", name, FAIL, f"{what}, and this machine is offline: run "
                                                       "`python -m beyond_imagenet.prefetch <study>` where there is internet"))
            else:
                rows.append(Row("dataset", name, WARN, f"{what}; the workflow downloads it (or prefetch it)"))
    return rows, sorted(set(packages))


def _package_rows(packages: list[str]) -> list[Row]:
    rows = []
    for package in packages:
        found = importlib.util.find_spec(package) is not None
        rows.append(Row("package", package, OK if found else FAIL,
                        "installed" if found else f"needed by a dataset of the study: pip install {package}"))
    return rows


def _existing(path: Path) -> Path:
    path = path.resolve()
    while not path.exists():
        path = path.parent
    return path


def _disk_rows(study) -> list[Row]:
    """beyond_imagenet.diskspace (the study's outputs still to write) against the free space where
    they go; "unknown" where that module is not part of this checkout."""
    where = study.results
    free = shutil.disk_usage(_existing(Path(where))).free
    try:
        from beyond_imagenet.diskspace import required_bytes
    except ImportError:
        return [Row("disk", "needed / free", "-", f"needed unknown; free {_gb(free)} under {where}")]
    try:
        needed = int(required_bytes(study))
    except Exception as err:  # noqa: BLE001 - an estimate that fails must not stop the run
        return [Row("disk", "needed / free", WARN, f"needed unknown ({type(err).__name__}: {err}); "
                                                    f"free {_gb(free)} under {where}")]
    status = OK if needed <= free else FAIL
    return [Row("disk", "needed / free", status, f"needed {_gb(needed)}, free {_gb(free)} under {where}")]


def check(config: dict[str, Any], offline: bool | None = None, disk: bool = True) -> Report:
    """Every check on a validated study config; no network access. ``disk=False``: without the disk
    row, for a caller that runs the disk check itself (the Snakefile's onstart: check_disk_space
    prints the estimate's table and stops on it), so the estimate is not made twice."""
    from beyond_imagenet.study import Study
    from beyond_imagenet.weights import hub_offline

    offline = hub_offline() if offline is None else offline
    study = Study(config)
    rows = _torch_rows(config["extraction"]["device"])
    rows += _model_rows(study, offline)
    notes: list[str] = []
    dataset_rows, packages = _dataset_rows(study, offline, notes)
    rows += dataset_rows + _package_rows(packages) + (_disk_rows(study) if disk else [])
    return Report(rows, notes)


def main(argv: list[str] | None = None) -> int:
    from beyond_imagenet.study import ConfigError, load_config

    parser = argparse.ArgumentParser(prog="python -m beyond_imagenet.doctor", description=__doc__.split("\n\n")[0])
    parser.add_argument("study", nargs="?", default="config.yaml", help="study file (default: config.yaml)")
    parser.add_argument("--offline", action="store_true",
                        help="as on a compute node without internet: what a job would download is a failure "
                             "(also with HF_HUB_OFFLINE=1)")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.study)
    except (ConfigError, OSError) as err:
        print(err, file=sys.stderr)
        return 1
    report = check(config, offline=True if args.offline else None)
    print(f"{args.study}:")
    print(report.table())
    return 0 if report.ready else 1


if __name__ == "__main__":
    raise SystemExit(main())

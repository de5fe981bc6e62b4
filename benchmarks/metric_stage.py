"""Peak memory and time of every metric compute job on outputs of the paper's real sizes.

    PYTHONPATH=. python benchmarks/metric_stage.py --workdir /tmp/metric_stage \\
        [--models 4] [--imagenet-c 0.05] [--invariance-images 10000] [--resamples 1000] [--jobs robustness,...]

Synthetic outputs of the paper study (studies/paper.yaml: 4 models, copies of them for more) are
written with the project's own writer (``extract._assemble``: checkpoint shards -> the HDF5 file
with its checksums and identity; no forward pass), with the paper's real image counts and ids:
ImageNet val 50,000 (real val file names: ReaL and ImageNet-X join on them), ImageNet-R 30,000,
V2 10,000, A 7,500, Sketch 50,889, Hard 10,980 (label sets), PUG-ImageNet 88,328 (10 subsets),
cue-conflict 1,280, ImageNet-C 3.75 M scaled by ``--imagenet-c`` (each of its 75 conditions keeps
that fraction of the 50,000 val images), and the invariance variants (15 of the 17 levels are
extractions of their own) on ``--invariance-images`` images (the paper: all 50,000). Each output
holds what the study stores (``Study.stored_arrays``: 1,000 float32 logits per image; no
features, which no metric job reads).

Then every compute job of the study is run as ``scripts/compute_table.py`` runs it under
Snakemake (the same script, given the params the rules give it), each in its own process, with
the default 1,000 bootstrap resamples: its peak RSS (the child's own ``VmHWM``) and wall time are
printed. Run it for two ImageNet-C fractions and two model counts to see what grows with what.
Outputs already written with the same sizes are reused (``--workdir`` keeps them).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
JOBS = ("accuracy", "calibration", "robustness", "imagenet_x", "shape_bias", "pug", "invariance")


# ------------------------------------------------------------------------------- the study
def paper_study(workdir: Path, n_models: int, invariance_images: int, resamples: int):
    from beyond_imagenet.study import Study, load_config

    config = load_config(REPO / "studies" / "paper.yaml")
    config["results_dir"] = str(workdir / "results")
    config["resources_dir"] = str(workdir / "resources")
    config["evaluations"]["invariance"]["max_images"] = invariance_images
    config["uncertainty"] = {**config["uncertainty"], "resamples": resamples}
    base = list(config["models"].items())
    models = {}
    for k in range(n_models):  # the paper's 4, then copies of them under other names
        name, entry = base[k % len(base)]
        models[name if k < len(base) else f"{name}_{k // len(base)}"] = {**entry, "label": f"{entry['label']} #{k}"}
    config["models"] = models
    return Study(config)


def synthetic_datasets(study, c_fraction: float, root: Path) -> dict[str, tuple[list[str], np.ndarray, Path]]:
    """dataset -> (ids, labels, root) with the paper's counts and id layouts."""
    from beyond_imagenet import classes
    from beyond_imagenet.datasets.generate import imagenet_val_file_names
    from beyond_imagenet.metrics.pug import PUG_SUBSETS
    from beyond_imagenet.metrics.robustness import IMAGENET_C_CORRUPTIONS
    from beyond_imagenet.metrics.shape_bias import CATEGORIES

    rng = np.random.default_rng(0)
    wnids = classes.imagenet_wnids()
    val = [(f"{wnids[label]}/{name}", label) for label, names in sorted(imagenet_val_file_names().items())
           for name in names]
    out = {"imagenet_val": ([s for s, _ in val], np.asarray([label for _, label in val]), root)}

    def flat(name, n, n_classes):
        return [f"c{k % n_classes:03d}/{name}_{k:07d}.jpg" for k in range(n)], np.arange(n) % n_classes

    for name, n, n_classes in (("imagenet_r", 30000, 200), ("imagenet_v2", 10000, 1000), ("imagenet_a", 7500, 200),
                               ("imagenet_sketch", 50889, 1000)):
        ids, labels = flat(name, n, n_classes)
        out[name] = (ids, labels, root)
    per_condition = max(1, round(50000 * c_fraction))
    picked = [val[i] for i in np.linspace(0, len(val) - 1, per_condition).astype(int)]
    c = [(f"{corruption}/{severity}/{sid}", label) for corruption in IMAGENET_C_CORRUPTIONS
         for severity in range(1, 6) for sid, label in picked]
    out["imagenet_c"] = ([s for s, _ in c], np.asarray([label for _, label in c]), root)
    hard_root = root / "imagenet_hard"
    hard_root.mkdir(parents=True, exist_ok=True)
    hard_ids = [f"images/{k:05d}.jpg" for k in range(10980)]
    hard_sets = rng.integers(0, 1000, (10980, 3))
    (hard_root / "labels.json").write_text(json.dumps(
        {"images": [{"file": f, "labels": s.tolist()} for f, s in zip(hard_ids, hard_sets)]}))
    out["imagenet_hard"] = (hard_ids, hard_sets[:, 0], hard_root)
    pug_root = root / "pug"
    pug_root.mkdir(parents=True, exist_ok=True)
    names = [f"class_{k:03d}" for k in range(151)]
    (pug_root / "class_to_imagenet_idx.json").write_text(json.dumps({n: [k * 6] for k, n in enumerate(names)}))
    pug = [(f"{PUG_SUBSETS[k % 10]}/{names[k % 151]}/{k:06d}.png", k % 151) for k in range(88328)]
    out["pug_imagenet"] = ([s for s, _ in pug], np.asarray([label for _, label in pug]), pug_root)
    cue = [(f"{s}/{s}{i}-{CATEGORIES[(j + i) % 16]}{i}.png", j) for j, s in enumerate(CATEGORIES) for i in range(80)]
    out["cue_conflict"] = ([s for s, _ in cue], np.asarray([label for _, label in cue]), root)
    return out


def write_manifest(study, dataset: str, ids, labels, root: Path) -> dict:
    from beyond_imagenet.io import atomic_write_text

    manifest = {"dataset": dataset, "root": str(root), "n_images": len(ids), "fingerprint": f"synthetic-{len(ids)}",
                "subset": "", "samples": [[s, int(label)] for s, label in zip(ids, labels)]}
    path = Path(study.manifest(dataset))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(manifest))
    return {**manifest, "samples": [(s, int(label)) for s, label in zip(ids, labels)]}


def write_output(study, model: str, dataset: str, variant: str | None, manifest: dict, ids, labels,
                 rng: np.random.Generator, shard_rows: int = 8192) -> Path:
    """One output through the project's writer: checkpoint shards as an extraction leaves them,
    then ``extract._assemble`` (the HDF5 file, its sha256 per array, its identity)."""
    import shutil

    from beyond_imagenet.extract import _assemble, _flush, read_attrs
    from beyond_imagenet.workflow import expected_attrs

    path = Path(study.output(model, dataset, variant))
    attrs = expected_attrs(study.output_identity(model, dataset, variant), manifest)
    if path.is_file() and read_attrs(path).get("n_images") == len(ids):
        return path  # written by an earlier run of this benchmark with the same sizes
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = path.parent / f".{path.name}.parts"
    shutil.rmtree(parts, ignore_errors=True)
    parts.mkdir()
    n = len(ids)
    for k, start in enumerate(range(0, n, shard_rows)):
        stop = min(n, start + shard_rows)
        logits = rng.standard_normal((stop - start, 1000), dtype=np.float32)
        # about 3 in 4 right: the label's logit raised
        hit = rng.random(stop - start) < 0.75
        logits[np.flatnonzero(hit), np.asarray(labels[start:stop])[hit] % 1000] += 4.0
        _flush(parts, k, {"logits": [logits], "features": [np.zeros((stop - start, 0), np.float16)],
                          "index": list(range(start, stop)), "bad": []})
    shards = [parts / f"shard-{k:06d}.npz" for k in range((n + shard_rows - 1) // shard_rows)]
    return _assemble(shards, [parts], path, list(ids), np.asarray(labels, np.int64),
                     {**attrs, "versions": "synthetic"}, "error", manifest["root"])


def write_study(study, c_fraction: float, workdir: Path) -> float:
    """Manifests and every output the compute jobs read; returns the GB of outputs."""
    from beyond_imagenet.evaluations.invariance import items as invariance_items
    from beyond_imagenet.evaluations.invariance.variants import spread_subset

    rng = np.random.default_rng(1)
    data = synthetic_datasets(study, c_fraction, workdir / "resources" / "synthetic")
    manifests = {d: write_manifest(study, d, *data[d]) for d in data}
    size = 0
    for model in study.models:
        for dataset, (ids, labels, _) in data.items():
            size += write_output(study, model, dataset, None, manifests[dataset], ids, labels, rng).stat().st_size
    for item in invariance_items(study):
        if item["variant"]:
            subset = spread_subset(manifests[item["dataset"]]["samples"], item["expect"]["max_images"] or None)
            path = write_output(study, item["model"], item["dataset"], item["variant"], manifests[item["dataset"]],
                                [s for s, _ in subset], np.asarray([label for _, label in subset]), rng)
            size += path.stat().st_size
    return size / 1e9


def job_params(study, evaluation: str) -> dict:
    """What rules/common.smk's table_params gives the compute_<evaluation> job."""
    from beyond_imagenet.evaluations import EVALUATIONS
    from beyond_imagenet.evaluations.invariance import items as invariance_items

    record = EVALUATIONS[evaluation]
    models = study.evaluation_models(evaluation)
    cached = invariance_items(study) if evaluation == "invariance" else \
        [study.item(m, d) for d in study.evaluation_datasets(evaluation) for m in models]
    section = study.evaluations.get(evaluation, {})
    params = {"evaluation": evaluation, "models": {m: study.model_columns(m) for m in models}, "cached": cached}
    if record.settings:
        params["settings"] = {key: section.get(key) for key in record.settings}
    if record.samples:
        params["uncertainty"] = study.config["uncertainty"]
    return params


# ------------------------------------------------------------------------- one compute job
class _Files(list):
    """A Snakemake ``output``: positional, and the named entries by ``items()``."""

    def __init__(self, positional, named):
        super().__init__([*positional, *named.values()])
        self._named = named
        for key, value in named.items():
            setattr(self, key, value)

    def items(self):
        return self._named.items()


def run_job(spec_path: str) -> None:
    """In the child: scripts/compute_table.py with a ``snakemake`` object as the rule gives it."""
    import runpy
    import types

    with open(spec_path, "rb") as f:
        spec = pickle.load(f)
    snakemake = types.SimpleNamespace(
        input=[], output=_Files([spec["table"]], {"comparisons": spec["comparisons"]}),
        params=types.SimpleNamespace(**spec["params"]), wildcards=types.SimpleNamespace(), threads=1,
        resources=types.SimpleNamespace(), log=[spec["log"]], rule=f"compute_{spec['params']['evaluation']}")
    runpy.run_path(str(REPO / "scripts" / "compute_table.py"), init_globals={"snakemake": snakemake})
    # The high-water mark of this process's own memory (not wait4's ru_maxrss, which also counts the
    # parent's pages at the fork: the benchmark holds the synthetic sets' ids).
    status = Path("/proc/self/status").read_text()
    peak_kib = int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1])
    Path(spec["peak"]).write_text(str(peak_kib))


def measure(study, evaluation: str, workdir: Path) -> tuple[float, float]:
    """(peak RSS in GiB, wall seconds) of one compute job in its own process."""
    out = workdir / "results" / "metrics"
    out.mkdir(parents=True, exist_ok=True)
    spec = {"params": job_params(study, evaluation), "table": str(out / f"{evaluation}.csv"),
            "comparisons": str(out / "comparisons" / f"{evaluation}.csv"),
            "log": str(workdir / "results" / "logs" / f"compute_{evaluation}.log"),
            "peak": str(workdir / f"job_{evaluation}.peak")}
    spec_path = workdir / f"job_{evaluation}.pkl"
    spec_path.write_bytes(pickle.dumps(spec))
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, __file__, "--run-job", str(spec_path)], env=env)
    code = child.wait()
    wall = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"compute_{evaluation} failed (exit {code}); see {spec['log']}")
    return int(Path(spec["peak"]).read_text()) / 2**20, wall  # VmHWM: KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/metric_stage"))
    parser.add_argument("--models", type=int, default=4)
    parser.add_argument("--imagenet-c", type=float, default=0.05, help="fraction of ImageNet-C's 3.75 M images")
    parser.add_argument("--invariance-images", type=int, default=10000)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--jobs", default=",".join(JOBS))
    parser.add_argument("--run-job", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_job:
        run_job(args.run_job)
        return
    study = paper_study(args.workdir, args.models, args.invariance_images, args.resamples)
    start = time.perf_counter()
    size = write_study(study, args.imagenet_c, args.workdir)
    n_c = len(json.loads(Path(study.manifest("imagenet_c")).read_text())["samples"])
    print(f"{args.models} models, ImageNet-C at {args.imagenet_c:g} ({n_c:,} images), invariance variants on "
          f"{args.invariance_images:,} images, {args.resamples} resamples; outputs {size:.1f} GB "
          f"(written or checked in {time.perf_counter() - start:.0f} s)", flush=True)
    print(f"{'job':<22} {'peak RSS (GiB)':>14} {'wall (s)':>9}", flush=True)
    for evaluation in args.jobs.split(","):
        rss, wall = measure(study, evaluation, args.workdir)
        print(f"compute_{evaluation:<14} {rss:>14.2f} {wall:>9.0f}", flush=True)


if __name__ == "__main__":
    main()

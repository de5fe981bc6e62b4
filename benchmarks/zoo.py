"""A zoo of N tiny random models: how the workflow's jobs, planning time and memory grow with models.

Writes a study with N models (tiny random timm and open_clip networks, the default study's four
architectures in turn, each with its own seed) and the datasets and evaluations of a base study
(the default config.yaml, or e.g. studies/paper.yaml), then dry-runs it and prints the jobs per
model, the study-wide jobs, the dry run's wall time and peak RSS. With ``--run`` it runs the study
(the default datasets are generated, so this works offline) and prints its wall time against the
forward passes of the extraction jobs (their ``job timing`` log lines) plus one start-up per model.

  python benchmarks/zoo.py --models 128 --study studies/paper.yaml    # plan the paper study for 128 models
  python benchmarks/zoo.py --models 24 --run --cores 2                 # run 24 tiny models end to end

Numbers are for the machine it runs on; on a shared machine compare ratios, not seconds.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
# The default study's tiny random architectures (config.yaml): built offline, no download.
ARCHITECTURES = [
    {"source": "timm", "name": "convnext_atto", "family": "convnet", "paradigm": "supervised"},
    {"source": "timm", "name": "vit_tiny_patch16_224", "family": "vit", "paradigm": "supervised"},
    {"source": "open_clip", "name": "tiny-convnext-clip", "family": "convnet", "paradigm": "clip"},
    {"source": "open_clip", "name": "tiny-vit-clip", "family": "vit", "paradigm": "clip"},
]


def zoo_models(n: int) -> dict[str, dict]:
    """N model entries: the tiny architectures in turn, random weights, a seed each."""
    models = {}
    for i in range(n):
        arch = ARCHITECTURES[i % len(ARCHITECTURES)]
        models[f"zoo{i:03d}"] = {**arch, "pretrained": False, "seed": i,
                                 "label": f"{arch['name']} #{i} (random weights)"}
    return models


def write_study(base: Path, n: int, folder: Path) -> Path:
    """The base study with its models replaced by N zoo models, as ``folder/zoo.yaml``."""
    with open(base) as f:
        config = yaml.safe_load(f)
    config["models"] = zoo_models(n)
    config["study"] = f"zoo-{n}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "zoo.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def snakemake(configfile: Path, workdir: Path, *args: str) -> tuple[str, float, float, float]:
    """Run Snakemake in a child process: (its output, wall seconds, the child's peak RSS in MiB,
    its CPU seconds: on a shared machine the wall time also counts other people's work)."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--configfile", str(configfile),
           "-d", str(workdir), *args]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, env={**os.environ, "PYTHONPATH": str(REPO)})
    wall = time.perf_counter() - start
    if out.returncode:
        sys.exit(f"snakemake failed ({' '.join(cmd)}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak = after.ru_maxrss / 1024
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return out.stdout + out.stderr, wall, peak, cpu


def planned_jobs(text: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, wildcards) of every job a dry run prints."""
    jobs = []
    for block in re.split(r"\n(?=\[[A-Z][a-z]{2} )", text):
        rule = re.search(r"^(?:local)?rule (\w+):", block, re.MULTILINE)
        if not rule:
            continue
        wc = re.search(r"^\s+wildcards: (.*)$", block, re.MULTILINE)
        wildcards = dict(kv.split("=", 1) for kv in wc.group(1).split(", ")) if wc else {}
        jobs.append((rule.group(1), wildcards))
    return jobs


def dry_run(configfile: Path, workdir: Path, n: int) -> dict:
    text, wall, peak, cpu = snakemake(configfile, workdir, "-n", "--cores", "1")
    jobs = planned_jobs(text)
    per_model = collections.Counter(w["model"] for _, w in jobs if "model" in w)
    shared = collections.Counter(rule for rule, w in jobs if "model" not in w)
    rules_per_model = collections.Counter(rule for rule, w in jobs if "model" in w)
    figures = {"models": n, "jobs": len(jobs), "dry_run_s": round(wall, 1), "dry_run_cpu_s": round(cpu, 1),
               "dry_run_peak_rss_mib": round(peak),
               "jobs_per_model_max": max(per_model.values(), default=0),
               "jobs_per_model_mean": round(sum(per_model.values()) / max(n, 1), 2),
               "shared_jobs": sum(shared.values()), "per_model_rules": dict(rules_per_model), "shared_rules": dict(shared)}
    print(f"[plan] {n} models: {len(jobs)} jobs, planned in {wall:.1f} s ({cpu:.1f} s CPU), peak RSS {peak:.0f} MiB")
    print(f"[plan] per model: {figures['jobs_per_model_mean']} jobs on average, at most "
          f"{figures['jobs_per_model_max']} ({', '.join(f'{r} {c / n:g}' for r, c in rules_per_model.items())})")
    print(f"[plan] study-wide (no model wildcard): {figures['shared_jobs']} jobs "
          f"({', '.join(f'{r} {c}' for r, c in shared.items())})")
    return figures


def job_seconds_by_rule(log: str) -> dict[str, dict]:
    """Jobs and summed seconds per rule, from a Snakemake log: each job from the time stamp above its
    ``rule X:`` block to the one above its ``Finished jobid: N`` line (whole seconds)."""
    stamp, started, rules = None, {}, {}
    per_rule: dict[str, dict] = collections.defaultdict(lambda: {"jobs": 0, "seconds": 0.0})
    block_rule = None
    for line in log.splitlines():
        if m := re.match(r"^\[(\w{3} \w{3} +\d+ [\d:]+ \d{4})\]$", line):
            stamp = time.mktime(time.strptime(m.group(1), "%a %b %d %H:%M:%S %Y"))
        elif m := re.match(r"^(?:local)?rule (\w+):", line):
            block_rule = m.group(1)
        elif (m := re.match(r"^\s+jobid: (\d+)", line)) and block_rule:
            started[m.group(1)], rules[m.group(1)] = stamp, block_rule
            block_rule = None
        elif (m := re.match(r"^Finished job(?:id)?[: ] ?(\d+)", line)) and m.group(1) in started:
            entry = per_rule[rules[m.group(1)]]
            entry["jobs"] += 1
            entry["seconds"] += stamp - started[m.group(1)]
    return dict(sorted(per_rule.items(), key=lambda kv: -kv[1]["seconds"]))


def run(configfile: Path, workdir: Path, n: int, cores: int) -> dict:
    text, wall, _, _ = snakemake(configfile, workdir, "--cores", str(cores))
    timings = []
    results = workdir / yaml.safe_load(configfile.read_text()).get("results_dir", "results")
    for path in sorted((results / "logs" / "extract_outputs").glob("*/*.log")):
        for line in path.read_text().splitlines():
            if "job timing " in line:
                timings.append(json.loads(line.split("job timing ", 1)[1]))
    forward = sum(t["forward_s"] for t in timings)
    starts = [t["start_to_first_batch_s"] for t in timings if "start_to_first_batch_s" in t]
    start_up = statistics.median(starts) if starts else 0.0
    budget = forward + n * start_up
    finished = len(re.findall(r"^Finished job(?:id)?[: ]", text, re.MULTILINE))
    figures = {"wall_s": round(wall, 1), "jobs_run": finished, "extraction_jobs": len(timings),
               "forward_s": round(forward, 1), "start_up_s": round(start_up, 2), "start_ups": n,
               "forward_plus_start_ups_s": round(budget, 1),
               "wall_over_forward_plus_start_ups": round(wall / budget, 2) if budget else None}
    logs = sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log"))
    by_rule = job_seconds_by_rule(logs[-1].read_text()) if logs else {}
    figures["job_seconds_by_rule"] = by_rule
    print(f"[run] summed job seconds {sum(r['seconds'] for r in by_rule.values()):.0f}: "
          + ", ".join(f"{rule} {r['seconds']:.0f} s/{r['jobs']}" for rule, r in by_rule.items()))
    print(f"[run] {n} models on {cores} cores: wall {wall:.1f} s, {finished} jobs; forward passes {forward:.1f} s "
          f"+ {n} start-ups x {start_up:.2f} s (median start to first batch) = {budget:.1f} s: "
          f"wall / (forward + start-ups) = {figures['wall_over_forward_plus_start_ups']} (goal < 2)")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=24, help="how many models (default 24)")
    parser.add_argument("--study", default=str(REPO / "config.yaml"), help="base study: its datasets and evaluations")
    parser.add_argument("--workdir", default=None, help="where to write the study and run it (default: a temp dir)")
    parser.add_argument("--run", action="store_true", help="also run the study to the end")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    import tempfile

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="zoo-"))
    configfile = write_study(Path(args.study), args.models, workdir)
    report = {"study": args.study, "plan": dry_run(configfile, workdir, args.models)}
    if args.run:
        report["run"] = run(configfile, workdir, args.models, args.cores)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Wall time of the default study for two (or more) git revisions, and whether their tables agree.

For each ``--rev`` a fresh ``git worktree`` of that revision is made in a temporary folder and the
same config (``--config``, default: that revision's own ``config.yaml``) is run there from scratch
with ``snakemake --cores N``; then it prints every wall time, the ratio of each to the first, and
whether every ``results/metrics/*.csv`` is byte-identical to the first revision's. It also prints
where the time went: the summed wall time of the jobs of each rule, from Snakemake's log, and (for
revisions whose extraction jobs log a ``job timing`` line) total job wall time / forward passes.

    python benchmarks/study_walltime.py --rev main --rev perf-fusion            # 2 cores, default study
    python benchmarks/study_walltime.py --rev A --rev B --config my.yaml --cores 2 --keep

Run it on idle cores (the figure is a wall time). A script, not a test.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]")
RULE = re.compile(r"^(?:local)?rule (\w+):")
JOBID = re.compile(r"^\s+jobid: (\d+)")
FINISHED = re.compile(r"Finished jobid: (\d+)")


def rule_times(log_text: str) -> dict[str, tuple[int, float]]:
    """(number of jobs, summed seconds from start to finish) per rule, from a Snakemake log."""
    now = None
    pending_rule = None
    started: dict[str, tuple[str, datetime]] = {}
    out: dict[str, list] = defaultdict(lambda: [0, 0.0])
    for line in log_text.splitlines():
        if m := STAMP.match(line):
            now = datetime.strptime(" ".join(m.group(1).split()), "%a %b %d %H:%M:%S %Y")
        elif m := RULE.match(line):
            pending_rule = m.group(1)
        elif (m := JOBID.match(line)) and pending_rule:
            started[m.group(1)] = (pending_rule, now)
            pending_rule = None
        elif (m := FINISHED.search(line)) and m.group(1) in started and now is not None:
            rule, t0 = started.pop(m.group(1))
            out[rule][0] += 1
            out[rule][1] += (now - t0).total_seconds()
    return {rule: (n, s) for rule, (n, s) in out.items()}


def run_rev(rev: str, config: Path | None, cores: int, workdir: Path, python: Path) -> dict:
    tree = workdir / re.sub(r"[^A-Za-z0-9._-]", "_", rev)
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), rev], check=True,
                   stdout=subprocess.DEVNULL)
    commit = subprocess.run(["git", "-C", str(tree), "rev-parse", "HEAD"], check=True, capture_output=True,
                            text=True).stdout.strip()
    snakemake = python.parent / "snakemake"
    cmd = [str(snakemake), "--cores", str(cores), "--resources", "gpu=1"]
    if config is not None:
        cmd += ["--configfile", str(config.resolve())]
    env = {**os.environ, "PYTHONPATH": str(tree)}  # this revision's package, not the venv's editable one
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    (workdir / f"{tree.name}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"{rev}: snakemake failed (rc {proc.returncode}); log in {workdir / (tree.name + '.log')}")
    metrics = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((tree / "results" / "metrics").glob("*.csv"))}
    run = {"rev": rev, "commit": commit, "wall_s": wall, "tree": str(tree), "metrics": metrics,
           "rules": rule_times(proc.stdout + proc.stderr)}
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from extraction import job_figures  # the study-level job wall / forward ratio (this checkout's code)

    run["jobs"] = job_figures(tree / "results", proc.stdout + proc.stderr)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rev", action="append", required=True, help="git revision (repeat; the first is the baseline)")
    parser.add_argument("--config", type=Path, help="study config (default: each revision's config.yaml)")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--python", type=Path, default=Path(sys.executable), help="venv python with snakemake")
    parser.add_argument("--keep", action="store_true", help="keep the worktrees and logs")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="study_walltime_"))
    runs = []
    try:
        for rev in args.rev:
            print(f"running {rev} ...", flush=True)
            runs.append(run_rev(rev, args.config, args.cores, workdir, args.python))
            print(f"  {rev} ({runs[-1]['commit'][:10]}): {runs[-1]['wall_s']:.1f} s", flush=True)
    finally:
        if not args.keep:
            for run in runs:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", run["tree"]], check=False)
            subprocess.run(["git", "-C", str(REPO), "worktree", "prune"], check=False)
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"worktrees and logs kept in {workdir}")

    base = runs[0]
    for run in runs:
        print(f"\n{run['rev']} ({run['commit'][:10]}): wall {run['wall_s']:.1f} s, "
              f"ratio to {base['rev']} {run['wall_s'] / base['wall_s']:.3f}")
        for rule, (n, s) in sorted(run["rules"].items(), key=lambda kv: -kv[1][1]):
            print(f"    {rule:32s} {n:4d} jobs {s:8.1f} s summed job wall time")
        if run is not base:
            names = sorted(set(base["metrics"]) | set(run["metrics"]))
            differ = [n for n in names if base["metrics"].get(n) != run["metrics"].get(n)]
            print(f"  results/metrics/*.csv: {len(names)} tables, "
                  + ("all byte-identical to the baseline" if not differ else f"DIFFERENT: {differ}"))
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()

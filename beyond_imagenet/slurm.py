"""Fail fast on SLURM jobs that no node can ever run.

A job asking for more CPUs, memory, GPUs or time than any node of its partition offers is accepted by
``sbatch`` on most clusters and then stays pending for ever (``Reason=PartitionConfig``), while
Snakemake waits silently. ``check_workflow`` (called from the Snakefile's ``onstart``, under the SLURM
executor only) compares every job about to be submitted with the partitions' nodes (``sinfo``) and
stops the run before anything is submitted, naming each rule, what it asks for, the largest node of
its partition and the profile's size variables.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from typing import Iterable

# The fields asked of sinfo, one line per (node, partition).
SINFO_FORMAT = "%R|%N|%c|%m|%l|%G"
HOW_TO_ADAPT = (
    "Adapt the sizes to your cluster with BEYOND_IMAGENET_SLURM_MAX_CPUS / _MAX_MEM_MB / _MAX_RUNTIME "
    "(and the partitions with BEYOND_IMAGENET_SLURM_PARTITION / _GPU_PARTITION): see profiles/slurm/config.yaml."
)


@dataclass(frozen=True)
class Node:
    partition: str
    name: str
    cpus: int
    mem_mb: int
    time_limit: float  # minutes; inf for "infinite"
    gpus: int


@dataclass(frozen=True)
class Request:
    rule: str
    partition: str
    cpus: int
    mem_mb: int
    runtime: int  # minutes
    gpus: int

    def describe(self) -> str:
        gpus = f", {self.gpus} GPU(s)" if self.gpus else ""
        return f"{self.cpus} CPUs, {self.mem_mb} MB, {self.runtime} min{gpus}"


def parse_time(text: str) -> float:
    """A SLURM time limit in minutes: 'infinite', 'MM', 'MM:SS', 'HH:MM:SS', 'D-HH[:MM[:SS]]'."""
    text = text.strip()
    if text in ("infinite", "UNLIMITED", "n/a", ""):
        return float("inf")
    days = 0
    if "-" in text:
        day, text = text.split("-", 1)
        days = int(day)
        parts = [int(p) for p in text.split(":")] + [0, 0]
        hours, minutes, seconds = parts[:3]
    else:
        parts = [int(p) for p in text.split(":")]
        if len(parts) == 1:
            hours, minutes, seconds = 0, parts[0], 0
        elif len(parts) == 2:
            hours, (minutes, seconds) = 0, parts
        else:
            hours, minutes, seconds = parts[:3]
    return days * 1440 + hours * 60 + minutes + seconds / 60


def parse_gpus(gres: str) -> int:
    """GPUs in a sinfo %G field such as 'gpu:2', 'gpu:a100:4(S:0-1)', '(null)'."""
    total = 0
    for item in re.split(r",(?![^(]*\))", gres):
        fields = re.sub(r"\(.*?\)", "", item).split(":")
        if fields[0] == "gpu":
            total += int(fields[-1]) if len(fields) > 1 and fields[-1].isdigit() else 1
    return total


def parse_sinfo(text: str) -> list[Node]:
    nodes = []
    for line in text.splitlines():
        if not line.strip():
            continue
        partition, name, cpus, mem, limit, gres = line.split("|")
        nodes.append(Node(partition.rstrip("*"), name, int(cpus), int(re.sub(r"\D.*", "", mem) or 0),
                          parse_time(limit), parse_gpus(gres)))
    return nodes


def query_nodes() -> list[Node]:
    try:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", SINFO_FORMAT], check=True, capture_output=True,
                             text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as err:
        detail = getattr(err, "stderr", "") or err
        raise RuntimeError(f"sinfo failed, so the jobs' sizes could not be checked against the cluster: {detail}")
    return parse_sinfo(out)


def default_partition() -> str:
    out = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=60).stdout
    return next((p.rstrip("*") for p in out.split() if p.endswith("*")), "")


def unschedulable(requests: Iterable[Request], nodes: list[Node]) -> list[str]:
    """One line per distinct request that no node of its partition can ever run."""
    problems, seen = [], set()
    partitions = sorted({n.partition for n in nodes})
    for req in requests:
        if req in seen:
            continue
        seen.add(req)
        members = [n for n in nodes if n.partition == req.partition]
        if not members:
            problems.append(f"rule {req.rule}: partition {req.partition!r} does not exist "
                            f"(sinfo lists {', '.join(partitions) or 'none'})")
            continue
        if any(n.cpus >= req.cpus and n.mem_mb >= req.mem_mb and n.gpus >= req.gpus and n.time_limit >= req.runtime
               for n in members):
            continue
        big = max(members, key=lambda n: (n.cpus, n.mem_mb, n.gpus))
        limit = "no time limit" if big.time_limit == float("inf") else f"time limit {big.time_limit:g} min"
        problems.append(f"rule {req.rule}: asks for {req.describe()}; the largest node of partition "
                        f"{req.partition!r} ({big.name}) has {big.cpus} CPUs, {big.mem_mb} MB, "
                        f"{big.gpus} GPU(s), {limit}")
    return problems


def job_request(job, fallback_partition: str, name: str | None = None) -> Request:
    """What the SLURM plugin will ask for this (Snakemake) job or group job."""
    res = job.resources
    cpus = res.get("cpus_per_task") or res.get("_cores") or 1
    mem = res.get("mem_mb") or 0
    if res.get("mem_mb_per_cpu"):
        mem = max(mem, int(res.get("mem_mb_per_cpu")) * int(cpus))
    gpus = res.get("gpu") or 0
    return Request(rule=name or job.rule.name,
                   partition=str(res.get("slurm_partition") or fallback_partition),
                   cpus=int(cpus), mem_mb=int(mem), runtime=int(res.get("runtime") or 0),
                   gpus=int(gpus) if str(gpus).isdigit() else 1)


def check_workflow(workflow) -> None:
    """Under the SLURM executor: raise RuntimeError listing every job that can never be scheduled."""
    plugin = getattr(workflow, "executor_plugin", None)
    if plugin is None or plugin.name != "slurm" or workflow.dryrun:
        return
    dag = workflow.dag
    jobs = [job for job in dag.needrun_jobs() if not job.is_local]
    if not jobs:
        return
    nodes = query_nodes()
    fallback = default_partition()
    requests, groups = [], {}
    for job in jobs:
        group = dag.get_job_group(job)
        if group is None:
            requests.append(job_request(job, fallback))
        else:
            groups[group.groupid] = group
    # A group job (profiles/slurm `groups:`) is one SLURM job; Snakemake sizes it from its members.
    requests += [job_request(group, fallback, name=f"group {group.groupid} ({', '.join(sorted({j.rule.name for j in group.jobs}))})")
                 for group in groups.values()]
    problems = unschedulable(requests, nodes)
    if problems:
        raise RuntimeError("these SLURM jobs could never start (no node of their partition is big enough), "
                           "so none was submitted:\n  " + "\n  ".join(problems) + "\n" + HOW_TO_ADAPT)

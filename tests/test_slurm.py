"""profiles/slurm on a real one-node SLURM cluster (tests/slurm_cluster.py), and the checks behind it.

The cluster tests install Debian's SLURM, MariaDB and munge with apt-get when run as root with
CI=true (or BEYOND_IMAGENET_INSTALL_SLURM=1), and are skipped, with the reason, where that cannot be
done. They run SLURM_COMMAND, the README's command, on a cut-down default study and guard:
- every job went through sbatch and finished (sacct), and the tables equal a local run's byte for byte;
- a CPU-pinned study asks SLURM for no GPU, a GPU study gets --gpus=1 for its model rules (sacct's
  ReqTRES; the node's one GPU is faked by count);
- a job no node can run stops the run before anything is submitted (Reason=PartitionConfig otherwise);
- profiles/default, loaded on top of profiles/slurm, changes none of its settings.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from beyond_imagenet.slurm import Node, Request, parse_gpus, parse_sinfo, parse_time, unschedulable
from conftest import REPO, default_config, write_config

sys.path.insert(0, str(Path(__file__).parent))
import slurm_cluster  # noqa: E402

SNAKEMAKE = Path(sys.executable).with_name("snakemake")
# The README's SLURM test command (documented size overrides for a 2-CPU node), run from the checkout.
SLURM_ENV = {"BEYOND_IMAGENET_SLURM_MAX_CPUS": "1", "BEYOND_IMAGENET_SLURM_MAX_MEM_MB": "4000",
             "BEYOND_IMAGENET_SLURM_POLL_SECONDS": "5"}
SLURM_ARGS = ["--profile", "profiles/slurm", "--configfile"]
SLURM_COMMAND = " ".join([*(f"{k}={v}" for k, v in SLURM_ENV.items()), ".venv/bin/snakemake", *SLURM_ARGS])
# The cut-down study: one CLIP model (extraction, which builds its zero-shot head: the GPU rule), ImageNet val.
TABLES = ["results/metrics/accuracy.csv", "results/metrics/calibration.csv"]


# -- no cluster needed ---------------------------------------------------------------------------

def test_sinfo_fields_are_parsed():
    assert parse_time("infinite") == float("inf") and parse_time("30") == 30
    assert parse_time("8:00:00") == 480 and parse_time("1-00:00:00") == 1440 and parse_time("2-12") == 3600
    assert parse_time("45:30") == 45.5
    assert parse_gpus("(null)") == 0 and parse_gpus("gpu:2") == 2 and parse_gpus("gpu:a100:4(S:0-1)") == 4
    assert parse_gpus("gpu:a100:2(S:0),gpu:v100:1(S:1)") == 3
    nodes = parse_sinfo("cpu*|n1|2|24105|infinite|(null)\ngpu|n1|2|24105|8:00:00|gpu:1\n")
    assert nodes == [Node("cpu", "n1", 2, 24105, float("inf"), 0), Node("gpu", "n1", 2, 24105, 480, 1)]


def test_jobs_no_node_can_run_are_named():
    """A request beyond every node of its partition (CPUs, memory, GPUs, time limit) or for a partition
    that does not exist is reported, once per distinct request; one that fits is not."""
    nodes = [Node("cpu", "small", 2, 4000, float("inf"), 0), Node("gpu", "g1", 16, 64000, 480, 2)]
    fits = [Request("a", "cpu", 2, 4000, 60, 0), Request("b", "gpu", 12, 48000, 480, 1)]
    assert unschedulable(fits, nodes) == []
    bad = [Request("a", "cpu", 12, 1000, 60, 0), Request("a", "cpu", 12, 1000, 60, 0),
           Request("b", "gpu", 4, 1000, 600, 1), Request("c", "cpu", 1, 1000, 10, 1),
           Request("d", "gpus", 1, 1000, 10, 0)]
    problems = unschedulable(bad, nodes)
    assert len(problems) == 4
    assert "rule a: asks for 12 CPUs" in problems[0] and "(small) has 2 CPUs, 4000 MB" in problems[0]
    assert "time limit 480 min" in problems[1] and "1 GPU(s)" in problems[2]
    assert "partition 'gpus' does not exist (sinfo lists cpu, gpu)" in problems[3]


def effective_profile(env: dict[str, str] | None = None):
    """Snakemake's own parse of `--profile profiles/slurm` run from the checkout, workflow profile included."""
    from snakemake.cli import parse_args

    old_cwd, old_env = os.getcwd(), dict(os.environ)
    try:
        os.chdir(REPO)
        os.environ.update(env or {})
        return parse_args(["--profile", "profiles/slurm"])[1]
    finally:
        os.chdir(old_cwd)
        os.environ.clear()
        os.environ.update(old_env)


def profile_values(env: dict[str, str] | None = None) -> dict:
    """profiles/slurm/config.yaml as Snakemake's profile parser renders it (templates evaluated)."""
    from snakemake.profiles import ProfileConfigFileParser

    old_env = dict(os.environ)
    try:
        os.environ.update(env or {})
        with open(REPO / "profiles" / "slurm" / "config.yaml") as stream:
            return dict(ProfileConfigFileParser().parse(stream))
    finally:
        os.environ.clear()
        os.environ.update(old_env)


def test_default_profile_changes_nothing_the_slurm_profile_sets():
    """profiles/default is loaded on top of --profile and wins key by key: it must not set cores or
    the gpu resource (they made one GPU job run at a time on the whole cluster and cut extraction to
    2 threads); Snakemake's own parse of `--profile profiles/slurm` keeps the SLURM profile's values."""
    args = effective_profile()
    assert args.executor == "slurm" and args.jobs == 64 and args.cores is None
    assert set(args.resources) == {"mem_mb", "cpus_per_task"}
    assert args.resources["cpus_per_task"].value == 12 and args.set_threads["extract_outputs"].value == 12
    assert args.set_resources["extract_outputs"]["cpus_per_task"].value == 12
    slurm = profile_values()
    default = yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())
    assert {k for k in default if str(default[k]) != slurm.get(k, str(default[k]))} == set()
    assert "cores" not in default and "resources" not in default


def test_slurm_profile_asks_no_gpu_itself():
    """Whether a job asks for a GPU is the rule's own `gpu` resource (0 for a CPU-pinned study): the
    profile sets no `gpu`, and sends every rule that declares one to the GPU partition."""
    rules, gpu_rules = set(), set()
    for path in (REPO / "rules").glob("*.smk"):
        for block in re.split(r"^ *rule ", path.read_text(), flags=re.M)[1:]:  # (some under an `if`)
            name = block.split(":", 1)[0].strip()
            rules.add(name)
            # `gpu=` itself, or the execution resources of a model-running rule (rules/common.smk)
            if re.search(r"^\s+(gpu=|\*\*EXECUTION)", block, flags=re.M):
                gpu_rules.add(name)
    values = profile_values()
    assert not any("gpu=" in item for item in values["set-resources"] + values["default-resources"])
    on_gpu = {item.split(":")[0] for item in values["set-resources"] if item.endswith(":slurm_partition=gpu")}
    assert gpu_rules and gpu_rules == on_gpu
    named = {item.split(":")[0] for item in values["set-resources"]} | {item.split("=")[0] for item in values["set-threads"]}
    assert named <= rules and {item.split("=")[0] for item in values["groups"]} <= rules


def test_slurm_profile_sizes_follow_the_documented_variables(capsys):
    """The size variables cap every rule (and the group pool) without replacing the profile's lists;
    partitions are renamed by theirs; a bad value names the variable."""
    values = profile_values({"BEYOND_IMAGENET_SLURM_MAX_CPUS": "4", "BEYOND_IMAGENET_SLURM_MAX_MEM_MB": "20000",
                             "BEYOND_IMAGENET_SLURM_GPU_PARTITION": "a100"})
    res = values["set-resources"]
    assert "extract_outputs:cpus_per_task=4" in res and "extract_outputs:mem_mb=20000" in res
    assert "probe_transfer:cpus_per_task=2" in res
    assert not any(item.startswith("build_zero_shot_head:") for item in res)  # no such job: extraction builds it
    assert "extract_outputs:runtime=480" in res and "extract_outputs:slurm_partition=a100" in res
    assert "slurm_partition=cpu" in values["default-resources"] and "extract_outputs=4" in values["set-threads"]
    assert values["resources"] == ["mem_mb=20000", "cpus_per_task=4"]
    with pytest.raises(SystemExit):
        effective_profile({"BEYOND_IMAGENET_SLURM_MAX_MEM_MB": "16G"})
    assert "BEYOND_IMAGENET_SLURM_MAX_MEM_MB='16G': must be a positive whole number" in capsys.readouterr().err


def test_readme_slurm_section_is_what_the_test_runs():
    readme = (REPO / "README.md").read_text()
    assert SLURM_COMMAND in readme
    for name in SLURM_ENV:
        assert name in (REPO / "profiles" / "slurm" / "config.yaml").read_text()


# -- on the cluster ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster():
    missing = slurm_cluster.missing_commands()
    if missing:
        opted_in = os.environ.get("CI") == "true" or os.environ.get("BEYOND_IMAGENET_INSTALL_SLURM") == "1"
        if not (opted_in and os.geteuid() == 0 and shutil.which("apt-get")):
            pytest.skip(f"SLURM is not installed here ({', '.join(missing)} missing); it is installed with "
                        f"apt-get ({' '.join(slurm_cluster.PACKAGES)}) only as root with CI=true or "
                        "BEYOND_IMAGENET_INSTALL_SLURM=1")
        try:
            slurm_cluster.install()
        except (RuntimeError, OSError) as err:
            pytest.skip(f"SLURM could not be installed: {err}")
    if slurm_cluster.SYSTEM_CONF.exists() or slurm_cluster.SYSTEM_CONF.is_symlink():
        pytest.skip(f"{slurm_cluster.SYSTEM_CONF} exists: this machine has its own SLURM; not touching it")
    if os.geteuid() != 0:
        pytest.skip("the throw-away cluster runs its daemons as root")
    cluster = slurm_cluster.Cluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        assert cluster.alive() == [] and cluster.slurmstepd_pids() == []
        assert not slurm_cluster.SYSTEM_CONF.is_symlink()


def study(tmp_path: Path, device: str = "cpu") -> Path:
    config = default_config()
    config["models"] = {"vit_clip": config["models"]["vit_clip"]}
    config["zero_shot"]["templates"] = 1
    config["extraction"]["device"] = device
    config["datasets"] = {"imagenet_val": {**config["datasets"]["imagenet_val"], "num_classes": 10}}
    config["evaluations"] = {"accuracy": {"datasets": ["imagenet_val"]},
                             "calibration": {"datasets": ["imagenet_val"], "n_bins": 15}}
    return write_config(tmp_path / f"study_{device}.yaml", config)


def run_on_slurm(cluster, configfile: Path, workdir: Path, targets, env=None, check=True):
    """SLURM_COMMAND from the checkout (outputs in workdir); returns (output, {SLURM job id: rule or
    group:<name>}, exit status)."""
    cmd = [str(SNAKEMAKE), *SLURM_ARGS, str(configfile), "--directory", str(workdir), *targets]
    proc = subprocess.run(cmd, cwd=REPO, env={**cluster.env, **SLURM_ENV, **(env or {})},
                          capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    if check and proc.returncode != 0:
        pytest.fail(f"SLURM run failed ({proc.returncode}):\n{out[-6000:]}\n"
                    f"slurmctld: {cluster.log('slurmctld')[-1500:]}")
    jobs = {}
    for m in re.finditer(r"has been submitted with SLURM jobid (\d+) \(log: \S*/slurm_logs/(rule|group)_([^/]+)/", out):
        jobs[m.group(1)] = m.group(3) if m.group(2) == "rule" else "group:" + m.group(3).split("_")[0]
    return out, jobs, proc.returncode


def accounting(cluster) -> dict[str, tuple[str, str]]:
    """sacct: SLURM job id -> (state, requested TRES), every job of this cluster."""
    out = cluster.run("sacct", "-X", "-n", "--parsable2", "--allusers", "--starttime", "2000-01-01",
                      "--format=JobIDRaw,State,ReqTRES")
    return {jid: (state, tres) for jid, state, tres in (line.split("|") for line in out.splitlines() if line)}


@pytest.mark.workflow
@pytest.mark.slurm
def test_cpu_study_on_slurm_equals_a_local_run(cluster, tmp_path):
    """SLURM_COMMAND runs the CPU-pinned cut-down study: every job is an sbatch job that SLURM
    accounted as COMPLETED, none asked for a GPU (the study pins extraction to the CPU), small jobs
    ran grouped, and each table is byte-identical to `snakemake --cores 2` of the same study."""
    configfile = study(tmp_path)
    out, jobs, _ = run_on_slurm(cluster, configfile, tmp_path / "slurm", TABLES)
    acct = accounting(cluster)
    assert sorted(jobs.values()) == ["extract_outputs", "group:prepare", "group:tables"], out[-3000:]
    for jid, rule in jobs.items():
        state, tres = acct[jid]
        assert state == "COMPLETED", (rule, state)
        assert "gres/gpu" not in tres, (rule, tres)
        assert "cpu=1," in tres and "mem=4000M" in tres, (rule, tres)
    local = tmp_path / "local"
    local.mkdir()
    proc = subprocess.run([str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "--configfile", str(configfile),
                           "--cores", "2", *TABLES], cwd=local, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    tables = sorted(p.relative_to(local) for p in (local / "results" / "metrics").glob("*.csv"))
    assert [str(p) for p in tables] == TABLES
    for table in tables:
        assert (tmp_path / "slurm" / table).read_bytes() == (local / table).read_bytes(), table


@pytest.mark.workflow
@pytest.mark.slurm
def test_gpu_study_asks_slurm_for_a_gpu_per_model_job(cluster, tmp_path):
    """With extraction.device: auto the extraction job (which builds the model's zero-shot head) is
    an `sbatch --gpus=h100:1` job with the README's GPU-type recipe
    (BEYOND_IMAGENET_SLURM_GPU_MODEL=h100), which keeps the profile's other
    resources (the capped memory and CPUs below); the fake GPU is counted by SLURM (ReqTRES). The
    node has no GPU torch can use: if SLURM hands the job its GPU variables, the job stops naming the
    CUDA build and the fix (beyond_imagenet/devices.py), never running silently on the CPU."""
    workdir = tmp_path / "gpu"
    out, jobs, rc = run_on_slurm(cluster, study(tmp_path, "auto"), workdir,
                                 ["results/extracted/vit_clip/all.group.json"],
                                 env={"BEYOND_IMAGENET_SLURM_GPU_MODEL": slurm_cluster.FAKE_GPU_TYPE}, check=False)
    acct = accounting(cluster)
    assert set(jobs.values()) == {"group:prepare", "extract_outputs"}, out[-3000:]
    gpu_jobs = [jid for jid, rule in jobs.items() if rule == "extract_outputs"]
    for jid in gpu_jobs:
        state, tres = acct[jid]
        assert "gres/gpu=1" in tres and f"gres/gpu:{slurm_cluster.FAKE_GPU_TYPE}=1" in tres, tres
        assert "mem=4000M" in tres and "cpu=1" in tres, tres  # the profile's sizes, capped as documented
        if state != "COMPLETED":
            logs = out + "".join(p.read_text() for p in (workdir / "results").rglob("*.log"))
            assert "this job was given a GPU" in logs and "Stopping instead of running on the CPU" in logs, logs[-3000:]
    assert (rc == 0) == all(acct[j][0] == "COMPLETED" for j in jobs), out[-3000:]


def test_gpu_model_recipe_keeps_the_profile():
    """BEYOND_IMAGENET_SLURM_GPU_MODEL adds gpu_model to the GPU rules only; every other setting of the
    profile stays as it is (unlike `--default-resources gpu_model=h100`, which replaces the list)."""
    plain, typed = profile_values(), profile_values({"BEYOND_IMAGENET_SLURM_GPU_MODEL": "h100"})
    added = [item for item in typed["set-resources"] if item not in plain["set-resources"]]
    on_gpu = sorted(item.split(":")[0] for item in plain["set-resources"] if item.endswith(":slurm_partition=gpu"))
    assert sorted(added) == [f"{rule}:gpu_model=h100" for rule in on_gpu]
    assert {k: v for k, v in typed.items() if k != "set-resources"} == {k: v for k, v in plain.items()
                                                                        if k != "set-resources"}
    args = effective_profile({"BEYOND_IMAGENET_SLURM_GPU_MODEL": "h100"})
    assert args.set_resources["extract_outputs"]["mem_mb"].value == 48000
    assert "gpu_model" in args.set_resources["extract_outputs"]
    assert "BEYOND_IMAGENET_SLURM_GPU_MODEL=h100" in (REPO / "README.md").read_text()


@pytest.mark.workflow
@pytest.mark.slurm
def test_job_no_node_can_run_stops_before_any_submission(cluster, tmp_path):
    """Asking for more CPUs than the node has (4 > 2) stops the run at once, naming the rules and the
    variables to adapt, instead of leaving jobs pending for ever (Reason=PartitionConfig)."""
    before = set(accounting(cluster))
    out, jobs, rc = run_on_slurm(cluster, study(tmp_path), tmp_path / "big", TABLES,
                                 env={"BEYOND_IMAGENET_SLURM_MAX_CPUS": "4"}, check=False)
    assert rc != 0 and jobs == {}
    assert "could never start" in out and "rule extract_outputs: asks for 4 CPUs" in out
    assert "BEYOND_IMAGENET_SLURM_MAX_CPUS" in out
    assert set(accounting(cluster)) == before


def test_every_study_wide_table_and_figure_rule_runs_in_the_tables_group():
    """Every rule that forms a study-wide table, figure or page (no `model` wildcard in its output)
    is in the SLURM profile's `tables` group: one sbatch at the end, not one per rule."""
    study_wide = set()
    for path in (REPO / "rules").glob("*.smk"):
        for block in re.split(r"^ *rule ", path.read_text(), flags=re.M)[1:]:
            name = block.split(":", 1)[0].strip()
            if re.match(r"(compute|plot)_|results_page$", name) and "{model}" not in block.split("output:", 1)[-1].split("log:", 1)[0]:
                study_wide.add(name)
    grouped = {item.split("=")[0] for item in profile_values()["groups"] if item.endswith("=tables")}
    assert study_wide and study_wide <= grouped, sorted(study_wide - grouped)

"""Shared fixtures: tiny studies, and Snakemake runs through its Python API in a temporary workdir."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
# The paper authors' per-image 16-class cue-conflict decisions (tests/data/README.md).
DECISIONS = REPO / "tests" / "data" / "cue-conflict-decisions"


def run_snakemake(configfile, workdir, targets=(), dryrun=False, cores=2, forcerun=()):
    """Run the workflow in ``workdir``; return a Counter of job rule names (the DAG of this run)."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import (ConfigSettings, DAGSettings, OutputSettings, Quietness,
                                          ResourceSettings, StorageSettings)

    cwd = os.getcwd()
    try:
        with SnakemakeApi(OutputSettings(quiet={Quietness.PROGRESS, Quietness.RULES}, show_failed_logs=True)) as api:
            workflow = api.workflow(
                resource_settings=ResourceSettings(cores=cores, resources={"gpu": 1}),
                config_settings=ConfigSettings(configfiles=[Path(configfile).resolve()]),
                storage_settings=StorageSettings(),
                snakefile=REPO / "Snakefile",
                workdir=Path(workdir),
            )
            settings = DAGSettings(targets=set(targets), forcerun=set(forcerun))
            dag = workflow.dag(dag_settings=settings)
            # The DAG of jobs to run exists only once a plan is made: count on a dry run first.
            dag.execute_workflow(executor="dryrun")
            jobs = Counter(job.rule.name for job in dag.workflow_api._workflow.dag.needrun_jobs())
            if not dryrun:
                workflow.dag(dag_settings=settings).execute_workflow(executor="local")
            return jobs
    finally:
        os.chdir(cwd)


def dry_run_jobs(configfile, workdir, targets=()) -> list[tuple[str, dict[str, str]]]:
    """The jobs a dry run plans, as (rule name, wildcards) pairs (``run_snakemake`` counts only rules)."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import (ConfigSettings, DAGSettings, OutputSettings, Quietness,
                                          ResourceSettings, StorageSettings)

    cwd = os.getcwd()
    try:
        with SnakemakeApi(OutputSettings(quiet={Quietness.PROGRESS, Quietness.RULES})) as api:
            workflow = api.workflow(
                resource_settings=ResourceSettings(cores=1, resources={"gpu": 1}),
                config_settings=ConfigSettings(configfiles=[Path(configfile).resolve()]),
                storage_settings=StorageSettings(), snakefile=REPO / "Snakefile", workdir=Path(workdir))
            dag = workflow.dag(dag_settings=DAGSettings(targets=set(targets)))
            dag.execute_workflow(executor="dryrun")
            return [(job.rule.name, dict(job.wildcards_dict))
                    for job in dag.workflow_api._workflow.dag.needrun_jobs()]
    finally:
        os.chdir(cwd)


def lint_workflow(configfile) -> bool:
    """True if Snakemake printed any lint."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

    cwd = os.getcwd()
    try:
        with SnakemakeApi(OutputSettings()) as api:
            workflow = api.workflow(resource_settings=ResourceSettings(cores=1),
                                    config_settings=ConfigSettings(configfiles=[Path(configfile).resolve()]),
                                    snakefile=REPO / "Snakefile", workdir=REPO)
            return workflow.lint()
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="session")
def default_study(tmp_path_factory):
    """The real default study (config.yaml), run once to the end in a temporary working directory."""
    workdir = tmp_path_factory.mktemp("default_study")
    jobs = run_snakemake(REPO / "config.yaml", workdir)
    return workdir, jobs


@pytest.fixture(scope="session")
def default_study_again(tmp_path_factory):
    """A second, independent run of the default study (for the determinism check)."""
    workdir = tmp_path_factory.mktemp("default_study_again")
    run_snakemake(REPO / "config.yaml", workdir)
    return workdir


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def default_config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


@pytest.fixture
def tiny_config(tmp_path):
    """The default study shrunk to a few images and two models (one timm, one open_clip)."""
    config = default_config()
    config["models"] = {k: v for k, v in config["models"].items() if k in ("vit_sup", "vit_clip")}
    config["zero_shot"]["templates"] = 1
    for entry in config["datasets"].values():
        entry.update(num_classes=4, images_per_class=1)
    return config

"""Jobs grow with the work (issue 20): no link layer, one probe job per (model, VTAB dataset), a
model added to a finished study runs only its own jobs and the study-wide tables, and the remedies
the error messages print for a deleted or replaced cached output work when followed."""

import json
import shutil
import subprocess
import sys

import h5py
import pytest
from conftest import REPO, default_config, dry_run_jobs, run_snakemake, write_config

pytestmark = pytest.mark.workflow

# Jobs that prepare a dataset (once per dataset, whatever the models).
DATASET_RULES = {"generate_dataset", "fetch_dataset", "unpack_dataset", "build_manifest", "build_vtab_manifest"}


def test_default_study_plans_no_link_jobs_and_one_probe_job_per_model_and_vtab_dataset(tmp_path):
    config = default_config()
    jobs = dry_run_jobs(REPO / "config.yaml", tmp_path)
    rules = [rule for rule, _ in jobs]
    assert "link_output" not in rules
    probes = [w for rule, w in jobs if rule == "probe_transfer"]
    vtab = config["evaluations"]["transfer"]["datasets"]
    assert sorted((w["model"], w["dataset"]) for w in probes) == sorted((m, d) for m in config["models"] for d in vtab)
    # Every job that names a model is one of that model's jobs: extraction groups, its probes, its CKA
    # passes; a CLIP model's zero-shot head has no job of its own (its extraction jobs build it).
    per_model = {rule for rule, w in jobs if "model" in w}
    assert per_model <= {"extract_outputs", "probe_transfer"} | {r for r in rules if "cka" in r}


def test_paper_study_plans_at_most_15_jobs_per_model_and_40_study_wide(tmp_path):
    """Issue 20: the paper study's dry run (no data needed) plans at most 15 jobs per model and 40
    without a model (datasets, tables, figures, `all`): one job writes the 57 VTAB split manifests,
    one per downloaded dataset downloads, unpacks and lists it, one per evaluation draws its figures."""
    import collections

    jobs = dry_run_jobs(REPO / "studies" / "paper.yaml", tmp_path)
    per_model = collections.Counter(w["model"] for _, w in jobs if "model" in w)
    shared = collections.Counter(rule for rule, w in jobs if "model" not in w)
    assert len(per_model) == 4 and max(per_model.values()) <= 15, per_model
    assert sum(shared.values()) <= 40, shared
    assert shared["build_vtab_manifest"] == 1 and shared["fetch_dataset"] == 8 and shared["build_manifest"] == 1
    # every figure file is still its own output: each figure can be asked for by its path
    plotted = [rule for rule in shared if rule.startswith("plot_")]
    assert all(shared[rule] == 1 for rule in plotted) and "plot_calibration" in plotted


def test_a_reader_waits_for_the_group_marker_and_reads_the_extracted_file(tmp_path):
    """compute_accuracy's inputs are the group markers (extraction.group: model: group `all`), its
    params name the files under results/extracted/ (no results/outputs/ anywhere)."""
    import os

    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import (
        ConfigSettings,
        DAGSettings,
        OutputSettings,
        Quietness,
        ResourceSettings,
    )

    cwd = os.getcwd()
    try:
        with SnakemakeApi(OutputSettings(quiet={Quietness.PROGRESS, Quietness.RULES})) as api:
            workflow = api.workflow(resource_settings=ResourceSettings(cores=1),
                                    config_settings=ConfigSettings(configfiles=[REPO / "config.yaml"]),
                                    snakefile=REPO / "Snakefile", workdir=tmp_path)
            dag = workflow.dag(dag_settings=DAGSettings(targets={"results/metrics/accuracy.csv"}))
            dag.execute_workflow(executor="dryrun")
            job = next(j for j in dag.workflow_api._workflow.dag.needrun_jobs() if j.rule.name == "compute_accuracy")
            inputs, cached = list(job.input), job.params.cached
    finally:
        os.chdir(cwd)
    models = list(default_config()["models"])
    assert sorted(f for f in inputs if f.endswith(".group.json")) == sorted(f"results/extracted/{m}/all.group.json"
                                                                             for m in models)
    assert [i["output"] for i in cached] == [f"results/extracted/{m}/imagenet_val.h5" for m in models]
    assert not any("outputs/" in f for f in inputs)


def test_adding_a_model_to_a_finished_study_plans_only_its_jobs_and_study_wide_ones(default_study, tmp_path):
    workdir, _ = default_study
    config = default_config()
    config["models"]["vit_sup_2"] = {**config["models"]["vit_sup"], "seed": 1, "label": "a second ViT"}
    jobs = dry_run_jobs(write_config(tmp_path / "plus_one.yaml", config), workdir)
    assert jobs, "the new model must run something"
    for rule, wildcards in jobs:
        if "model" in wildcards:
            assert wildcards["model"] == "vit_sup_2", (rule, wildcards)
        else:  # a study-wide aggregate (tables, figures, CKA pairs), never a dataset's preparation
            assert rule not in DATASET_RULES, (rule, wildcards)
    assert ("extract_outputs", {"model": "vit_sup_2", "group": "all"}) in jobs
    assert ("probe_transfer", {"model": "vit_sup_2", "dataset": "vtab"}) in jobs


@pytest.fixture
def finished_copy(default_study, tmp_path):
    """A copy of the finished default study (times kept, so Snakemake sees it finished)."""
    workdir, _ = default_study
    copy = tmp_path / "study"
    shutil.copytree(workdir, copy, symlinks=True)
    assert dry_run_jobs(REPO / "config.yaml", copy) == []
    return copy


def _file_of(copy, model, name):
    return copy / "results" / "extracted" / model / name


def test_deleting_a_cached_output_recomputes_it_and_reuses_the_rest(finished_copy):
    """The remedy the stale-output error and the README print: delete the file under
    results/extracted/ and rerun. The group's marker then lists a missing file: its job reruns,
    recomputes that file only, and the tables that read it rerun."""
    copy = finished_copy
    gone, kept = _file_of(copy, "vit_sup", "imagenet_r.h5"), _file_of(copy, "vit_sup", "imagenet_val.h5")
    before = (copy / "results" / "metrics" / "calibration.csv").read_bytes()
    kept_mtime = kept.stat().st_mtime_ns
    gone.unlink()
    planned = dry_run_jobs(REPO / "config.yaml", copy)
    assert ("extract_outputs", {"model": "vit_sup", "group": "all"}) in planned
    assert not any(w.get("model") not in (None, "vit_sup") for _, w in planned), planned
    run_snakemake(REPO / "config.yaml", copy, targets=["results/metrics/calibration.csv"])
    assert gone.is_file() and kept.stat().st_mtime_ns == kept_mtime  # recomputed; the other reused
    assert (copy / "results" / "metrics" / "calibration.csv").read_bytes() == before
    log = (copy / "results" / "logs" / "extract_outputs" / "vit_sup" / "all.log").read_text()
    timing = json.loads(log.rsplit("job timing ", 1)[1].splitlines()[0])
    assert timing["computed"] == 1 and timing["reused"] == timing["items"] - 1


def test_a_cached_output_replaced_by_another_models_file_is_recomputed(finished_copy):
    """A file replaced after its job wrote it (here: another model's, which a reader would refuse
    as made for something else) is caught by its group's marker and recomputed by the next run."""
    copy = finished_copy
    target = _file_of(copy, "vit_sup", "imagenet_r.h5")
    shutil.copy(_file_of(copy, "vit_clip", "imagenet_r.h5"), target)
    run_snakemake(REPO / "config.yaml", copy, targets=["results/metrics/calibration.csv"])
    with h5py.File(target, "r") as f:
        assert f.attrs["model"] == "vit_sup"


def test_a_workflow_parse_imports_neither_torch_nor_matplotlib(tmp_path):
    """Every job under SLURM and every dry run parses the Snakefile: it must not pay for torch or
    matplotlib (seconds and hundreds of MB each)."""
    code = f"""
import sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, DAGSettings, OutputSettings, Quietness, ResourceSettings
with SnakemakeApi(OutputSettings(quiet={{Quietness.PROGRESS, Quietness.RULES}})) as api:
    workflow = api.workflow(resource_settings=ResourceSettings(cores=1),
                            config_settings=ConfigSettings(configfiles=[Path({str(REPO / 'config.yaml')!r})]),
                            snakefile=Path({str(REPO / 'Snakefile')!r}), workdir=Path({str(tmp_path)!r}))
    workflow.dag(dag_settings=DAGSettings()).execute_workflow(executor="dryrun")
print(sorted(m for m in ("torch", "matplotlib", "timm", "open_clip") if m in sys.modules))
"""
    # What the libraries say about an architecture is asked once per library version and kept
    # (model_specs.cached_fact, in a fresh cache folder here): the first parse may import them, none after.
    env = {**__import__("os").environ, "PYTHONPATH": str(REPO), "BEYOND_IMAGENET_CACHE": str(tmp_path / "cache")}
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                             cwd=tmp_path, env=env)
        assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout[-2000:]


def test_a_group_marker_notices_a_deleted_or_replaced_file(tmp_path):
    """group_damage: what makes a finished group's job rerun (rules/common.smk forces it)."""
    from beyond_imagenet.extraction_jobs import file_stamp, group_damage

    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    a.write_bytes(b"aaaa")
    b.write_bytes(b"bbbb")
    marker = tmp_path / "g.group.json"
    marker.write_text(json.dumps({"outputs": [str(a), str(b)], "files": {str(a): file_stamp(a), str(b): file_stamp(b)}}))
    assert group_damage(marker) == [] and group_damage(tmp_path / "none.group.json") == []
    b.write_bytes(b"a copy of something else")
    a.unlink()
    assert group_damage(marker) == [f"{a} is missing", f"{b} changed after its job wrote it"]


def test_the_jobs_benchmark_finds_the_snakemake_log_above_any_results_dir(tmp_path):
    """benchmarks/extraction.py --jobs results/paper (a study's results_dir other than `results`)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from extraction import _snakemake_log

    log = tmp_path / ".snakemake" / "log" / "2026-01-01T000000.000000.snakemake.log"
    log.parent.mkdir(parents=True)
    log.write_text("")
    (tmp_path / "results" / "paper").mkdir(parents=True)
    assert _snakemake_log(tmp_path / "results" / "paper") == log
    assert _snakemake_log(tmp_path / "results") == log

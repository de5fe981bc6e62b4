"""A job's params are exactly the settings it uses: the promise "only invalidated steps rerun".

Snakemake reruns a job when its `params:` change (rerun trigger `params`), and only then for a
setting. So a script job must read nothing but `snakemake.input`, `.params`, `.output` (and
wildcards, threads, log, resources):

* a setting a script reads from `snakemake.config` (e.g. through `Study(snakemake.config)`) never
  reruns its job when it changes;
* a declared param (or a key of a dict param) the script does not read reruns the job for nothing:
  e.g. the CKA section passed whole, with its `datasets:` list, reran the CKA passes of the datasets
  already done when a dataset was added to CKA.

Guards (none of them depends on how the rules and scripts are written, only on what jobs read and plan):

1. A small study in which every `script:` rule runs (all evaluations incl. VTAB probes, invariance,
   CKA, the profile, the skipped list, a file:// download + unpack, a manual archive) runs under an auditor,
   tests/params_audit/sitecustomize.py (its docstring says what it records): no job reads
   `snakemake.config` (nor opens the config file), and every job reads every param it declares,
   and every first-level key of each dict param.
2. In a copy of the finished study, adding one dataset to one evaluation's `datasets:` plans (dry
   run) only that evaluation's jobs, the jobs that make the added dataset's outputs, and the
   study-wide aggregates.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import sys
import tarfile
from collections import Counter, defaultdict
from pathlib import Path
from types import SimpleNamespace

import pytest

from beyond_imagenet.study import Study, validate_config
from conftest import REPO, default_config, run_snakemake, write_config

pytestmark = pytest.mark.workflow

AUDITOR = Path(__file__).resolve().parent / "params_audit"
AUDIT_DIR_VAR = "BEYOND_IMAGENET_PARAMS_AUDIT_DIR"
AUDIT_CONFIGFILES_VAR = "BEYOND_IMAGENET_PARAMS_AUDIT_CONFIGFILES"

# The unused dataset fetched from a file:// URL, to run fetch_dataset (download, unpack, manifest: its
# manifest is an extra target beside `all`; its own sha256 makes it a repack, of 2 images not 1,280),
# and the same archive as a manual one, to run unpack_dataset (its folder is the target: a manifest
# of it would need the real 1,280 images).
DOWNLOADED = "cue_download"
ARCHIVED = "cue_archive"

# Script rules the audited study cannot run. Each needs a reason; everything else must be audited.
NOT_COVERED: dict[str, str] = {}

# (rule, param) pairs that exist only to rerun the job, which need not read them. Each needs a reason.
RERUN_TRIGGERS = {
    ("build_manifest", "listing"): "digest of a manual folder's file listing (no workflow input tracks a "
                                   "manual folder): a changed folder rebuilds the manifest",
    ("build_vtab_manifest", "listing"): "the same for a manual VTAB task folder",
}

# Study-wide aggregates: they read every metric table / every extracted output, so any evaluation
# or extraction change legitimately reruns them.
# Study-wide jobs that read every table (the profile, the model-against-model comparisons) or every output.
AGGREGATES = {"compute_profile", "plot_profile", "compute_comparisons", "plot_comparisons", "list_skipped_images",
              "compute_across_models", "plot_across_models", "plot_vs_imagenet", "results_page"}


# ------------------------------------------------------------------------------------- study
def study_config(archive: Path) -> dict:
    """Every evaluation of the default study, shrunk as conftest's tiny_config (a few images per set),
    further to one model: a CLIP one, whose extraction jobs build its zero-shot head (every job here
    costs a few seconds of imports; jobs of a second model would only repeat rules already audited)."""
    config = default_config()
    config["models"] = {k: v for k, v in config["models"].items() if k == "vit_clip"}
    config["zero_shot"]["templates"] = 1
    datasets = config["datasets"]
    for name in ("imagenet_r", "imagenet_v2", "imagenet_c", "imagenet_hard"):  # their code paths: other tests
        del datasets[name]
    for entry in datasets.values():
        entry.update(num_classes=4, images_per_class=1)
    datasets["imagenet_val"]["images_per_class"] = 2  # 8 images: two CKA batches of 4
    datasets["vtab"].update(tasks=["dtd"], split_sizes={"train800": 8, "val200": 4, "test": 8})
    from beyond_imagenet.download import sha256_file

    datasets[DOWNLOADED] = {"kind": "cue_conflict", "source": "download", "url": archive.as_uri(),
                            "sha256": sha256_file(archive)}
    datasets[ARCHIVED] = {"kind": "cue_conflict", "source": "manual", "archive": str(archive)}
    evaluations = config["evaluations"]
    evaluations["calibration"]["datasets"] = ["imagenet_val"]
    evaluations["robustness"]["datasets"] = ["imagenet_val"]
    evaluations["transfer"]["probe"] = {"device": "cpu", "epochs": 2, "weight_decays": {"num": 3}}
    evaluations["invariance"].update(scale=[1, 2], shift=[0, 30], resolution=[224], max_images=4)
    evaluations["cka"].update(n_images=8, batch_size=4)
    # Per-dataset extraction jobs (so an added dataset is one new job per model, not a rerun of a
    # model's everything-job), with the study's datasets in one named group to keep the jobs few.
    config["extraction"].update(num_workers=0, group="dataset", groups={"base": [
        "imagenet_val", "pug_imagenet", "vtab"]})
    # cue_conflict split in 2 (extraction.split: part jobs and a merge job): 16 images, 2 shards of 8
    config["extraction"].update(split={"cue_conflict": 2}, batch_size=8, shard_size=8)
    return config


def with_labelled_folder(config: dict, root: Path) -> dict:
    """A labelled folder of one's own classes (6 classes, 3 photographs each) in transfer: its
    manifest, splits, probe and (CLIP) zero-shot jobs are audited too."""
    config["datasets"]["own"] = {"kind": "labelled_folder", "source": "manual", "root": str(root),
                                 "splits": {"train": 1, "val": 1, "k_shot": [1]}}
    config["evaluations"]["transfer"]["datasets"].append("own")
    config["extraction"]["groups"]["base"].append("own")
    return config


def make_download_archive(path: Path) -> Path:
    """A tiny cue-conflict-like tar.gz (two PNGs in the real layout) to be fetched from file://."""
    from PIL import Image

    src = path.parent / "cue-src"
    for name in ("airplane/airplane1-bicycle2.png", "bear/bear1-boat3.png"):
        (src / "cue-conflict" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (120, 30, 200)).save(src / "cue-conflict" / name)
    with tarfile.open(path, "w:gz") as tar:
        tar.add(src / "cue-conflict", arcname="cue-conflict")
    return path


def plan(configfile: Path, workdir: Path) -> SimpleNamespace:
    """Dry run: the jobs Snakemake would run (target-only rules such as `all` left out), as sorted
    (rule, wildcards) pairs, and the names of
    the workflow's rules with a `script:` directive (from the parsed workflow)."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import (ConfigSettings, DAGSettings, OutputSettings, Quietness,
                                          ResourceSettings, StorageSettings)

    cwd = os.getcwd()
    try:
        with SnakemakeApi(OutputSettings(quiet={Quietness.PROGRESS, Quietness.RULES})) as api:
            workflow = api.workflow(
                resource_settings=ResourceSettings(cores=2, resources={"gpu": 1}),
                config_settings=ConfigSettings(configfiles=[Path(configfile).resolve()]),
                storage_settings=StorageSettings(),
                snakefile=REPO / "Snakefile",
                workdir=Path(workdir),
            )
            dag = workflow.dag(dag_settings=DAGSettings())
            dag.execute_workflow(executor="dryrun")
            wf = dag.workflow_api._workflow
            planned = sorted((job.rule.name, tuple(sorted(job.wildcards_dict.items())), why(wf.dag.reason(job)))
                             for job in wf.dag.needrun_jobs() if not job.rule.norun)  # not `all`
            script_rules = sorted(rule.name for rule in wf.rules if rule.script)
            return SimpleNamespace(jobs=[(rule, dict(wc)) for rule, wc, _ in planned],
                                   reasons={(rule, wc): reason for rule, wc, reason in planned},
                                   script_rules=script_rules)
    finally:
        os.chdir(cwd)


def why(reason, width=300) -> str:
    """Snakemake's reasons for planning a job, briefly (with what changed in its params)."""
    text = "; ".join(reason.get_names())
    if reason.params_changed:
        change = reason.params_changed
        text += (f" (before: {', '.join(sorted(map(str, change.only_old)))[:width]}"
                 f" | now: {', '.join(sorted(map(str, change.only_new)))[:width]})")
    return text


def describe(jobs, reasons=None) -> str:
    lines = []
    for rule, wc in jobs:
        line = f"    {rule}" + (f"  {wc}" if wc else "")
        if reasons is not None:
            line += f"\n        because: {reasons[(rule, tuple(sorted(wc.items())))]}"
        lines.append(line)
    return "\n".join(lines) or "    (none)"


@pytest.fixture(scope="module")
def audited_study(tmp_path_factory):
    """The small study run to the end, every script job under the auditor; its audit records."""
    base = tmp_path_factory.mktemp("job_params")
    archive = make_download_archive(base / "cue-conflict.tar.gz")
    from beyond_imagenet.datasets.photos import write_own_class_folder

    config = with_labelled_folder(study_config(archive), write_own_class_folder(base / "own", copies=1))
    configfile = write_config(base / "study.yaml", config)
    workdir, records_dir = base / "work", base / "audit"
    workdir.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        # Script jobs are `<python> <tmp script>` in a shell that inherits this process's environment.
        mp.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(AUDITOR), os.environ.get("PYTHONPATH")])))
        mp.setenv(AUDIT_DIR_VAR, str(records_dir))
        mp.setenv(AUDIT_CONFIGFILES_VAR, os.pathsep.join([str(configfile.resolve()), str(REPO / "config.yaml")]))
        jobs = run_snakemake(configfile, workdir, targets=["all", f"results/manifests/{DOWNLOADED}.json",
                                                           f"resources/datasets/{ARCHIVED}"])
    records = [json.loads(p.read_text()) for p in sorted(records_dir.glob("*.json"))]
    return SimpleNamespace(config=config, configfile=configfile, workdir=workdir, jobs=jobs, records=records,
                           script_rules=plan(configfile, workdir).script_rules)


def records_by_rule(records) -> dict[str, list[dict]]:
    out = defaultdict(list)
    for record in records:
        out[record["rule"]].append(record)
    return dict(sorted(out.items()))


def job_name(record) -> str:
    wildcards = ", ".join(f"{k}={v}" for k, v in record["wildcards"].items())
    return f"{record['rule']}[{wildcards}]" if wildcards else record["rule"]


# ---------------------------------------------------------------------------- 1. the auditor
def test_every_script_rule_ran_under_the_auditor(audited_study):
    """The guards below see every script rule of the workflow, each job in this interpreter (no conda)."""
    by_rule = records_by_rule(audited_study.records)
    expected = sorted(set(audited_study.script_rules) - set(NOT_COVERED))
    assert sorted(set(NOT_COVERED) - set(audited_study.script_rules)) == [], "NOT_COVERED names no script rule"
    missing = sorted(set(expected) - set(by_rule))
    assert not missing, (f"script rules that ran no audited job in the study of {__name__}: {missing}\n"
                         f"jobs run: {dict(audited_study.jobs)}\naudited: {sorted(by_rule)}")
    extra = sorted(set(by_rule) - set(expected))
    assert not extra, f"audited rules that are not script rules of the workflow (or are in NOT_COVERED): {extra}"
    unrecorded = {r: (audited_study.jobs[r], len(by_rule.get(r, []))) for r in expected
                  if audited_study.jobs[r] != len(by_rule.get(r, []))}
    assert not unrecorded, f"rule: (jobs run, audit records) differ, so some job escaped the auditor: {unrecorded}"
    elsewhere = sorted({r["executable"] for r in audited_study.records} - {sys.executable})
    assert not elsewhere, f"script jobs ran in another interpreter (a conda env?) than {sys.executable}: {elsewhere}"
    conda = audited_study.workdir / ".snakemake" / "conda"
    assert not conda.is_dir() or not any(conda.iterdir()), f"conda environments were created: {sorted(conda.iterdir())}"


def test_no_script_job_reads_the_config(audited_study):
    """Each setting a job uses must be one of its params; `snakemake.config` reaches past them."""
    readers = {}
    for rule, records in records_by_rule(audited_study.records).items():
        reads = [r for r in records if r["config_reads"] or r["configfile_opens"]]
        if reads:
            first = reads[0]
            where = (first["config_reads"] or first["configfile_opens"])[0]["where"]
            readers[rule] = (f"{len(reads)}/{len(records)} jobs; config keys read: {first['config_keys_read']}"
                             + (f"; opened the config file {first['configfile_opens'][0]['path']}"
                                if first["configfile_opens"] else "")
                             + "\n        first read at: " + "\n                       ".join(where[:4]))
    if readers:
        pytest.fail("these rules' scripts read snakemake.config (a setting read there never reruns the job "
                    "when it changes; pass it as a param):\n"
                    + "\n".join(f"  {rule}: {text}" for rule, text in readers.items()))


def test_every_declared_param_is_read(audited_study):
    """A param the job does not read is a spurious rerun trigger."""
    unread = {}
    for rule, records in records_by_rule(audited_study.records).items():
        names = Counter(name for r in records for name in sorted(set(r["params_declared"]) - set(r["params_read"]))
                        if (rule, name) not in RERUN_TRIGGERS)
        if names:
            unread[rule] = {name: f"unread in {n}/{len(records)} jobs" for name, n in sorted(names.items())}
    if unread:
        pytest.fail("declared params that the job never reads (each one reruns the job for nothing):\n"
                    + "\n".join(f"  {rule}: {names}" for rule, names in unread.items()))


def test_every_key_of_a_dict_param_is_read(audited_study):
    """A dict param (e.g. a config section) reruns its job when any key changes: each must be used.

    First-level keys only (a key counts as read when the job looked it up, tested it with `in`, or
    handed out the whole dict: iterated it, `{**d}`, `json.dumps`, ...; see the auditor)."""
    unread = {}
    for rule, records in records_by_rule(audited_study.records).items():
        for record in records:
            for name, keys in record["dict_params"].items():
                if name not in record["params_read"]:
                    continue  # reported as an unread param
                missing = sorted(set(keys["declared_keys"]) - set(keys["read_keys"]))
                if missing:
                    unread.setdefault(f"{rule}: params.{name}", (job_name(record), missing))
    if unread:
        pytest.fail("keys of dict params that the job never reads (a change of any reruns the job for nothing), "
                    "with the first job seen:\n"
                    + "\n".join(f"  {param}  keys {missing}  ({job})" for param, (job, missing) in unread.items()))


# ------------------------------------------------------------- 2. adding a dataset to one evaluation
def add_to_cka(config):
    """The known-bad case: CKA of cue_conflict (a dataset of the study, its manifest already built)."""
    config["evaluations"]["cka"]["datasets"].append("cue_conflict")
    return "cue_conflict"


def add_to_calibration(config):
    """A new generated dataset (own manifest, extraction and links) for calibration only."""
    config["datasets"]["calib_extra"] = {"kind": "imagenet_v2", "source": "generate", "num_classes": 2,
                                         "images_per_class": 1, "seed": 3}
    config["evaluations"]["calibration"]["datasets"].append("calib_extra")
    return "calib_extra"


def add_to_shape_bias(config):
    """A second (new, generated) cue-conflict set for shape bias only."""
    config["datasets"]["cue_extra"] = {"kind": "cue_conflict", "source": "generate", "images_per_class": 1, "seed": 4}
    config["evaluations"]["shape_bias"]["datasets"].append("cue_extra")
    return "cue_extra"


def dataset_jobs(config, dataset):
    """Predicates of the jobs that make a (new) dataset's files: its folder, manifest, extraction and links."""
    study = Study(validate_config(copy.deepcopy(config)))
    groups = {study.group_of(m, dataset) for m in study.models}
    return {
        "generate_dataset": lambda wc: wc.get("dataset") == dataset,
        "build_manifest": lambda wc: wc.get("dataset") == dataset,
        "extract_outputs": lambda wc: wc.get("group") in groups,
    }


# evaluation -> (config change, allowed jobs besides the dataset's and the aggregates, required jobs)
SCENARIOS = {
    # The CKA pass over the dataset runs in the extraction job of the group that extracts it
    # (dataset_jobs: its extract_outputs jobs, which reuse their files), or of <dataset>@passes
    # where the dataset is split (Study.pass_plan).
    "cka": (add_to_cka,
            lambda d: {"extract_outputs": lambda wc: wc.get("group") == f"{d}@passes",
                       "compute_cka": lambda wc: wc.get("dataset") == d,
                       "plot_cka": lambda wc: True,  # (draws every CKA figure: one job per evaluation)
                       "compute_cka_summary": lambda wc: True},
            lambda d: [("extract_outputs", {}), ("compute_cka", {"dataset": d})]),
    "calibration": (add_to_calibration,
                    lambda d: {"compute_calibration": lambda wc: True, "plot_calibration": lambda wc: True},
                    lambda d: [("compute_calibration", {})]),
    "shape_bias": (add_to_shape_bias,
                   lambda d: {"compute_shape_bias": lambda wc: True, "plot_shape_bias": lambda wc: True},
                   lambda d: [("compute_shape_bias", {})]),
}


@pytest.mark.parametrize("evaluation", list(SCENARIOS))
def test_adding_a_dataset_to_one_evaluation_reruns_only_its_jobs(audited_study, evaluation, tmp_path):
    change, own_jobs, required = SCENARIOS[evaluation]
    workdir = tmp_path / "work"
    shutil.copytree(audited_study.workdir, workdir, symlinks=True)  # mtimes and .snakemake/ kept
    unchanged = plan(audited_study.configfile, workdir)
    if unchanged.jobs:
        pytest.fail(f"the copy of the finished study is not up to date; it plans:\n"
                    f"{describe(unchanged.jobs, unchanged.reasons)}")

    config = copy.deepcopy(audited_study.config)
    dataset = change(config)
    configfile = write_config(tmp_path / f"{evaluation}.yaml", config)
    result = plan(configfile, workdir)
    planned = result.jobs

    allowed = {**own_jobs(dataset), **{r: (lambda wc: True) for r in AGGREGATES}}
    for rule, allow in dataset_jobs(config, dataset).items():  # either's
        allowed[rule] = (lambda wc, a=allow, b=allowed.get(rule): a(wc) or (b is not None and b(wc)))
    spurious = [(rule, wc) for rule, wc in planned if not (rule in allowed and allowed[rule](wc))]
    listing = f"planned after adding {dataset} to evaluations.{evaluation}.datasets:\n{describe(planned)}"
    if spurious:
        pytest.fail(f"adding {dataset} to {evaluation} also reruns jobs it does not change (their params or "
                    f"inputs hold more than they use):\n{describe(spurious, result.reasons)}\n{listing}")
    for rule, wildcards in required(dataset):
        if not any(r == rule and all(wc.get(k) == v for k, v in wildcards.items()) for r, wc in planned):
            pytest.fail(f"{rule} {wildcards} is not planned: the change went unseen\n{listing}")

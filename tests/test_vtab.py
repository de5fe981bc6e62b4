"""VTAB-1k: reader, generator, manifest checks, study expansion, aggregation, figure, workflow DAG."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from beyond_imagenet.datasets import DatasetError, resolve_dataset
from beyond_imagenet.datasets.generate import generate
from beyond_imagenet.datasets.readers import read_samples
from beyond_imagenet.datasets.vtab import (EXTRACTED_SPLITS, SPLITS, TASKS, VtabSplitSpec, build_split_manifest,
                                           check_trainval_union, expand_dataset, read_split)
from beyond_imagenet.metrics.transfer import select_and_evaluate
from beyond_imagenet.study import ConfigError, Study, validate_config
from beyond_imagenet.evaluations.transfer import paper_means, probe_config, probe_vtab_task, transfer_rows

from conftest import REPO, default_config, write_config

TASK_SET = ["dtd", "eurosat", "clevr_count"]


def vtab_study(tmp_path, **entry) -> Study:
    config = default_config()
    config["resources_dir"] = str(tmp_path / "resources")
    config["datasets"] = {"vtab": {"kind": "vtab", "source": "generate", "tasks": TASK_SET, **entry}}
    config["evaluations"] = {"transfer": {"datasets": ["vtab"]}}
    return Study(validate_config(config))


@pytest.fixture
def generated(tmp_path) -> tuple[Study, Path]:
    study = vtab_study(tmp_path)
    out = tmp_path / "resources" / "generated" / "vtab"
    generate(study.datasets["vtab"], out)
    return study, out / "vtab-1k"


def write_task(task_dir: Path, lists: dict[str, list[tuple[str, int]]]) -> None:
    for split, samples in lists.items():
        for rel, _ in samples:
            (task_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            if not (task_dir / rel).exists():
                (task_dir / rel).write_bytes(rel.encode())
        (task_dir / f"{split}.txt").write_text("".join(f"{rel} {label}\n" for rel, label in samples))


def test_generator_writes_the_noah_layout(generated) -> None:
    study, root = generated
    assert sorted(p.name for p in root.iterdir()) == sorted(TASK_SET)
    for task in TASK_SET:
        for split in SPLITS:
            assert (root / task / f"{split}.txt").is_file()
            assert (root / task / "images" / split).is_dir()
        train = read_split(root / task, "train800")
        assert [rel for rel, _ in train][:2] == ["images/train800/000000.jpg", "images/train800/000001.jpg"]
        assert len(train) == 16 and len(read_split(root / task, "val200")) == 8
        assert len(read_split(root / task, "test")) == 16
        assert all(0 <= label < TASKS[task].n_classes for _, label in train)
        check_trainval_union(root / task)  # the generated train800val200 is the union


def test_labels_come_from_the_split_file(tmp_path) -> None:
    task_dir = tmp_path / "dtd"
    write_task(task_dir, {"test": [("images/test/000000.jpg", 46), ("images/test/000001.jpg", 3)]})
    assert read_split(task_dir, "test") == [("images/test/000000.jpg", 46), ("images/test/000001.jpg", 3)]
    assert read_samples("vtab_split:test", task_dir, "vtab") == read_split(task_dir, "test")


def test_missing_split_file_names_the_file(tmp_path) -> None:
    task_dir = tmp_path / "eurosat"
    write_task(task_dir, {"train800": [("images/train800/000000.jpg", 1)]})
    with pytest.raises(DatasetError, match=r"eurosat/val200\.txt does not exist"):
        read_split(task_dir, "val200")
    with pytest.raises(DatasetError, match="task folder .*svhn does not exist"):
        read_split(tmp_path / "svhn", "train800")


def test_bad_lines_and_missing_images_are_reported(tmp_path) -> None:
    task_dir = tmp_path / "dtd"
    task_dir.mkdir()
    (task_dir / "test.txt").write_text("images/test/000000.jpg\n")
    with pytest.raises(DatasetError, match=r"test\.txt:1: expected 'relative/path label'"):
        read_split(task_dir, "test")
    (task_dir / "test.txt").write_text("images/test/000000.jpg 2\n")
    with pytest.raises(DatasetError, match="1 listed image\\(s\\) missing .*images/test/000000.jpg"):
        read_split(task_dir, "test")


def test_trainval_must_be_train_then_val(tmp_path) -> None:
    task_dir = tmp_path / "dtd"
    train = [(f"images/train800/{i:06d}.jpg", i % 3) for i in range(4)]
    val = [(f"images/val200/{i:06d}.jpg", i % 2) for i in range(2)]
    # Union by path (some copies point train800val200.txt at the train800 / val200 images).
    write_task(task_dir, {"train800": train, "val200": val, "train800val200": train + val})
    check_trainval_union(task_dir)
    # Union by content: own copies, byte-identical (NOAH's layout).
    copies = [(f"images/train800val200/{i:06d}.jpg", label) for i, (_, label) in enumerate(train + val)]
    for (src, _), (dst, _) in zip(train + val, copies):
        (task_dir / dst).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(task_dir / src, task_dir / dst)
    write_task(task_dir, {"train800val200": copies})
    check_trainval_union(task_dir)
    # Wrong order, a changed label, a different image, a missing image: all refused.
    for bad in (val + train, train + [(val[0][0], 1), val[1]], train + val[:1]):
        write_task(task_dir, {"train800val200": bad})
        with pytest.raises(DatasetError, match="train800val200.txt is not train800.txt followed by val200.txt"):
            check_trainval_union(task_dir)
    (task_dir / copies[0][0]).write_bytes(b"something else")
    write_task(task_dir, {"train800val200": copies})
    with pytest.raises(DatasetError, match="line 1: image images/train800val200/000000.jpg differs"):
        check_trainval_union(task_dir)


def test_study_expands_vtab_into_task_splits(tmp_path) -> None:
    study = vtab_study(tmp_path)
    names = study.extraction_datasets("vtab")
    assert names == [f"vtab-{t}-{s}" for t in TASK_SET for s in EXTRACTED_SPLITS]
    assert "vtab-dtd-train800val200" not in study.datasets
    spec = study.datasets["vtab-eurosat-val200"]
    assert isinstance(spec, VtabSplitSpec) and spec.task == "eurosat" and spec.split == "val200"
    assert spec.root == tmp_path / "resources" / "generated" / "vtab" / "vtab-1k" / "eurosat"
    assert spec.reader == "vtab_split:val200" and spec.class_space == "vtab"
    assert study.extraction_targets() == sorted(study.output(m, n) for m in study.models for n in names)
    # Every name is a valid dataset wildcard value.
    assert all(__import__("re").fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", n) for n in names)


def test_config_errors_name_the_key(tmp_path) -> None:
    config = default_config()
    config["datasets"]["vtab"] = {"kind": "vtab", "source": "generate", "tasks": ["cifar10"]}
    with pytest.raises(ConfigError, match="datasets.vtab.tasks"):
        validate_config(config)
    config = default_config()
    config["datasets"]["imagenet_val"]["tasks"] = ["dtd"]
    with pytest.raises(ConfigError, match="datasets.imagenet_val.tasks: only datasets of kind 'vtab'"):
        validate_config(config)
    config = default_config()
    config["evaluations"]["calibration"]["datasets"] = ["vtab"]
    with pytest.raises(ConfigError, match="'vtab' \\(vtab, vtab\\) cannot be used for calibration"):
        validate_config(config)
    config = default_config()
    config["datasets"]["vtab-dtd-test"] = dict(config["datasets"]["imagenet_val"])
    with pytest.raises(ConfigError, match="clash"):
        validate_config(config)


def test_manifests_check_layout_and_union(generated) -> None:
    study, root = generated
    manifest = build_split_manifest(study.datasets["vtab-dtd-train800"])
    assert manifest["n_images"] == 16 and manifest["trainval_union_checked"]
    assert manifest["task"] == "dtd" and manifest["split"] == "train800" and manifest["n_classes"] == 47
    assert manifest["root"] == str((root / "dtd").resolve())
    (root / "eurosat" / "val200.txt").unlink()
    with pytest.raises(DatasetError, match=r"eurosat/val200\.txt does not exist"):
        build_split_manifest(study.datasets["vtab-eurosat-val200"])
    with pytest.raises(DatasetError, match=r"eurosat/val200\.txt does not exist"):
        build_split_manifest(study.datasets["vtab-eurosat-train800"])  # the union check reads it
    shutil.rmtree(root / "clevr_count")
    with pytest.raises(DatasetError, match="task folder .*clevr_count \\(Clevr-Count\\) does not exist"):
        build_split_manifest(study.datasets["vtab-clevr_count-test"])


def test_manual_copy_needs_800_and_200(tmp_path, generated) -> None:
    _, root = generated
    config = default_config()
    config["datasets"] = {"vtab": {"kind": "vtab", "source": "manual", "root": str(root), "tasks": ["dtd"]}}
    config["evaluations"] = {"transfer": {"datasets": ["vtab"]}}
    study = Study(validate_config(config))
    with pytest.raises(DatasetError, match="holds 16 files, expected 800"):
        build_split_manifest(study.datasets["vtab-dtd-train800"])
    config["datasets"]["vtab"]["root"] = str(tmp_path / "nowhere")
    study = Study(validate_config(config))
    with pytest.raises(DatasetError, match="datasets.vtab: VTAB folder .*nowhere does not exist.\n.*no official download"):
        build_split_manifest(study.datasets["vtab-dtd-test"])


def test_url_source_records_checksum_recipe() -> None:
    spec = resolve_dataset("vtab", {"kind": "vtab", "source": "download", "url": "https://example.org/vtab-1k.zip"})
    assert spec.download == {"url": "https://example.org/vtab-1k.zip"}  # no sha256: recorded at first download
    with pytest.raises(DatasetError, match="no download recipe"):
        resolve_dataset("vtab", {"kind": "vtab", "source": "download"})
    parent = expand_dataset(spec, {"kind": "vtab", "source": "download", "tasks": ["dtd"]})
    assert set(parent) == {"vtab", "vtab-dtd-train800", "vtab-dtd-val200", "vtab-dtd-test"}


def test_probe_uses_train_plus_val_for_trainval() -> None:
    rng = np.random.default_rng(0)
    means = rng.normal(size=(4, 16)) * 4

    def split(n):
        y = rng.integers(0, 4, n)
        return (means[y] + rng.normal(size=(n, 16))).astype(np.float16), y

    config = probe_config({"weight_decays": {"log10_min": -6, "log10_max": 2, "num": 9}})
    train, val, test = split(64), split(32), split(100)
    result = probe_vtab_task(train, val, test, 4, config)
    assert result["n_train"] == 64 and result["n_val"] == 32 and result["n_test"] == 100
    assert result["test_top1"] >= 0.95 and len(result["val_top1_per_wd"]) == 9
    trainval = (np.concatenate([train[0], val[0]]), np.concatenate([train[1], val[1]]))
    reference = select_and_evaluate(train, val, trainval, test, 4, config)
    assert result["test_top1"] == reference["test_top1"] and result["weight_decay"] == reference["weight_decay"]


def test_rows_group_means_and_paper_means() -> None:
    results = [{"model": "m", "dataset": "vtab", "task": t, "test_top1": v, "val_top1": 0.5, "weight_decay": 1e-3,
                "n_train": 800, "n_val": 200, "n_test": 10}
               for t, v in (("dtd", 0.6), ("cifar", 0.8), ("eurosat", 0.9), ("kitti", 0.3))]
    columns = {"m": {"model": "m", "label": "M", "family": "vit", "paradigm": "clip", "paper_key": ""}}
    table = pd.DataFrame(transfer_rows(results, columns))
    means = table[(table["task"] == "mean") & (table["metric"] == "test_top1")].set_index("group")["value"]
    assert means.to_dict() == pytest.approx({"natural": 0.7, "specialized": 0.9, "structured": 0.3, "all": 0.65})
    per_task = table[table["task"] == "dtd"].set_index("metric")["value"]
    assert per_task["test_top1"] == 0.6 and per_task["weight_decay"] == 1e-3 and per_task["n_train"] == 800
    assert table.loc[table["task"] == "cifar", "group"].iloc[0] == "natural"
    # The paper's means over all 19 reproduce its printed averages.
    from beyond_imagenet.paper_results import load_paper_results

    vtab = load_paper_results()["vtab"]
    for key, printed in vtab["average_19_printed"].items():
        assert round(paper_means(vtab["top1"][key], TASKS)["all"], 1) == printed


def test_figure_with_paper_numbers(tmp_path) -> None:
    from beyond_imagenet.paper_results import load_paper_results
    from beyond_imagenet.evaluations.transfer import plot_transfer

    results = [{"model": m, "dataset": "vtab", "task": t, "test_top1": 0.5 + 0.1 * i, "val_top1": 0.5,
                "weight_decay": 1e-3, "n_train": 800, "n_val": 200, "n_test": 10}
               for i, m in enumerate(("vit_sup", "vit_clip")) for t in TASKS]
    columns = {m: {"model": m, "label": m, "family": "vit", "paradigm": p, "paper_key": m}
               for m, p in (("vit_sup", "supervised"), ("vit_clip", "clip"))}
    table = pd.DataFrame(transfer_rows(results, columns))
    paths = [tmp_path / "t.png", tmp_path / "t.pdf"]
    plot_transfer(table, "vtab", paths, paper_top1=load_paper_results()["vtab"]["top1"])
    assert all(p.stat().st_size > 1000 for p in paths)


def test_default_study_extracts_each_task_split_once(tmp_path) -> None:
    """One output per (model, task, split in train800 / val200 / test), no train800val200, all of a
    model's splits written by one extract_outputs job (extraction.group: dataset)."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import (ConfigSettings, DAGSettings, OutputSettings, Quietness,
                                          ResourceSettings, StorageSettings)
    import os

    base = default_config()
    base["extraction"]["group"] = "dataset"
    config = write_config(tmp_path / "config.yaml", base)
    cwd = os.getcwd()
    try:
        with SnakemakeApi(OutputSettings(quiet={Quietness.PROGRESS, Quietness.RULES})) as api:
            workflow = api.workflow(
                resource_settings=ResourceSettings(cores=2, resources={"gpu": 1}),
                config_settings=ConfigSettings(configfiles=[config]),
                storage_settings=StorageSettings(), snakefile=REPO / "Snakefile", workdir=tmp_path)
            dag_api = workflow.dag(dag_settings=DAGSettings(targets={"results/metrics/transfer.csv",
                                                                     "results/figures/transfer_vtab.png"}))
            dag_api.execute_workflow(executor="dryrun")
            jobs = list(dag_api.workflow_api._workflow.dag.needrun_jobs())
    finally:
        os.chdir(cwd)
    extracted = Counter((j.wildcards["model"], i["dataset"]) for j in jobs if j.rule.name == "extract_outputs"
                        for i in j.params.cached)
    assert not any(j.rule.name == "link_output" for j in jobs)
    groups = Counter((j.wildcards["model"], j.wildcards["group"]) for j in jobs if j.rule.name == "extract_outputs")
    assert groups == {(m, "vtab"): 1 for m in base["models"]}
    study = Study(validate_config(default_config()))
    tasks = study.datasets["vtab"].tasks
    assert {TASKS[t].group for t in tasks} == {"natural", "specialized", "structured"}
    expected = {(m, f"vtab-{t}-{s}") for m in study.models for t in tasks for s in ("train800", "val200", "test")}
    assert set(extracted) == expected and set(extracted.values()) == {1}
    rules = Counter(j.rule.name for j in jobs)
    assert rules["probe_transfer"] == len(study.models)  # one job per (model, VTAB dataset) for all its tasks
    # one job writes every split manifest (one output each, what the extraction job reads)
    assert rules["build_vtab_manifest"] == 1 and rules["build_manifest"] == 0
    assert rules["compute_transfer"] == 1 and rules["plot_transfer"] == 1


def test_download_records_checksum_and_feeds_the_manifests(tmp_path, generated, monkeypatch) -> None:
    """url: a vtab-1k.zip (file://) -> download (sha256 recorded) -> unpack -> task split manifests."""
    import zipfile

    from conftest import run_snakemake

    _, root = generated
    archive = tmp_path / "mirror" / "vtab-1k.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted((root / "dtd").rglob("*")):
            zf.write(path, Path("vtab-1k") / path.relative_to(root))
    config = default_config()
    config["datasets"] = {"vtab": {"kind": "vtab", "source": "download", "url": archive.as_uri(), "tasks": ["dtd"]}}
    config["evaluations"] = {"transfer": {"datasets": ["vtab"]}}
    workdir = tmp_path / "work"
    workdir.mkdir()
    configfile = write_config(tmp_path / "config.yaml", config)
    targets = [f"results/manifests/vtab-dtd-{s}.json" for s in ("train800", "test")]
    # Generated-size splits are not a real copy (800 / 200 images): the train800 manifest refuses it,
    # and the one job that writes the dataset's split manifests writes none.
    with pytest.raises(Exception, match="did not complete"):
        run_snakemake(configfile, workdir, targets=targets[:1])
    record = workdir / "resources" / "downloads" / "vtab" / "vtab-1k.zip.sha256"
    assert record.is_file() and (workdir / "resources" / "datasets" / "vtab" / "vtab-1k" / "dtd" / "test.txt").is_file()
    assert not any((workdir / t).exists() for t in targets)  # (the message: test_manual_copy_needs_800_and_200)
    jobs = run_snakemake(configfile, workdir, targets=targets[1:], dryrun=True)
    assert jobs == Counter({"build_vtab_manifest": 1})
    with pytest.raises(Exception, match="did not complete"):
        run_snakemake(configfile, workdir, targets=targets[1:])
    log = (workdir / "results" / "logs" / "build_vtab_manifest.log").read_text()
    assert "already unpacked" in log  # downloaded and unpacked once, reused
    # The test split's manifest, as the job builds it from the unpacked copy.
    monkeypatch.chdir(workdir)
    manifest = build_split_manifest(Study(validate_config(config)).datasets["vtab-dtd-test"])
    assert manifest["n_images"] == 16 and list(manifest["samples"][0]) == ["images/test/000000.jpg", 0]

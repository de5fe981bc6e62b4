"""Robustness, ImageNet-X, shape bias and PUG through the workflow: they reuse the ImageNet val
extraction (one pass per model), and a tiny study produces the four tables and figures."""

from __future__ import annotations

import copy
from collections import Counter

import pandas as pd
import pytest

from beyond_imagenet.metrics.shape_bias import CATEGORIES
from conftest import REPO, default_config, dry_run_jobs, write_config

pytestmark = pytest.mark.workflow

NEW_EVALUATIONS = ("robustness", "imagenet_x", "shape_bias", "pug")


def extraction_counts(configfile) -> Counter:
    """Output files per (model, dataset, variant), standard ("") and variant extractions alike, over
    every extraction group of the study (Study.extraction_plan should put each file in exactly one)."""
    from beyond_imagenet.study import Study, load_config

    study = Study(load_config(configfile))
    return Counter((m, d, v or "") for m in study.models for items in study.extraction_plan(m).values()
                   for d, v in items)


def test_imagenet_val_is_extracted_once_per_model(tmp_path):
    config = default_config()
    jobs = dry_run_jobs(write_config(tmp_path / "default.yaml", config), tmp_path / "a")
    counts = extraction_counts(tmp_path / "default.yaml")
    models = set(config["models"])
    datasets = {d for name in NEW_EVALUATIONS for d in config["evaluations"][name]["datasets"]}
    assert {(m, d, "") for m in models for d in datasets} <= set(counts)
    assert set(counts.values()) == {1}  # one pass per (model, dataset, variant), whatever reads it
    # ImageNet-X and ReaL read the val outputs: without the new evaluations val extraction is the same.
    without = copy.deepcopy(config)
    for name in NEW_EVALUATIONS:
        without["evaluations"].pop(name)
    counts_without = extraction_counts(write_config(tmp_path / "without.yaml", without))
    val = lambda c: sorted(k for k, n in c.items() for _ in range(n) if k[1] == "imagenet_val")  # noqa: E731
    assert val(counts) == val(counts_without)
    assert Counter(r for r, _ in jobs)["compute_robustness"] == 1


def test_paper_study_downloads_every_file_of_multi_file_sets(tmp_path):
    """One fetch_dataset job per downloaded dataset downloads every file of its recipe (ImageNet-C's
    four tars), unpacks them and writes the manifest."""
    from beyond_imagenet.study import Study, load_config

    jobs = dry_run_jobs(REPO / "studies" / "paper.yaml", tmp_path)
    fetched = {w["dataset"] for rule, w in jobs if rule == "fetch_dataset"}
    assert {"imagenet_c", "imagenet_hard"} <= fetched and "download_dataset" not in {r for r, _ in jobs}
    spec = Study(load_config(REPO / "studies" / "paper.yaml")).datasets["imagenet_c"]
    assert {p.name for p in spec.archive_paths} == {"noise.tar", "blur.tar", "weather.tar", "digital.tar"}


def test_default_study_produces_the_four_tables_and_figures(default_study):
    """The default study (its session-wide run): robustness, ImageNet-X, shape bias and PUG."""
    workdir, _ = default_study
    results = workdir / "results"
    config = default_config()
    models = set(config["models"])
    # One output per (model, dataset); ImageNet-X and ReaL read imagenet_val's.
    for model in models:
        stems = {p.stem for p in (results / "extracted" / model).glob("*.h5") if "@" not in p.stem}
        assert {d for name in NEW_EVALUATIONS for d in config["evaluations"][name]["datasets"]} <= stems
    tables = {name: pd.read_csv(results / "metrics" / f"{name}.csv") for name in NEW_EVALUATIONS}
    for table in tables.values():
        assert {"model", "label", "family", "paradigm", "paper_key", "metric", "value"} <= set(table.columns)
        assert set(table["model"]) == models

    robustness = tables["robustness"]
    top1 = robustness[(robustness["metric"] == "top1") & robustness["corruption"].isna()]
    assert set(top1["benchmark"]) == {"imagenet_val", "imagenet_v2", "imagenet_r", "imagenet_c", "imagenet_hard",
                                      "imagenet_real", "average"}
    assert top1["value"].dropna().between(0, 1).all()
    assert (robustness[robustness["metric"] == "mCE"]["value"] > 0).all()
    per_condition = robustness[(robustness["benchmark"] == "imagenet_c") & robustness["severity"].notna()]
    assert len(per_condition) == 75 * len(models)
    n_avg = robustness[(robustness["benchmark"] == "average") & (robustness["metric"] == "n_benchmarks")]
    assert set(n_avg["value"]) == {5}  # V2, R, C, Hard, ReaL

    imagenet_x = tables["imagenet_x"]
    ratios = imagenet_x[imagenet_x["metric"] == "error_ratio"]
    assert len(ratios) == 17 * len(models)
    assert ratios["value"].isna().any()  # 38 images leave some factors without an image: NaN, not 0

    shape = tables["shape_bias"]
    overall = shape[shape["category"].isna()].set_index(["model", "metric"])["value"]
    assert all(overall[(m, "n_images_all")] == 32 and 0 <= overall[(m, "accuracy_16")] <= 1 for m in models)
    assert set(shape["category"].dropna()) <= set(CATEGORIES)

    pug = tables["pug"]
    assert set(pug["rule"]) == {"membership"}
    assert len(pug[(pug["metric"] == "top1")]) == 11 * len(models)  # 10 subsets + Average

    for figure in ("robustness", "imagenet_x_imagenet_val", "shape_bias_cue_conflict", "pug_pug_imagenet"):
        for ext in ("png", "pdf"):
            assert (results / "figures" / f"{figure}.{ext}").stat().st_size > 1000

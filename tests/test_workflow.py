"""The workflow through Snakemake's Python API: lint, DAGs, a rejected config, the default study end to end."""

import copy

import pandas as pd
import pytest

from conftest import REPO, default_config, lint_workflow, run_snakemake, write_config

pytestmark = pytest.mark.workflow


def test_lint_is_clean():
    assert lint_workflow(REPO / "config.yaml") is False


def test_paper_study_dry_run_lists_downloads_extractions_metrics_figures(tmp_path):
    jobs = run_snakemake(REPO / "studies" / "paper.yaml", tmp_path, dryrun=True)
    # One job per downloaded dataset (download, unpack, manifest); ImageNet val is a manual folder.
    assert jobs["fetch_dataset"] == 8 and jobs["build_manifest"] == 1 and "unpack_dataset" not in jobs
    # No job of its own for a CLIP model's zero-shot head: its extraction jobs build it (heads.py)
    assert "build_zero_shot_head" not in jobs
    # 4 models x the datasets of the calibration study, one pass each.
    assert jobs["extract_outputs"] >= 8
    assert jobs["compute_calibration"] == 1 and jobs["compute_accuracy"] == 1
    assert jobs["plot_calibration"] == 1  # its 4 figures (reliability and confidence, 2 datasets)


def test_paper_study_without_imagenet_stops_before_any_job(tmp_path):
    with pytest.raises(Exception) as err:
        run_snakemake(REPO / "studies" / "paper.yaml", tmp_path)
    text = str(err.value)
    assert "ILSVRC2012_img_val.tar" in text and "no job was started" in text
    assert not (tmp_path / "results" / "paper" / "extracted").exists()


def test_bad_config_is_rejected_before_any_job(tmp_path):
    config = default_config()
    config["extraction"]["batch_sise"] = 64
    with pytest.raises(Exception) as err:
        run_snakemake(write_config(tmp_path / "bad.yaml", config), tmp_path)
    assert "batch_sise" in str(err.value)
    assert not (tmp_path / "results").exists()


def test_default_study_end_to_end(default_study):
    workdir, jobs = default_study
    results = workdir / "results"
    accuracy = pd.read_csv(results / "metrics" / "accuracy.csv")
    calibration = pd.read_csv(results / "metrics" / "calibration.csv")
    models = set(default_config()["models"])
    assert set(accuracy["model"]) == models
    assert set(calibration["model"]) == models and set(calibration["dataset"]) == {"imagenet_val", "imagenet_r"}
    ece = calibration[calibration["metric"] == "ece"]["value"]
    assert len(ece) == 2 * len(models) and ece.between(0, 1).all()
    for kind in ("reliability", "confidence"):
        for dataset in ("imagenet_val", "imagenet_r"):
            for ext in ("png", "pdf"):
                assert (results / "figures" / f"{kind}_{dataset}.{ext}").stat().st_size > 1000
    # extraction.group: model: one extraction job per model writes all its outputs (issue 14)
    assert jobs["extract_outputs"] == len(models)
    assert "link_output" not in jobs and len(list((results / "extracted").glob("*/*.h5"))) > len(models)


def test_changing_bins_reruns_only_calibration(default_study, tmp_path):
    workdir, _ = default_study
    config = default_config()
    config["evaluations"]["calibration"]["n_bins"] = 10
    jobs = run_snakemake(write_config(tmp_path / "bins.yaml", config), workdir, dryrun=True)
    # The calibration table, its figures, and the study-wide profile and comparisons; no extraction.
    assert set(jobs) == {"compute_calibration", "plot_calibration", "compute_profile",
                         "plot_profile", "compute_comparisons", "plot_comparisons", "compute_across_models",
                         "plot_across_models", "plot_vs_imagenet", "results_page", "all"}


def test_relabelling_a_model_redraws_tables_and_figures_only(default_study, tmp_path):
    workdir, _ = default_study
    config = default_config()
    config["models"]["vit_sup"]["label"] = "my ViT"
    jobs = run_snakemake(write_config(tmp_path / "label.yaml", config), workdir, dryrun=True)
    assert "compute_calibration" in jobs and "plot_calibration" in jobs and "compute_profile" in jobs
    assert not {"extract_outputs", "probe_transfer", "compute_cka"} & set(jobs)


def test_single_figure_target(default_study):
    workdir, _ = default_study
    target = "results/figures/reliability_imagenet_r.png"  # relative to the working directory
    assert (workdir / target).exists()
    jobs = run_snakemake(REPO / "config.yaml", workdir, targets=[target], dryrun=True,
                         forcerun=["plot_calibration"])
    assert set(jobs) == {"plot_calibration"}


def test_a_deleted_figure_is_redrawn_by_its_path_alone(default_study, tmp_path):
    """Every figure file is an output of its evaluation's plot job: asking for one by its path
    redraws it (with its evaluation's other figures), and nothing else runs."""
    import shutil

    copy_dir = tmp_path / "study"
    shutil.copytree(default_study[0], copy_dir, symlinks=True)
    target = copy_dir / "results" / "figures" / "confidence_imagenet_val.pdf"
    table = (copy_dir / "results" / "metrics" / "calibration.csv").read_bytes()
    target.unlink()
    jobs = run_snakemake(REPO / "config.yaml", copy_dir, targets=[str(target.relative_to(copy_dir))])
    assert set(jobs) == {"plot_calibration"} and target.stat().st_size > 1000
    assert (copy_dir / "results" / "metrics" / "calibration.csv").read_bytes() == table


def test_report_contains_the_figures(default_study):
    import subprocess
    import sys
    import zipfile

    workdir, _ = default_study
    report = workdir / "report.zip"
    subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory",
                    str(workdir), "--configfile", str(REPO / "config.yaml"), "--report", str(report)],
                   check=True, capture_output=True)
    names = zipfile.ZipFile(report).namelist()
    assert any(n.endswith("reliability_imagenet_val.png") for n in names)
    assert any(n.endswith("confidence_imagenet_r.png") for n in names)


def test_a_changed_manual_folder_rebuilds_its_manifest(tiny_config, tmp_path):
    """Snakemake tracks no input for a folder the user provides: its listing is a params value.
    A manual cue-conflict folder (all 1,280 names, tiny images: the manifest only lists them)."""
    import json
    import time

    from PIL import Image

    from beyond_imagenet.metrics.shape_bias import CATEGORIES

    root = tmp_path / "cue-conflict"
    for k, shape in enumerate(CATEGORIES):
        (root / shape).mkdir(parents=True)
        for i in range(80):
            texture = CATEGORIES[(k + i) % len(CATEGORIES)]
            Image.new("RGB", (4, 4)).save(root / shape / f"{shape}{i + 1}-{texture}{i % 10 + 1}.png")
    config = copy.deepcopy(tiny_config)
    config["datasets"]["cue_conflict"] = {"kind": "cue_conflict", "source": "manual", "root": str(root)}
    configfile = write_config(tmp_path / "manual.yaml", config)
    manifest = "results/manifests/cue_conflict.json"
    workdir = tmp_path / "run"
    assert run_snakemake(configfile, workdir, targets=[manifest]) == {"build_manifest": 1}
    assert run_snakemake(configfile, workdir, targets=[manifest], dryrun=True) == {}  # unchanged: nothing
    time.sleep(0.01)
    old = sorted((root / "dog").iterdir())[0]
    new = old.with_name("dog81-" + old.name.split("-", 1)[1])  # a file replaced by another
    old.rename(new)
    assert run_snakemake(configfile, workdir, targets=[manifest]) == {"build_manifest": 1}
    samples = [s for s, _ in json.loads((workdir / manifest).read_text())["samples"]]
    assert len(samples) == 1280 and f"dog/{new.name}" in samples and f"dog/{old.name}" not in samples


def test_two_runs_of_the_default_study_are_byte_identical(default_study, default_study_again):
    """Determinism on CPU: every metric table, probe result, cached output, head and figure of two
    independent runs (fresh generated data, fresh extraction) is the same file, byte for byte."""
    first, _ = default_study

    def products(workdir):
        results = workdir / "results"
        return {p.relative_to(results).as_posix(): p.read_bytes()
                for folder in ("metrics", "probes", "extracted", "heads", "figures")
                for p in sorted((results / folder).rglob("*"))
                if p.is_file() and (folder != "extracted" or p.suffix == ".h5")}  # markers record times

    a, b = products(first), products(default_study_again)
    assert sorted(a) == sorted(b)
    assert {name.split("/")[0] for name in a} == {"metrics", "probes", "extracted", "heads", "figures"}
    assert len([n for n in a if n.startswith("metrics/") and n.endswith(".csv")]) >= 10
    assert [name for name in a if a[name] != b[name]] == []


def test_default_study_real_model_behaves_like_a_real_one(default_study):
    """Issue 11: the default study's real model (EfficientNet-Lite0, real weights) on the real
    photographs is far above chance, loses accuracy with ImageNet-C severity and probability of the
    true class at the larger scale and shift, and its reliability diagram has bars in more than one
    bin; the random models say so in their labels (figures and profile are drawn from them)."""
    workdir, _ = default_study
    metrics = workdir / "results" / "metrics"
    read = lambda name: pd.read_csv(metrics / f"{name}.csv", keep_default_na=False, na_values=[""])  # noqa: E731
    accuracy = read("accuracy").query("model == 'effnet_lite0' and metric == 'top1'")
    assert accuracy["value"].item() > 0.5  # chance is 0.001
    robustness = read("robustness").query("model == 'effnet_lite0' and benchmark == 'imagenet_c' and metric == 'top1'")
    by_severity = robustness.dropna(subset=["severity"]).groupby("severity")["value"].mean()
    assert by_severity[5] < by_severity[1]
    invariance = read("invariance").query("model == 'effnet_lite0' and metric == 'true_class_prob'").set_index("variant")
    assert invariance.loc["scale-3", "value"] < invariance.loc["scale-1", "value"]
    assert invariance.loc["shift-150", "value"] < invariance.loc["shift-0", "value"]
    bins = read("calibration").query("model == 'effnet_lite0' and dataset == 'imagenet_val' and metric == 'bin_count'")
    assert (bins["value"] > 0).sum() >= 2
    labels = dict(zip(accuracy["model"], accuracy["label"])) | dict(
        zip(read("accuracy")["model"], read("accuracy")["label"]))
    assert all(("random weights" in label) == (not model.startswith("effnet_lite")) for model, label in labels.items())
    assert {m for m in labels if m.startswith("effnet_lite")} == {"effnet_lite0", "effnet_lite1", "effnet_lite2"}
    # Issue 25: with the three real models the study has enough distinct ImageNet top-1s for the
    # logit-linear fit, so effective robustness is reported (every model, every shifted benchmark).
    gains = read("robustness").query("metric == 'effective_robustness'")
    assert set(gains["model"]) == set(labels) and "imagenet_v2" in set(gains["benchmark"])

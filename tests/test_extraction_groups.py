"""Extraction groups (issue 14): one job per (model, group) writing the same per-dataset files.

Guards: the paper study plans one VTAB extraction job per model (not one per split); grouped and
per-dataset jobs write byte-identical files; a group rerun after one dataset changed recomputes
only that dataset (the others are reused from results/extracted/); bad group configs are refused.
"""

import copy
import os

import h5py
import pytest
from conftest import REPO, default_config, run_snakemake, write_config
from test_extract import TinyNet, make_images, run

from beyond_imagenet.evaluations.invariance import (
    is_standard_variant,
    study_variant_names,
)
from beyond_imagenet.study import ConfigError, Study, validate_config


# --------------------------------------------------------------------------------- planning
def test_paper_study_plans_one_vtab_extraction_job_per_model():
    """Without the fusion the paper study planned 228 VTAB extraction jobs (4 models x 57 splits)."""
    import yaml

    config = validate_config(yaml.safe_load((REPO / "studies" / "paper.yaml").read_text()))
    study = Study(config)
    for model in study.models:
        plan = study.extraction_plan(model)
        vtab = [d for d, v in plan["vtab"]]
        assert len(vtab) == 57 and all(d.startswith("vtab-") for d in vtab)
        # every planned output is written by exactly one group
        items = [item for group in plan.values() for item in group]
        assert len(items) == len(set(items))
        assert {study.output(model, d) for d, v in items if v is None} == \
            {p for p in study.extraction_targets() if f"/{model}/" in p}


def test_model_grouping_puts_everything_of_a_model_in_one_job():
    config = validate_config(default_config())
    study = Study(config)
    for model in study.models:
        plan = study.extraction_plan(model)
        assert list(plan) == ["all"]
        variants = {v for _, v in plan["all"] if v}
        expected = {v for v in study_variant_names(study) if not is_standard_variant(study, model, v, "imagenet_val")}
        assert variants == expected and variants


def test_named_groups_and_dataset_grouping():
    config = default_config()
    config["extraction"]["group"] = "dataset"
    config["extraction"]["groups"] = {"small": ["imagenet_v2", "imagenet_hard"]}
    study = Study(validate_config(config))
    plan = study.extraction_plan("vit_sup")
    assert plan["small"] == [("imagenet_v2", None), ("imagenet_hard", None)]
    assert plan["imagenet_r"] == [("imagenet_r", None)]
    assert len(plan["vtab"]) == 9 and "imagenet_val@variants" in plan
    assert study.group_of("vit_sup", "imagenet_hard") == "small"
    assert study.group_of("vit_sup", "imagenet_val", "scale-3") == "imagenet_val@variants"
    assert study.group_of("vit_sup", "imagenet_val", "scale-1") is None  # the standard file


@pytest.mark.parametrize("groups, message", [
    ({"g": ["nope"]}, "extraction.groups.g: unknown dataset 'nope'"),
    ({"g": ["imagenet_r"], "h": ["imagenet_r"]}, "'imagenet_r' is already in group 'g'"),
    ({"imagenet_r": ["imagenet_v2"]}, "extraction.groups.imagenet_r: a group may not be named like a dataset"),
])
def test_bad_groups_are_refused_naming_the_key(groups, message):
    config = default_config()
    config["extraction"]["groups"] = groups
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        validate_config(config)


# ------------------------------------------------------------------------- reuse and linking
def test_extract_reuses_a_file_only_under_the_same_key(tmp_path):
    """A group rerun must not recompute a still-valid file, and must recompute a stale one."""
    samples = make_images(tmp_path / "data", n=8)
    out = tmp_path / "x" / "toy.h5"
    first: dict = {}
    run(tmp_path / "data", samples, out, reuse=True, timings=first)
    assert "first_batch" in first and (tmp_path / "x" / "toy.h5.key").is_file()
    before = out.read_bytes()
    again: dict = {}
    net = TinyNet()
    run(tmp_path / "data", samples, out, net=net, reuse=True, timings=again)
    assert "first_batch" not in again and net.calls == 0 and out.read_bytes() == before
    # another image list (or batch size, dtype, bad-image policy...) is another key: recomputed
    changed: dict = {}
    run(tmp_path / "data", samples[:6], out, reuse=True, timings=changed)
    assert "first_batch" in changed
    with h5py.File(out) as f:
        assert f["logits"].shape[0] == 6
    policy: dict = {}
    run(tmp_path / "data", samples[:6], out, reuse=True, timings=policy, on_bad_image="skip")
    assert "first_batch" in policy


# ------------------------------------------------------------------------------ end to end
def _small(config, group):
    config = copy.deepcopy(config)
    config["extraction"]["group"] = group
    config["evaluations"] = {k: config["evaluations"][k] for k in ("calibration", "robustness", "invariance")}
    config["evaluations"]["robustness"]["datasets"] = ["imagenet_val", "imagenet_v2"]
    # the second image of a class is a seeded augmented copy of its photograph: a new seed changes
    # its pixels but not the file names (the first image is the photograph itself, seed-independent)
    config["datasets"]["imagenet_v2"]["images_per_class"] = 2
    config["evaluations"]["invariance"].update(scale=[1, 2], shift=[], resolution=[224], max_images=4)
    return config


def _targets(config):
    """Every extraction job's marker in the small study (no metric or figure: only extraction is
    under test; the files themselves are no Snakemake outputs)."""
    study = Study(validate_config(copy.deepcopy(config)))
    return [os.path.relpath(p, ".") for p in study.all_markers()]


def _outputs(workdir):
    return {p.relative_to(workdir / "results").as_posix(): p.read_bytes()
            for p in sorted((workdir / "results" / "extracted").glob("*/*.h5"))}


@pytest.mark.workflow
def test_grouped_jobs_write_the_per_dataset_files_and_rerun_only_what_changed(tiny_config, tmp_path):
    """`group: model` (one job per model) and `group: dataset` (one per dataset) write byte-identical
    outputs; after one dataset changes, the rerun of the group recomputes only that dataset."""
    per_model = write_config(tmp_path / "model.yaml", _small(tiny_config, "model"))
    per_dataset = write_config(tmp_path / "dataset.yaml", _small(tiny_config, "dataset"))
    targets = _targets(_small(tiny_config, "model"))
    jobs = run_snakemake(per_model, tmp_path / "a", targets=targets)
    assert jobs["extract_outputs"] == 2  # 2 models x group "all"
    assert "link_output" not in jobs
    jobs = run_snakemake(per_dataset, tmp_path / "b", targets=_targets(_small(tiny_config, "dataset")))
    assert jobs["extract_outputs"] == 2 * 4  # 3 datasets + imagenet_val@variants per model
    a, b = _outputs(tmp_path / "a"), _outputs(tmp_path / "b")
    # per model 3 datasets and scale 2; the CLIP model's scale 1 too (the authors' CropScale resizes
    # bilinearly, its standard transform bicubically: not the standard evaluation)
    assert len(a) == 9 and sorted(a) == sorted(b)
    assert [name for name in a if a[name] != b[name]] == []

    # One dataset changes (its generated pixels, same file names): one extraction job per model
    # reruns, and it recomputes imagenet_v2 only; the others are reused byte for byte.
    changed = _small(tiny_config, "model")
    changed["datasets"]["imagenet_v2"]["seed"] = 12
    jobs = run_snakemake(write_config(tmp_path / "changed.yaml", changed), tmp_path / "a", targets=targets)
    assert jobs["extract_outputs"] == 2
    after = _outputs(tmp_path / "a")
    assert [n for n in a if a[n] != after[n]] == [n for n in a if n.endswith("/imagenet_v2.h5")]
    for model in changed["models"]:
        log = (tmp_path / "a/results/logs/extract_outputs" / model / "all.log").read_text()
        reused = sum(name.startswith(f"extracted/{model}/") for name in a) - 1  # all but imagenet_v2
        assert log.count("reusing ") == reused, log
        assert '"computed": 1' in log and f'"reused": {reused}' in log


@pytest.mark.workflow
def test_paper_study_dry_run_has_one_vtab_extraction_job_per_model(tmp_path):
    """The paper study's DAG (no data needed): 4 VTAB extraction jobs (not 228), one output per split."""
    from conftest import dry_run_jobs

    jobs = dry_run_jobs(REPO / "studies" / "paper.yaml", tmp_path)
    groups = [(w["model"], w["group"]) for rule, w in jobs if rule == "extract_outputs"]
    assert len(groups) == len(set(groups))
    vtab = [g for g in groups if g[1] == "vtab"]
    assert len(vtab) == 4
    assert "link_output" not in {rule for rule, _ in jobs}
    # one probe job per (model, VTAB dataset) fits its 19 tasks
    assert sorted(w["model"] for rule, w in jobs if rule == "probe_transfer") == sorted({m for m, _ in groups})

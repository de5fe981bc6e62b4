"""Features-only models (IN-21k-only, self-supervised weights: no ImageNet-1k classifier) take part in the
feature evaluations (transfer, cka) and are left out of the logit ones; invariance below 112 px; the
reviewers' study (studies/reviewers.yaml) plans accordingly."""

from __future__ import annotations

import copy
import logging
from collections import Counter

import h5py
import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO, default_config, dry_run_jobs, run_snakemake, write_config

from beyond_imagenet.evaluations import EVALUATIONS
from beyond_imagenet.evaluations.invariance.variants import Variant, build_variant_model
from beyond_imagenet.models import ModelSpec, build_model
from beyond_imagenet.study import ConfigError, Study, load_config, validate_config

LOGIT_EVALUATIONS = sorted(n for n, r in EVALUATIONS.items() if r.reads == "logits")
FEATURES_ONLY = {"source": "timm", "name": "vit_tiny_patch16_224", "pretrained": False, "features_only": True,
                 "family": "vit", "paradigm": "self_supervised", "label": "ViT-Ti/16 (features only)"}


# --- the model --------------------------------------------------------------------------------

def test_features_only_models_return_empty_logits_and_features():
    timm_spec = ModelSpec.from_config("fo", FEATURES_ONLY)
    assert not timm_spec.needs_zero_shot_head
    clip_spec = ModelSpec.from_config("fo_clip", {"source": "open_clip", "name": "tiny-vit-clip", "pretrained": False,
                                                  "features_only": True})
    assert not clip_spec.needs_zero_shot_head  # no zero-shot head is built for it
    for spec, dim in ((timm_spec, 192), (clip_spec, 128)):
        loaded = build_model(spec, "paper")  # no head needed
        with torch.no_grad():
            logits, features = loaded.network(torch.randn(2, 3, 224, 224))
        assert logits.shape == (2, 0) and features.shape == (2, dim)
    # timm: built without a classifier (an IN-21k head of 21,843 classes is not an error then).
    assert loaded.spec is clip_spec and build_model(timm_spec).network.model.num_classes == 0


def test_dinov2_runs_at_224_under_the_paper_protocol():
    """timm's DINOv2 is built for 518 px; the paper protocol's 224-px crops resample its position embedding."""
    spec = ModelSpec.from_config("dino", {"source": "timm", "name": "vit_small_patch14_dinov2", "pretrained": False,
                                          "features_only": True})
    loaded = build_model(spec, "paper")
    assert loaded.network.model.pos_embed.shape[1] == 16 * 16 + loaded.network.model.num_prefix_tokens
    with torch.no_grad():
        logits, features = loaded.network(loaded.transform(_photo())[None])
    assert logits.shape == (1, 0) and features.shape == (1, 384)


def _photo():
    from PIL import Image

    return Image.new("RGB", (300, 240), (120, 80, 40))


def test_a_21k_head_without_features_only_is_refused_with_the_fix():
    from beyond_imagenet.models import ModelError

    spec = ModelSpec.from_config("in21k", {"source": "timm", "name": "vit_tiny_patch16_224", "pretrained": False})
    spec = ModelSpec(**{**spec.__dict__, "arch": "vit_tiny_patch16_224.augreg_in21k"})
    with pytest.raises(ModelError, match="features_only: true"):
        build_model(spec)


# --- the study ------------------------------------------------------------------------------------

def _study_config(**extra_models):
    config = default_config()
    config["models"] = {k: v for k, v in config["models"].items() if k in ("vit_sup", "vit_clip")}
    config["models"].update(extra_models)
    return config


def test_left_out_of_every_logit_evaluation_with_one_warning(caplog):
    config = _study_config(fo=dict(FEATURES_ONLY))
    with caplog.at_level(logging.WARNING, logger="beyond_imagenet.study"):
        validate_config(config)
    notes = [r.getMessage() for r in caplog.records if "features_only" in r.getMessage()]
    assert len(notes) == 1 and notes[0].startswith("models.fo: features_only; left out of accuracy, calibration")
    assert "(they need ImageNet-1k logits); it takes part in transfer, cka" in notes[0]
    study = Study(config)
    for evaluation in study.evaluations:
        expected = ["vit_sup", "vit_clip"] + ([] if evaluation in LOGIT_EVALUATIONS else ["fo"])
        assert study.evaluation_models(evaluation) == expected, evaluation
    assert study.model_evaluations("fo") == ["transfer", "cka"]
    # Only the VTAB task splits are extracted for it: every other dataset is read by logit evaluations
    # only (imagenet_val also by cka, which runs its own pass); no invariance variant.
    plan = study.extraction_plan("fo")
    assert list(plan) == ["all"] and {d for d, _ in plan["all"]} == set(study.extraction_datasets("vtab"))
    assert all(v is None for _, v in plan["all"])
    assert not any("/fo/" in p for p in study.extraction_targets() if "vtab" not in p)
    assert study.model_identity("fo")["features_only"] is True
    assert "features_only" not in study.model_identity("vit_sup")  # the other models' cache keys unchanged
    from beyond_imagenet.evaluations.cka import pairs
    from beyond_imagenet.evaluations.invariance import items

    assert any("fo" in pair for pair in pairs(study))
    assert not any(i["model"] == "fo" for i in items(study))


def test_a_features_only_open_clip_model_needs_no_head():
    config = _study_config(fo_clip={"source": "open_clip", "name": "tiny-vit-clip", "pretrained": False,
                                    "features_only": True})
    study = Study(validate_config(config))
    assert not study.models["fo_clip"].needs_zero_shot_head
    assert "zero_shot_templates" not in study.head_identity("fo_clip")


# --- invariance below 112 px --------------------------------------------------------------------

@pytest.mark.parametrize("model", ["convnet_sup", "vit_sup", "convnet_clip", "vit_clip"])
@pytest.mark.parametrize("size", [56, 28])
def test_variant_models_at_56_and_28_px(model, size):
    spec = ModelSpec.from_config(model, default_config()["models"][model])
    head = torch.zeros(128, 1000) if spec.needs_zero_shot_head else None
    if spec.family == "convnet" and size == 28:
        pytest.skip("ConvNeXt's total stride is 32: refused at validation (test below)")
    loaded = build_variant_model(spec, Variant.parse(f"res-{size}"), "paper", head=head)
    x = loaded.transform(_photo())
    assert x.shape == (3, size, size)
    with torch.no_grad():
        logits, _ = loaded.network(x[None])
    assert logits.shape == (1, 1000) and torch.isfinite(logits).all()


def test_levels_a_convnet_cannot_run_at_are_refused_naming_model_and_level():
    config = default_config()
    config["evaluations"]["invariance"]["resolution"] = [28, 56, 224]
    with pytest.raises(ConfigError) as err:
        validate_config(copy.deepcopy(config))
    message = str(err.value)
    for name in ("convnet_sup", "convnet_clip"):  # timm convnext_atto, and as an open_clip timm trunk
        assert f"models.{name} " in message
    assert "at 28 px" in message and "56 px" not in message
    assert "models.vit_sup" not in message and "models.vit_clip" not in message
    config["evaluations"]["invariance"]["resolution"] = [56, 224]
    validate_config(config)
    config["evaluations"]["invariance"]["resolution"] = [8]
    with pytest.raises(ConfigError, match="resolution"):
        validate_config(config)  # the schema's minimum (16)


def test_paper_study_has_levels_below_112_and_28_is_refused_for_its_convnexts():
    config = load_config(REPO / "studies" / "paper.yaml")
    assert {32, 56} <= set(config["evaluations"]["invariance"]["resolution"])
    config = yaml.safe_load((REPO / "studies" / "paper.yaml").read_text())
    config["evaluations"]["invariance"]["resolution"] = [28, 224]
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    assert "models.convnext_sup" in str(err.value) and "models.convnext_clip" in str(err.value)
    assert "models.vit_sup" not in str(err.value)


# --- through Snakemake --------------------------------------------------------------------------

@pytest.mark.workflow
def test_reviewers_study_plans_features_only_models_in_feature_evaluations_only(tmp_path):
    config = load_config(REPO / "studies" / "reviewers.yaml")  # its pretrained tags validate offline
    features_only = [m for m, e in config["models"].items() if e.get("features_only")]
    assert features_only == ["vit_in21k", "vit_mae", "vit_dinov2"]
    jobs = dry_run_jobs(REPO / "studies" / "reviewers.yaml", tmp_path)
    for model in features_only:
        mine = Counter(rule for rule, w in jobs if w.get("model") == model)
        # one probe job for the 19 VTAB tasks, the task splits (3 each) extracted by one job, its CKA
        # pass over ImageNet val (a dataset it extracts nothing of) by another; nothing else.
        assert mine == {"probe_transfer": 1, "extract_outputs": 2}, model
        assert {w["group"] for rule, w in jobs if rule == "extract_outputs" and w["model"] == model} == {
            "vtab", "imagenet_val"}
    assert not any(rule == "build_zero_shot_head" for rule, _ in jobs)  # heads: built by extraction jobs
    counts = Counter(rule for rule, _ in jobs)
    assert (counts["compute_cka"] == 1 and counts["compute_transfer"] == 1
            and counts["probe_transfer"] == 6)
    # The three reference models run everything (ImageNet val, 7 shifted sets, PUG, cue-conflict, VTAB,
    # the invariance variants).
    assert Counter(rule for rule, w in jobs if w.get("model") == "vit_sup")["extract_outputs"] == 11


@pytest.mark.workflow
def test_tiny_study_features_only_in_transfer_and_cka_tables_not_in_logit_ones(tmp_path):
    config = default_config()
    config["models"] = {"vit_sup": config["models"]["vit_sup"], "fo": dict(FEATURES_ONLY)}
    datasets = config["datasets"]
    config["datasets"] = {"imagenet_val": {**datasets["imagenet_val"], "num_classes": 4, "images_per_class": 2},
                          "imagenet_r": {**datasets["imagenet_r"], "num_classes": 2, "images_per_class": 1},
                          "vtab": {**datasets["vtab"], "tasks": ["dtd"],
                                   "split_sizes": {"train800": 8, "val200": 4, "test": 8}}}
    config["evaluations"] = {"accuracy": {"datasets": ["imagenet_val"]},
                             "calibration": {"datasets": ["imagenet_val", "imagenet_r"]},
                             "transfer": {"datasets": ["vtab"], "probe": {"device": "cpu"}},
                             "cka": {"datasets": ["imagenet_val"], "n_images": 8, "batch_size": 4,
                                     "cross_pairs": "all"}}
    config["resources_dir"] = str(tmp_path / "resources")
    jobs = run_snakemake(write_config(tmp_path / "c.yaml", config), tmp_path)
    assert jobs["extract_outputs"] == 2 and jobs["probe_transfer"] == 2
    results = tmp_path / "results"
    assert sorted(p.name for p in (results / "extracted" / "fo").glob("*.h5")) == [
        "vtab-dtd-test.h5", "vtab-dtd-train800.h5", "vtab-dtd-val200.h5"]
    with h5py.File(results / "extracted" / "fo" / "vtab-dtd-test.h5", "r") as f:
        # store what is read: its logits are read by no evaluation (nor, for a probe split, any model's)
        assert "logits" not in f and f["features"].shape == (8, 192)
    for name in ("accuracy", "calibration"):
        table = pd.read_csv(results / "metrics" / f"{name}.csv")
        assert set(table["model"]) == {"vit_sup"}, name
    assert set(pd.read_csv(results / "metrics" / "transfer.csv")["model"]) == {"vit_sup", "fo"}
    assert set(pd.read_csv(results / "metrics" / "cka.csv")["model"]) >= {"vit_sup", "fo"}
    with h5py.File(results / "metrics" / "cka_imagenet_val.h5", "r") as f:
        assert {"fo__fo", "vit_sup__fo"} <= set(f)
    profile = pd.read_csv(results / "metrics" / "profile.csv")
    assert set(profile.loc[profile["model"] == "fo", "evaluation"]) == {"transfer", "cka"}

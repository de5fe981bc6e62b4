"""Model lists (``models_from:``, beyond_imagenet/zoo.py): expansion of the timm / open_clip
registries, inference of paradigm / family / training data from the tags, and studies/zoo.yaml."""

from __future__ import annotations

import copy
import logging
from collections import Counter

import pytest
import yaml
from conftest import REPO, default_config, dry_run_jobs

from beyond_imagenet.study import ConfigError, Study, load_config, validate_config
from beyond_imagenet.zoo import expand_model_lists, infer

ZOO = REPO / "studies" / "zoo.yaml"

# What each tag of the zoo study is, read from the weights' model cards (timm / open_clip docs),
# written out by hand: paradigm (pretraining objective) and pretraining data.
ZOO_EXPECTED = {
    "resnet50.a1_in1k": ("supervised", "IN-1k"), "resnet50.tv_in1k": ("supervised", "IN-1k"),
    "resnet152.a1h_in1k": ("supervised", "IN-1k"), "convnext_tiny.fb_in1k": ("supervised", "IN-1k"),
    "convnext_base.fb_in1k": ("supervised", "IN-1k"), "efficientnet_b3.ra2_in1k": ("supervised", "IN-1k"),
    "regnety_040.ra3_in1k": ("supervised", "IN-1k"), "vit_base_patch16_224.augreg_in1k": ("supervised", "IN-1k"),
    "deit_base_patch16_224.fb_in1k": ("supervised", "IN-1k"), "deit3_base_patch16_224.fb_in1k": ("supervised", "IN-1k"),
    "swin_base_patch4_window7_224.ms_in1k": ("supervised", "IN-1k"),
    "convnext_tiny.fb_in22k_ft_in1k": ("supervised", "IN-21k"), "convnext_base.fb_in22k_ft_in1k": ("supervised", "IN-21k"),
    "vit_base_patch16_224.augreg_in21k_ft_in1k": ("supervised", "IN-21k"),
    "deit3_base_patch16_224.fb_in22k_ft_in1k": ("supervised", "IN-21k"),
    "swin_base_patch4_window7_224.ms_in22k_ft_in1k": ("supervised", "IN-21k"),
    "vit_base_patch16_384.augreg_in21k_ft_in1k": ("supervised", "IN-21k"),
    "resnet50.fb_swsl_ig1b_ft_in1k": ("supervised", "IG-1B"), "tf_efficientnet_b3.ns_jft_in1k": ("supervised", "JFT-300M"),
    "convnext_base.fb_in22k": ("supervised", "IN-21k"),
    "vit_base_patch16_clip_224.laion2b_ft_in1k": ("clip", "LAION-2B"),
    "vit_base_patch16_clip_224.openai_ft_in1k": ("clip", "OpenAI WIT-400M"),
    "convnext_base.clip_laion2b_augreg_ft_in1k": ("clip", "LAION-2B"),
    "vit_base_patch16_224.dino": ("self_supervised", "IN-1k"),
    "vit_small_patch14_dinov2.lvd142m": ("self_supervised", "LVD-142M"),
    "vit_base_patch14_dinov2.lvd142m": ("self_supervised", "LVD-142M"),
    "vit_base_patch16_224.mae": ("self_supervised", "IN-1k"), "convnextv2_base.fcmae": ("self_supervised", "IN-1k"),
    "convnextv2_base.fcmae_ft_in1k": ("self_supervised", "IN-1k"),
    "beitv2_base_patch16_224.in1k_ft_in1k": ("self_supervised", "IN-1k"),
    "RN50 openai": ("clip", "OpenAI WIT-400M"), "RN50 yfcc15m": ("clip", "YFCC-15M"), "RN50 cc12m": ("clip", "CC12M"),
    "ViT-B-32 openai": ("clip", "OpenAI WIT-400M"), "ViT-B-32 laion400m_e32": ("clip", "LAION-400M"),
    "ViT-B-32 laion2b_s34b_b79k": ("clip", "LAION-2B"), "ViT-B-32 datacomp_m_s128m_b4k": ("clip", "DataComp-M"),
    "ViT-B-32 datacomp_s_s13m_b4k": ("clip", "DataComp-S"), "ViT-B-32 datacomp_xl_s13b_b90k": ("clip", "DataComp-1B"),
    "ViT-B-16 openai": ("clip", "OpenAI WIT-400M"), "ViT-B-16 laion400m_e32": ("clip", "LAION-400M"),
    "ViT-B-16 laion2b_s34b_b88k": ("clip", "LAION-2B"), "ViT-B-16 dfn2b": ("clip", "DFN-2B"),
    "convnext_base laion400m_s13b_b51k": ("clip", "LAION-400M"), "convnext_base_w laion2b_s13b_b82k": ("clip", "LAION-2B"),
}


@pytest.fixture(scope="module")
def zoo():
    return Study(load_config(ZOO))


def _key(spec) -> str:
    return f"{spec.arch}.{spec.pretrained}" if spec.source == "timm" else f"{spec.arch} {spec.pretrained}"


def test_zoo_study_validates_offline_and_every_model_is_in_the_installed_registries(zoo):
    import open_clip
    import timm

    timm_names, clip_pairs = set(timm.list_pretrained()), set(open_clip.list_pretrained())
    assert 35 <= len(zoo.models) <= 50
    for spec in zoo.models.values():
        if spec.source == "timm":
            assert f"{spec.arch}.{spec.pretrained}" in timm_names, spec.name
        else:
            assert (spec.arch, spec.pretrained) in clip_pairs, spec.name
    # It spans what the reviewers asked about: paradigms, architectures, training data.
    specs = list(zoo.models.values())
    assert {s.paradigm for s in specs} == {"supervised", "clip", "self_supervised"}
    assert {s.family for s in specs} >= {"convnet", "vit"}
    assert len({s.training_data for s in specs}) >= 10
    assert all(zoo.model_protocol(m) == "native" for m in zoo.models)


def test_inference_matches_the_model_cards_for_every_zoo_model(zoo):
    assert {_key(s) for s in zoo.models.values()} == set(ZOO_EXPECTED)
    for spec in zoo.models.values():
        assert (spec.paradigm, spec.training_data) == ZOO_EXPECTED[_key(spec)], spec.name
        # and the same from the function itself, before any override
        inferred = infer(spec.source, spec.arch, spec.pretrained)
        assert (inferred["paradigm"], inferred["training_data"]) == ZOO_EXPECTED[_key(spec)]


def test_models_without_an_imagenet_head_are_features_only_from_timm_pretrained_cfg(zoo):
    from timm.models import get_pretrained_cfg

    for spec in zoo.models.values():
        if spec.source == "timm":
            classes = get_pretrained_cfg(f"{spec.arch}.{spec.pretrained}").num_classes
            assert spec.features_only == (classes != 1000), spec.name
        else:
            assert not spec.features_only


def test_training_data_is_a_model_column_of_every_table_and_not_part_of_the_cache_key(zoo):
    model = "ViT-B-32-laion2b_s34b_b79k"
    assert zoo.model_columns(model)["training_data"] == "LAION-2B"
    assert "training_data" not in zoo.model_entry(model)
    assert "training_data" not in zoo.model_identity(model)


def test_zoo_study_dry_run_plans(tmp_path):
    jobs = Counter(rule for rule, _ in dry_run_jobs(ZOO, tmp_path))
    assert jobs["compute_accuracy"] == 1 and jobs["compute_transfer"] == 1 and jobs["compute_profile"] == 1
    assert jobs["compute_across_models"] == 1 and jobs["plot_across_models"] == 1 and jobs["plot_vs_imagenet"] == 1
    # the CLIP models' zero-shot heads are built by their extraction jobs: no job of their own
    assert "build_zero_shot_head" not in jobs and jobs["extract_outputs"] >= len(load_config(ZOO)["models"])


# --- expansion ------------------------------------------------------------------------------

def _config(models_from, models=None):
    config = default_config()
    config["models"] = models or {}
    config["models_from"] = models_from
    return config


def test_patterns_expand_with_wildcards_excludes_overrides_and_twice_is_the_same():
    config = _config([{"source": "timm", "pattern": "convnext_tiny.fb_in*", "exclude": ["*_384"]},
                      {"source": "open_clip", "pattern": "RN50:open*", "paradigm": "supervised"}],
                     models={"convnext_tiny-fb_in1k": {"label": "mine", "preprocessing": "paper"}})
    problems = expand_model_lists(config)
    assert problems == []
    models = config["models"]
    assert set(models) == {"convnext_tiny-fb_in1k", "convnext_tiny-fb_in22k", "convnext_tiny-fb_in22k_ft_in1k",
                           "RN50-openai"}
    assert models["convnext_tiny-fb_in1k"]["label"] == "mine"  # the entry overrides
    assert models["convnext_tiny-fb_in1k"]["preprocessing"] == "paper"
    assert models["convnext_tiny-fb_in22k_ft_in1k"]["preprocessing"] == "native"
    assert models["convnext_tiny-fb_in22k"]["features_only"] is True
    assert models["RN50-openai"]["paradigm"] == "supervised"  # the list entry overrides the inference
    before = copy.deepcopy(config)
    assert expand_model_lists(config) == [] and config == before


def test_a_list_file_of_patterns(tmp_path):
    listing = tmp_path / "models.txt"
    listing.write_text("# my candidates\nresnet50.a1_in1k\n\nViT-B-32:openai  # not timm\n")
    problems = expand_model_lists(_config([{"source": "timm", "file": str(listing)}]))
    assert len(problems) == 1 and "ViT-B-32:openai" in problems[0] and "models_from[0]" in problems[0]
    listing.write_text("# my candidates\nresnet50.a1_in1k\nresnet50.tv_in1k\n")
    config = _config([{"source": "timm", "file": str(listing)}])
    assert expand_model_lists(config) == [] and set(config["models"]) == {"resnet50-a1_in1k", "resnet50-tv_in1k"}


@pytest.mark.parametrize("entry, words", [
    ({"source": "timm", "pattern": "convnxt_tiny.fb_in1k"}, ["models_from[0]", "convnxt_tiny.fb_in1k", "did you mean"]),
    ({"source": "open_clip", "pattern": "ViT-B-32:laion9b*"}, ["models_from[0]", "open_clip", "ViT-B-32:laion9b*"]),
    ({"source": "timm", "file": "/nonexistent/list.txt"}, ["models_from[0].file", "/nonexistent/list.txt"]),
    ({"source": "timm"}, ["models_from[0]", "pattern"]),
    ({"source": "timm", "pattern": "resnet50.a1_in1k", "colour": "red"}, ["models_from[0]", "colour"]),
])
def test_bad_lists_are_refused_naming_the_entry(entry, words):
    with pytest.raises(ConfigError) as err:
        validate_config(_config([entry]))
    for word in words:
        assert word in str(err.value)


def test_paper_protocol_warns_when_it_changes_a_models_input_size(caplog):
    config = _config([{"source": "timm", "pattern": ["vit_base_patch16_384.augreg_in21k_ft_in1k",
                                                     "resnet50.a1_in1k"], "preprocessing": "paper"}])
    with caplog.at_level(logging.WARNING):
        validate_config(config)
    warned = [r.getMessage() for r in caplog.records if "preprocessing paper" in r.getMessage()]
    assert len(warned) == 1 and "vit_base_patch16_384-augreg_in21k_ft_in1k" in warned[0] and "384" in warned[0]
    caplog.clear()
    native = _config([{"source": "timm", "pattern": "vit_base_patch16_384.augreg_in21k_ft_in1k"}])
    with caplog.at_level(logging.WARNING):
        validate_config(native)
    assert not [r for r in caplog.records if "preprocessing paper" in r.getMessage()]


def test_hand_written_entries_get_their_training_data_from_the_tag():
    config = yaml.safe_load((REPO / "studies" / "paper.yaml").read_text())
    study = Study(validate_config(config))
    assert study.models["vit_clip"].training_data == "LAION-400M"
    assert study.models["convnext_sup"].training_data == "IN-21k"

"""Invariance in the workflow (docs/evaluations.md §8): variants as extractions, standard reuse, table, figure;
and a tiny end-to-end run of the invariance, CKA and profile evaluations through Snakemake."""

from __future__ import annotations

import copy

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import default_config, run_snakemake, write_config
from PIL import Image

from beyond_imagenet.evaluations.invariance import (
    invariance_rows,
    is_standard_variant,
    restrict,
    study_variant_names,
)
from beyond_imagenet.evaluations.invariance.variants import (
    Variant,
    build_variant_model,
    spread_subset,
)
from beyond_imagenet.metrics.invariance import invariance_metrics
from beyond_imagenet.models import ModelSpec
from beyond_imagenet.study import Study, validate_config

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGENET_MEAN = (0.485, 0.456, 0.406)


def _config(**invariance) -> dict:
    config = default_config()
    config["evaluations"]["invariance"] = {"datasets": ["imagenet_val"], **invariance}
    return validate_config(config)


# --- pieces ----------------------------------------------------------------------------------

def test_spread_subset_is_even_and_deterministic():
    items = list(range(10))
    assert spread_subset(items, None) == items and spread_subset(items, 10) == items and spread_subset(items, 50) == items
    assert spread_subset(items, 4) == [0, 2, 5, 7]
    assert spread_subset(items, 1) == [0]
    with pytest.raises(ValueError):
        spread_subset(items, 0)


def test_invariance_metrics_by_hand():
    logits = np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.25, 0.25]]))
    labels = np.array([0, 1, 2])
    got = invariance_metrics(logits, labels)
    assert got["top1"] == pytest.approx(1 / 3)
    assert got["true_class_prob"] == pytest.approx((0.7 + 0.3 + 0.25) / 3)
    # A class mask restricts the softmax first; labels are then in the masked space.
    masked = invariance_metrics(logits, np.array([0, 1, 1]), class_mask=np.array([False, True, True]))
    assert masked["top1"] == pytest.approx(2 / 3)  # the tie in the last row goes to the first class
    assert masked["true_class_prob"] == pytest.approx((0.2 / 0.3 + 0.6 / 0.9 + 0.5) / 3)


def test_study_variants_and_standard_reuse():
    study = Study(_config())
    names = study_variant_names(study)
    assert names == ["scale-1", "scale-1.25", "scale-1.5", "scale-2", "scale-3", "shift-0", "shift-5", "shift-30",
                     "shift-75", "shift-100", "res-112", "res-224", "res-336", "res-512", "res-640"]  # docs/evaluations.md §8 defaults
    for model in study.models:
        for name in names:
            path = study.item(model, "imagenet_val", None if is_standard_variant(study, model, name, "imagenet_val") else name)["output"]
            # the standard level is the standard file for paper-protocol models (scale 1 for supervised
            # ones only: a CLIP model's is bilinear, its standard transform bicubic); a native-protocol
            # model (the default study's EfficientNets) has no standard level
            standard = ("scale-1", "res-224") if study.models[model].paradigm == "supervised" else ("res-224",)
            if name in standard and study.model_protocol(model) == "paper":
                assert path == study.output(model, "imagenet_val")
            else:
                assert path.endswith(f"imagenet_val@{name}.h5")
    native = copy.deepcopy(_config())
    native["preprocessing"] = "native"
    assert not any(is_standard_variant(Study(native), "vit_sup", n, "imagenet_val") for n in names)
    # ImageNet-C's standard extraction is normalise-only for supervised models: no variant is it.
    assert not is_standard_variant(study, "vit_sup", "scale-1", "imagenet_c")
    assert is_standard_variant(study, "vit_sup", "scale-1", "imagenet_val")


def _image(path, w=300, h=200):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
    return Image.open(path).convert("RGB")


@pytest.mark.parametrize("model", ["convnet_sup", "vit_sup", "convnet_clip", "vit_clip"])
def test_variant_models_and_transforms(model, tmp_path):
    spec = ModelSpec.from_config(model, default_config()["models"][model])
    head = torch.zeros(128, 1000) if spec.needs_zero_shot_head else None
    image = _image(tmp_path / "x.png")
    clip = spec.paradigm == "clip"
    for name, size in (("scale-2", 224), ("shift-30", 224), ("res-112", 112)):
        loaded = build_variant_model(spec, Variant.parse(name), "paper", head=head)
        x = loaded.transform(image)
        assert x.shape == (3, size, size)
        assert loaded.preprocessing["variant"] == name
        assert tuple(loaded.preprocessing["mean"]) == pytest.approx(OPENAI_MEAN if clip else IMAGENET_MEAN)
        if name == "scale-2":  # Resize(2·R): R = 224 for CLIP, 256 supervised
            assert loaded.transform.transforms[0].size == (448 if clip else 512)
        # The paper protocol's (the authors') interpolation: bilinear for scale and shift in both
        # paradigms, open_clip's bicubic for a CLIP model's resolution.
        want = "bicubic" if clip and name == "res-112" else "bilinear"
        assert f"interpolation={want}" in loaded.preprocessing["transform"], name
        with torch.no_grad():
            logits, features = loaded.network(x[None])
        assert logits.shape == (1, 1000) and torch.isfinite(logits).all()


@pytest.mark.parametrize("protocol, want", [("native", "bicubic"), ("paper", "bilinear")])
def test_native_variants_keep_the_models_own_interpolation(protocol, want, tmp_path):
    """Guards docs/evaluations.md §8: under `native` the variants resize with the model's own
    interpolation (EfficientNet-Lite0's timm data config: bicubic), under `paper` with the authors'."""
    entry = {**default_config()["models"]["effnet_lite0"], "preprocessing": protocol}
    spec = ModelSpec.from_config("effnet_lite0", entry)
    image = _image(tmp_path / "x.png")
    for name in ("scale-2", "shift-30", "res-112"):
        loaded = build_variant_model(spec, Variant.parse(name), "paper")
        assert f"interpolation={want}" in loaded.preprocessing["transform"], name
        assert loaded.transform(image).shape[1:] == ((112, 112) if name == "res-112" else (224, 224))


# --- the table ---------------------------------------------------------------------------------

def _out(ids, logits, labels, variant=""):
    return {"ids": np.asarray(ids, dtype=object), "logits": np.asarray(logits, dtype=np.float32),
            "labels": np.asarray(labels), "attrs": {"variant": variant}}


def test_invariance_rows_cut_the_standard_outputs_to_the_variant_images():
    eye = np.eye(3) * 10
    # Standard outputs: 4 images, all right. The variants ran on the subset [a, c] (in that order).
    standard = _out(["a", "b", "c", "d"], eye[[0, 1, 2, 0]], [0, 1, 2, 0])
    scale2 = _out(["a", "c"], eye[[0, 1]], [0, 2], "scale-2")  # c wrong
    scale3 = _out(["a", "c"], eye[[1, 1]], [0, 2], "scale-3")  # both wrong
    rows = invariance_rows({Variant("scale", 1.0): standard, Variant("scale", 2.0): scale2,
                            Variant("scale", 3.0): scale3}, ["a", "c"], None, {"model": "m"})
    table = pd.DataFrame(rows)
    top1 = table[table["metric"] == "top1"].set_index("variant")["value"]
    assert top1.to_dict() == {"scale-1": 1.0, "scale-2": 0.5, "scale-3": 0.0}
    assert set(table.loc[table["metric"] == "n_images", "value"]) == {2}
    summary = table[table["variant"] == "scale-summary"].set_index("metric")["value"]
    assert summary["mean_top1"] == pytest.approx(0.5)
    assert summary["retained_top1"] == pytest.approx(0.25)  # mean(0.5, 0) / 1.0
    assert table.loc[table["variant"] == "scale-1", "standard"].all()
    # Shift 0 is extracted (not the standard file) and is still the baseline of the shift levels.
    shift0 = _out(["a", "c"], eye[[0, 2]], [0, 2], "shift-0")
    shift30 = _out(["a", "c"], eye[[0, 1]], [0, 2], "shift-30")
    table = pd.DataFrame(invariance_rows({Variant("shift", 0): shift0, Variant("shift", 30): shift30}, ["a", "c"],
                                         None, {"model": "m"}))
    assert not table.loc[table["variant"] == "shift-0", "standard"].any()
    summary = table[table["variant"] == "shift-summary"].set_index("metric")["value"]
    assert summary["retained_top1"] == pytest.approx(0.5)  # 0.5 / 1.0
    with pytest.raises(ValueError, match="missing"):
        restrict(scale2, ["a", "b"])


# --- through Snakemake ---------------------------------------------------------------------------

@pytest.mark.workflow
def test_dry_run_has_no_job_for_standard_variants(tmp_path):
    config = default_config()
    config["evaluations"] = {"invariance": {"datasets": ["imagenet_val"]}}
    jobs = run_snakemake(write_config(tmp_path / "c.yaml", config), tmp_path, dryrun=True)
    # 15 variants; for the 2 supervised paper-protocol models scale 1 and res 224 are the standard
    # evaluation (13 variant files + the standard one per model), for the 2 CLIP ones res 224 only
    # (14 + 1), the 3 native-protocol EfficientNet-Lites have no standard level (15 + 1); all written
    # by one extraction job per model (extraction.group: model)
    study = Study(validate_config(copy.deepcopy(config)))
    assert len(study.all_outputs()) == 2 * (13 + 1) + 2 * (14 + 1) + 3 * (15 + 1) and jobs["extract_outputs"] == 7
    assert "link_output" not in jobs
    assert jobs["compute_invariance"] == 1 and jobs["plot_invariance"] == 1  # its 2 figures (top-1, probability)


@pytest.mark.workflow
def test_invariance_cka_profile_end_to_end(default_study):
    """The default study (its session-wide run): scale [1, 3], shift [0, 150], resolution [112, 224]
    on 16 images; CKA of every block on 32 images in batches of 16; the profile."""
    workdir, _ = default_study
    results = workdir / "results"
    models = list(default_config()["models"])
    # 2 supervised paper-protocol models x 4 non-standard variants (shift 0 included); scale 1 and
    # res 224 have no file. The 2 CLIP models also extract scale 1 (bilinear, the authors' CropScale).
    # The 3 native-protocol EfficientNet-Lites have all 6.
    real = {m for m in models if m.startswith("effnet_lite")}
    assert real == {"effnet_lite0", "effnet_lite1", "effnet_lite2"}
    variants = {"supervised": ("scale-3", "shift-0", "shift-150", "res-112"),
                "clip": ("scale-1", "scale-3", "shift-0", "shift-150", "res-112")}
    config_models = default_config()["models"]
    variant_files = sorted(p.relative_to(results / "extracted").as_posix()
                           for p in (results / "extracted").glob("*/imagenet_val@*.h5"))
    assert variant_files == sorted([f"{m}/imagenet_val@{v}.h5" for m in models if m not in real
                                    for v in variants[config_models[m]["paradigm"]]]
                                   + [f"{m}/imagenet_val@{v}.h5" for m in real for v in
                                      ("scale-1", "scale-3", "shift-0", "shift-150", "res-112", "res-224")])
    table = pd.read_csv(results / "metrics" / "invariance.csv", keep_default_na=False, na_values=[""])
    assert set(table["variant"]) >= {"scale-1", "scale-3", "shift-0", "shift-150", "res-112", "res-224"}
    assert set(table.loc[table["metric"] == "n_images", "value"]) == {16}
    # A variant file records its variant and transform; the standard level was read from the
    # standard outputs (38 images), cut to the same 16.
    with h5py.File(results / "extracted" / "vit_sup" / "imagenet_val@res-112.h5", "r") as f:
        assert f.attrs["variant"] == "res-112" and f.attrs["n_images"] == 16 and f.attrs["max_images"] == 16
        assert "CenterCrop(size=(112, 112))" in f.attrs["preprocessing"]
    for name in ("invariance_top1_imagenet_val", "invariance_true_class_prob_imagenet_val", "cka_within_imagenet_val",
                 "cka_cross_imagenet_val", "profile"):
        for ext in ("png", "pdf"):
            assert (results / "figures" / f"{name}.{ext}").stat().st_size > 1000, name
    with h5py.File(results / "metrics" / "cka_imagenet_val.h5", "r") as f:
        # Within each model, and across the paper's two axes (ConvNet vs ViT, supervised vs CLIP).
        assert set(f) == {f"{m}__{m}" for m in models} | {"convnet_sup__vit_sup", "convnet_clip__vit_clip",
                                                          "convnet_sup__convnet_clip", "vit_sup__vit_clip",
                                                          *(f"{m}__effnet_lite{k}" for m in ("vit_sup", "convnet_clip")
                                                            for k in range(3)),
                                                          "ids", "skipped_ids"}
        assert len(f["ids"]) == 32 and len(set(f["ids"][()])) == 32 and len(f["skipped_ids"]) == 0
        within = f["vit_sup__vit_sup"]["cka"][()]
        assert within.shape == (12, 12) and np.allclose(np.diag(within), 1.0)
        assert f["vit_sup__vit_clip"]["cka"].shape[0] == 12
        assert f.attrs["n_images"] == 32 and f.attrs["n_batches"] == 2 and f.attrs["sample_seed"] == 0
        first_last = float(f["vit_sup__vit_sup"]["cka"][0, -1])
    profile = pd.read_csv(results / "metrics" / "profile.csv")
    assert {"accuracy", "invariance", "cka", "calibration", "transfer"} <= set(profile["evaluation"])
    for headline, rows in profile.groupby("headline", sort=False):
        assert list(rows["model"]) == models, headline  # every model in every column, in study order
    summary = pd.read_csv(results / "metrics" / "cka.csv")
    within = summary[(summary["kind"] == "within") & (summary["metric"] == "first_last")].set_index("model")
    assert within.loc["vit_sup", "value"] == pytest.approx(first_last)

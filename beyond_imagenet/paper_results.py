"""The paper's published numbers as data, so reports can draw them beside a run's own results."""

from __future__ import annotations

import copy
from functools import lru_cache
from importlib.resources import files
from typing import Any

import yaml

__all__ = ["PAPER_MODELS", "load_paper_results", "paper_key_for"]

#: Study names of the four paper models, in the paper's order.
PAPER_MODELS: tuple[str, ...] = ("vit_sup", "convnext_sup", "vit_clip", "convnext_clip")


@lru_cache(maxsize=None)
def _load() -> dict[str, Any]:
    text = files("beyond_imagenet").joinpath("data", "paper_results.yaml").read_text("utf-8")
    data = yaml.safe_load(text)
    if set(data["models"]) != set(PAPER_MODELS):
        raise RuntimeError("paper_results.yaml must describe exactly the four paper models")
    return data


def paper_key_for(source: str, arch: str, pretrained: bool | str, checkpoint: str | None = None) -> str | None:
    """The paper model these weights are (``vit_sup`` ...), or None: the library, architecture and
    pretrained tag must be the paper's own (a local checkpoint never is)."""
    if checkpoint or not isinstance(pretrained, str):
        return None
    for key, model in _load()["models"].items():
        if model["library"] != source:
            continue
        if source == "timm" and model["name"] == f"{arch}.{pretrained}":
            return key
        if source == "open_clip" and (model["name"], model.get("pretrained")) == (arch, pretrained):
            return key
    return None


def load_paper_results() -> dict[str, Any]:
    """Published results keyed by section (calibration, imagenet_x, shape_bias, robustness, vtab,
    pug, invariance, ...), each with a ``source`` note. Accuracies are percent as published.

    Returns a deep copy of the cached parse, so callers may modify it.
    """
    return copy.deepcopy(_load())

"""Invariance variants in the workflow: which ones a study runs, on which images, with which model.

:mod:`beyond_imagenet.evaluations.invariance.transforms` defines the transforms (docs/evaluations.md §8); this module turns a variant
name (``scale-1.25``, ``shift-30``, ``res-336``) into a :class:`~beyond_imagenet.models.LoadedModel`
whose network and transform are the variant's, and picks the image subset when a study limits
the variant passes to ``max_images``.
"""

from __future__ import annotations

import dataclasses

from torchvision.transforms import InterpolationMode

# The names, study variants and image subset are torch-free (names.py); re-exported here.
from beyond_imagenet.evaluations.invariance.names import (  # noqa: F401
    CONFIG_KINDS,
    Variant,
    spread_subset,
    study_variants,
)
from beyond_imagenet.evaluations.invariance.transforms import (
    PARADIGMS,
    variant_transform,
)
from beyond_imagenet.models import LoadedModel, ModelSpec, build_model


def _normalisation(loaded: LoadedModel) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """mean/std of the model's own protocol (docs/evaluations.md §0): never defaulted, CLIP weights differ."""
    record = loaded.preprocessing
    try:
        return tuple(float(m) for m in record["mean"]), tuple(float(s) for s in record["std"])
    except KeyError as err:
        raise KeyError(f"preprocessing record of {loaded.spec.name} has no {err}; cannot normalise") from None


def _native_interpolation(loaded: LoadedModel) -> InterpolationMode | None:
    """The model's own resize interpolation (its preprocessing record: timm's data config, open_clip's
    preprocess_cfg); None (the paradigm's) where the record names none."""
    name = loaded.preprocessing.get("interpolation")
    try:
        return InterpolationMode(str(name)) if name else None
    except ValueError:
        raise ValueError(f"models.{loaded.spec.name}: its preprocessing names interpolation {name!r}, which "
                         f"torchvision does not know ({[m.value for m in InterpolationMode]})") from None


def build_variant_model(spec: ModelSpec, variant: Variant, protocol: str, head=None,
                        logit_scale: float = 100.0) -> LoadedModel:
    """The model (built for the variant's resolution if it is one) with the variant's transform:
    under ``paper`` the authors' (docs/evaluations.md §8), under ``native`` the same windows resized
    with the model's own interpolation.

    The recorded preprocessing says which variant and transform produced the outputs.
    """
    if spec.paradigm not in PARADIGMS:
        raise ValueError(f"models.{spec.name}: invariance needs paradigm in {sorted(PARADIGMS)}, got {spec.paradigm!r}")
    image_size = int(variant.value) if variant.kind == "resolution" else None
    loaded = build_model(spec, protocol, head=head, logit_scale=logit_scale, image_size=image_size)
    mean, std = _normalisation(loaded)
    interpolation = _native_interpolation(loaded) if (spec.preprocessing or protocol) == "native" else None
    transform = variant_transform(variant.kind, variant.value, spec.paradigm, mean=mean, std=std,
                                  interpolation=interpolation)
    preprocessing = {**loaded.preprocessing, "transform": repr(transform), "variant": variant.name,
                     "variant_kind": variant.kind, "variant_value": variant.value,
                     "image_size": image_size or 224, "mean": mean, "std": std}
    return dataclasses.replace(loaded, transform=transform, preprocessing=preprocessing)

"""Invariance variants by name, without torch: what a study asks for (``scale-1.25``, ``shift-30``,
``res-336``), which levels are the standard evaluation, and the image subset the variants run on.

The Snakefile plans every variant extraction with these (through the registry's ``variants`` hook),
so nothing here imports torch or torchvision; :mod:`.transforms` builds the transforms and
:mod:`.variants` the models, inside extraction jobs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

#: The paradigms the variants are defined for (their transforms: ``transforms.PARADIGMS``).
PARADIGM_NAMES = ("supervised", "clip")

#: The variant values evaluated by default (docs/evaluations.md §8).
VARIANTS: dict[str, list[float | int]] = {
    "scale": [1, 1.25, 1.5, 2, 3],
    "shift": [0, 5, 30, 75, 100],
    "resolution": [112, 224, 336, 512, 640],
}

#: The value of each kind that reproduces the standard (paper-protocol) evaluation.
STANDARD_VALUES: dict[str, float | int] = {"scale": 1, "shift": 0, "resolution": 224}

_PREFIX = {"scale": "scale", "shift": "shift", "resolution": "res"}
_KIND_OF_PREFIX = {v: k for k, v in _PREFIX.items()}

def _check_paradigm(paradigm: str) -> None:
    if paradigm not in PARADIGM_NAMES:
        raise ValueError(f"unknown paradigm {paradigm!r}; expected one of {sorted(PARADIGM_NAMES)}")


# --- names ------------------------------------------------------------------------------------

def _format_value(kind: str, value: float) -> str:
    if kind == "scale":
        return f"{float(value):g}"
    if float(value) != int(value):
        raise ValueError(f"{kind} values must be integers, got {value!r}")
    return str(int(value))


def variant_name(kind: str, value: float) -> str:
    """File-name-safe name of a variant: ``scale-1.25``, ``shift-30``, ``res-336``."""
    if kind not in _PREFIX:
        raise ValueError(f"unknown variant kind {kind!r}; expected one of {sorted(_PREFIX)}")
    return f"{_PREFIX[kind]}-{_format_value(kind, value)}"


def parse_variant(name: str) -> tuple[str, float | int]:
    """Inverse of :func:`variant_name`: ``"res-336"`` -> ``("resolution", 336)``.

    Scale values come back as float, shift/resolution as int; values outside :data:`VARIANTS`
    are accepted so a study config can add its own.
    """
    prefix, sep, raw = name.partition("-")
    if not sep or prefix not in _KIND_OF_PREFIX or not raw:
        raise ValueError(f"not a variant name: {name!r} (expected e.g. 'scale-1.25', 'shift-30', 'res-336')")
    kind = _KIND_OF_PREFIX[prefix]
    try:
        value: float | int = float(raw) if kind == "scale" else int(raw)
    except ValueError as err:
        raise ValueError(f"bad value in variant name {name!r}") from err
    if variant_name(kind, value) != name:
        raise ValueError(f"non-canonical variant name {name!r}; use {variant_name(kind, value)!r}")
    return kind, value


def is_standard(kind: str, value: float, paradigm: str, protocol: str = "paper") -> bool:
    """Whether this variant *is* the standard evaluation, pixel for pixel, so its outputs are reused.

    Under the ``paper`` protocol: resolution 224 for both paradigms (supervised Resize(256,
    bilinear) -> CenterCrop(224); CLIP open_clip's Resize(224, bicubic) -> CenterCrop(224)) and
    scale 1 for supervised models (Resize(256, bilinear) -> CenterCrop(224)). Scale 1 of a CLIP
    model is not: the authors' CropScale resizes bilinearly where the CLIP standard transform is
    bicubic. Shift 0 is not either: its window is cut in original-image coordinates and then
    resized (docs/evaluations.md §8), which differs from resize-then-crop by resampling order and
    up to a pixel of window truncation. Both are extracted like the other levels, so each curve
    comes from one pipeline and its baseline level is exact.
    Under the ``native`` protocol (each model's own crop_pct/interpolation) nothing is standard.
    """
    _check_paradigm(paradigm)
    if kind not in STANDARD_VALUES:
        raise ValueError(f"unknown variant kind {kind!r}")
    if protocol != "paper" or kind == "shift" or float(value) != float(STANDARD_VALUES[kind]):
        return False
    return kind == "resolution" or paradigm == "supervised"


#: config key of each variant kind (evaluations.invariance.<key>) -> kind in invariance.py
CONFIG_KINDS = {"scale": "scale", "shift": "shift", "resolution": "resolution"}


@dataclasses.dataclass(frozen=True)
class Variant:
    kind: str
    value: float | int

    @property
    def name(self) -> str:
        return variant_name(self.kind, self.value)

    @classmethod
    def parse(cls, name: str) -> Variant:
        return cls(*parse_variant(name))

    def is_standard(self, paradigm: str, protocol: str) -> bool:
        return is_standard(self.kind, self.value, paradigm, protocol)


def study_variants(section: dict[str, Any]) -> list[Variant]:
    """The variants an ``evaluations.invariance`` section asks for, in config order."""
    return [Variant(kind, value) for key, kind in CONFIG_KINDS.items() for value in section.get(key, [])]


def spread_subset(samples: Sequence, n: int | None) -> list:
    """``n`` samples evenly spread over the list (all of them if ``n`` is None or >= len).

    Manifests are sorted by class, so an evenly spaced subset covers the classes instead of the
    first few; it is deterministic, so the standard outputs can be cut to the same images.
    """
    if n is None or n >= len(samples):
        return list(samples)
    if n < 1:
        raise ValueError(f"need at least one image, got n={n}")
    index = np.unique(np.floor(np.arange(n) * len(samples) / n).astype(np.int64))
    return [samples[i] for i in index]



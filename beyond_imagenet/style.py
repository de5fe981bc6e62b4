"""One figure style for the whole study, keyed by model: colour, marker, line style and hatch.

Every figure module asks :func:`model_styles` for its colours, so a model looks the same in every
figure of a study. The style is a pure function of the study's model list (model, family,
paradigm, paper_key, in study order), which every metric table carries in full and in config order;
figures pass the whole table they were given (not a filtered slice), so they all see the same list.

Assignment rule
---------------
1. **The paper's four models**, recognised by ``paper_key``, always get fixed colours, whatever
   their position in the study: supervised = blues, CLIP = reds, ConvNet darker, ViT lighter
   (:data:`PAPER_COLORS`). These four colours are reserved: no other model ever gets one. If two
   models declare the same ``paper_key`` (e.g. a re-hosted copy), the first in study order gets the
   fixed colour and the other is treated as in 2.
2. **Every other model**, in study order, gets the next colour of its paradigm's fixed palette
   (:data:`PARADIGM_PALETTES`: supervised blue/teal shades, ``clip`` red/orange shades, any other
   paradigm greys/greens, :data:`OTHER_PALETTE`) that no earlier model of the study has taken.
   When its paradigm's list runs out it takes the next unused colour of the qualitative cycle
   :data:`QUALITATIVE`, then of the other paradigms' lists. Only when all 30 of these are taken
   do colours repeat, going round :data:`QUALITATIVE` again in order.
3. **Marker and line style** follow the architecture family: ``convnet`` ``"s"`` / ``"-"``,
   ``vit`` ``"o"`` / ``"--"``, anything else ``"^"`` / ``":"``. **Hatch** (bar figures) likewise:
   ``convnet`` none, ``vit`` ``"//"``, anything else ``".."``.

The rule only looks at the model list, so the same study gives the same styles on every run and in
every figure. :data:`PAPER_MARKER` is the black diamond drawn for published numbers, and
:func:`save_figure` writes every figure (fixed metadata, so unchanged figures are byte-stable).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from beyond_imagenet.io import atomic_path  # noqa: E402

__all__ = ["FAMILY_STYLES", "as_text", "grouped_bars", "styled_models", "plt", "OTHER_PALETTE", "PAPER_COLORS", "PAPER_MARKER", "PARADIGM_PALETTES", "QUALITATIVE",
           "ModelStyle", "model_styles", "save_figure"]


@dataclass(frozen=True)
class ModelStyle:
    color: str
    marker: str
    linestyle: str
    hatch: str


# The paper's 2x2 design: supervised blues, CLIP reds; the ConvNet the darker shade, the ViT the lighter.
PAPER_COLORS: dict[str, str] = {
    "convnext_sup": "#1f4e99",
    "vit_sup": "#7fb2e5",
    "convnext_clip": "#a50f15",
    "vit_clip": "#f4837d",
}
# Colours of the models without a paper colour, per paradigm, taken in order (the first few clearly
# apart from each other and from the paper colours).
PARADIGM_PALETTES: dict[str, tuple[str, ...]] = {
    "supervised": ("#1f77b4", "#0e7c7b", "#41b6c4", "#08306b", "#5e81ac", "#9ecae1"),
    "clip": ("#d62728", "#e6550d", "#67000d", "#fcbba1", "#fd8d3c", "#7f2704"),
}
OTHER_PALETTE: tuple[str, ...] = ("#7f7f7f", "#31a354", "#525252", "#a1d99b", "#006d2c", "#bdbdbd")
# Qualitative fallback once a paradigm's list runs out (none of these is in a palette above).
QUALITATIVE: tuple[str, ...] = ("#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#393b79", "#843c39",
                                "#7b4173", "#637939", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d")
_PALETTES = (*PARADIGM_PALETTES.values(), OTHER_PALETTE)
# family -> (marker, linestyle, hatch)
FAMILY_STYLES: dict[str, tuple[str, str, str]] = {
    "convnet": ("s", "-", ""),
    "vit": ("o", "--", "//"),
    "other": ("^", ":", ".."),
}
# Published numbers: a small black diamond on our bar / point.
PAPER_MARKER = dict(marker="D", color="black", markersize=4, linestyle="none", zorder=5)


def _text(value: Any) -> str:
    """A table cell as text: NaN / None (an empty CSV cell) -> ""."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def _model_list(models) -> list[dict[str, str]]:
    """First occurrence of each model, in order, with its family, paradigm and paper_key as text."""
    if hasattr(models, "to_dict") and hasattr(models, "columns"):  # a pandas DataFrame
        records = models.to_dict("records")
    elif isinstance(models, Mapping):
        raise TypeError("model_styles takes a table or a sequence of rows, not a single mapping")
    else:
        records = list(models)
    out: dict[str, dict[str, str]] = {}
    for row in records:
        name = _text(row["model"])
        if name not in out:
            out[name] = {key: _text(row.get(key)) for key in ("family", "paradigm", "paper_key")}
    return [{"model": name, **columns} for name, columns in out.items()]


def model_styles(models: Any) -> dict[str, ModelStyle]:
    """Style of every model of the study (see the module docstring for the rule).

    ``models``: a table (pandas DataFrame) with columns model, family, paradigm, paper_key, one or
    more rows per model, or a sequence of mappings with those keys; first occurrence = study order.
    """
    rows = _model_list(models)
    colors: dict[str, str] = {}
    for row in rows:  # the paper's models first: their colours do not depend on the order
        key = row["paper_key"]
        if key in PAPER_COLORS and PAPER_COLORS[key] not in colors.values():
            colors[row["model"]] = PAPER_COLORS[key]
    used = set(colors.values()) | set(PAPER_COLORS.values())
    overflow = 0
    for row in rows:
        if row["model"] in colors:
            continue
        palette = PARADIGM_PALETTES.get(row["paradigm"].lower(), OTHER_PALETTE)
        candidates = (*palette, *QUALITATIVE, *(c for p in _PALETTES if p is not palette for c in p))
        color = next((c for c in candidates if c not in used), None)
        if color is None:  # every colour taken: go round the qualitative cycle again
            color = QUALITATIVE[overflow % len(QUALITATIVE)]
            overflow += 1
        colors[row["model"]] = color
        used.add(color)
    styles = {}
    for row in rows:
        marker, linestyle, hatch = FAMILY_STYLES.get(row["family"].lower(), FAMILY_STYLES["other"])
        styles[row["model"]] = ModelStyle(color=colors[row["model"]], marker=marker, linestyle=linestyle, hatch=hatch)
    return styles


def save_figure(fig, paths: Sequence[str | os.PathLike]) -> None:
    """Save to each path (png/pdf by extension) atomically, with fixed metadata for stable files."""
    for path in paths:
        path = Path(path)
        metadata = {"Software": None} if path.suffix == ".png" else {"Creator": None, "Producer": None, "CreationDate": None}
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=path.suffix[1:], dpi=150, bbox_inches="tight", metadata=metadata)
    plt.close(fig)


# ------------------------------------------------------------------ shared by the bar figures
def as_text(frame: pd.DataFrame, *columns: str) -> pd.DataFrame:
    """Empty cells come back from CSV as NaN; grouping columns are strings."""
    frame = frame.copy()
    for column in columns:
        if column in frame:
            values = frame[column].astype(object)
            frame[column] = values.where(values.notna(), "").astype(str)
    return frame


def styled_models(data: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """One row per model of ``data`` (table order) with its label, family, paradigm, paper_key and
    style (colour, marker, hatch); styles from the whole ``table``, i.e. the study's model list."""
    models = as_text(data, "paper_key").drop_duplicates("model")[["model", "label", "family", "paradigm", "paper_key"]]
    styles = model_styles(table)
    chosen = [styles[str(m)] for m in models["model"]]
    return models.assign(color=[s.color for s in chosen], marker=[s.marker for s in chosen],
                         hatch=[s.hatch for s in chosen]).reset_index(drop=True)


def grouped_bars(ax, groups: list[str], models: pd.DataFrame, value, paper=None, scale: float = 1.0) -> None:
    """Bars per group (x) and model; ``value(model, group)`` -> float or NaN; ``paper(key, group)``."""
    width = 0.8 / max(len(models), 1)
    x = np.arange(len(groups))
    drew_paper = False
    for k, m in models.iterrows():
        offset = x - 0.4 + width * (k + 0.5)
        heights = np.asarray([value(m["model"], g) for g in groups], dtype=float) * scale
        ax.bar(offset, np.nan_to_num(heights), width=width, color=m["color"], hatch=m["hatch"],
               edgecolor="black", linewidth=0.4, label=m["label"])
        for xi, h in zip(offset, heights):
            if np.isnan(h):
                ax.text(xi, 0, "n/a", rotation=90, ha="center", va="bottom", fontsize=6, color="gray")
        if paper is not None and m["paper_key"]:
            published = np.asarray([paper(m["paper_key"], g) for g in groups], dtype=float)
            if np.isfinite(published).any():
                ax.plot(offset, published, label=None if drew_paper else "published (paper)", **PAPER_MARKER)
                drew_paper = True
    ax.set_xticks(x)

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

Intervals
---------
A metric table may carry a confidence interval per row in :data:`CI_COLUMNS` (``ci_low``,
``ci_high``, same units as ``value``; empty where a row has none, e.g. counts). Figures read them
with :func:`interval` / :func:`interval_lookup` and draw them with :func:`draw_intervals`
(:data:`ERRORBAR_STYLE`: thin black lines with caps) or a band; a table without the columns, or
with only empty cells, draws exactly as before (no artist is added).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from beyond_imagenet.io import atomic_path


class _Pyplot:
    """``matplotlib.pyplot`` (Agg backend), imported on first use. The Snakefile imports every
    figure module through the evaluation registry; a parse (every dry run, every SLURM job) must not
    pay matplotlib's start-up for figures it does not draw."""

    _module = None

    def __getattr__(self, name: str):
        if _Pyplot._module is None:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot

            _Pyplot._module = matplotlib.pyplot
        return getattr(_Pyplot._module, name)


plt = _Pyplot()

__all__ = ["CI_COLUMNS", "ERRORBAR_STYLE", "FAMILY_STYLES", "as_text", "draw_intervals", "grouped_bars", "interval",
           "interval_lookup", "interval_text", "styled_models", "plt", "OTHER_PALETTE", "PAPER_COLORS", "PAPER_MARKER",
           "PARADIGM_PALETTES", "QUALITATIVE", "ModelStyle", "model_styles", "save_figure"]


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
#: The interval columns of a metric table (e.g. a bootstrap CI; same units as ``value``).
CI_COLUMNS = ("ci_low", "ci_high")
#: Error bars on bars and points: thin black lines with small caps, below the published marker.
ERRORBAR_STYLE = {"fmt": "none", "ecolor": "black", "elinewidth": 0.6, "capsize": 2, "capthick": 0.6, "zorder": 4}


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


# ------------------------------------------------------------------ intervals (ci_low, ci_high)
Interval = tuple[float, float]


def _intervals(rows: pd.DataFrame) -> tuple[pd.Series, pd.Series, pd.Series] | None:
    """(low, high, both finite) of ``rows`` as floats; None when the table lacks the columns."""
    if not all(column in rows.columns for column in CI_COLUMNS):
        return None
    low, high = (pd.to_numeric(rows[column], errors="coerce").astype(float) for column in CI_COLUMNS)
    return low, high, np.isfinite(low) & np.isfinite(high)


def _scaled(low: float, high: float, scale: float) -> Interval:
    a, b = float(low) * scale, float(high) * scale
    return (a, b) if a <= b else (b, a)


def interval(rows: pd.DataFrame, scale: float = 1.0) -> Interval | None:
    """The interval (low, high) x ``scale`` of the first of ``rows`` that has one; None when the
    table has no interval columns, ``rows`` is empty, or their cells are empty."""
    found = _intervals(rows)
    if found is None or not found[2].any():
        return None
    low, high, ok = found
    first = ok.to_numpy().nonzero()[0][0]
    return _scaled(low.iloc[first], high.iloc[first], scale)


def interval_lookup(rows: pd.DataFrame, keys: Sequence[str],
                    scale: float = 1.0) -> Callable[..., Interval | None] | None:
    """``lookup(*values)``: the interval x ``scale`` of the (first) row of ``rows`` whose ``keys``
    columns hold ``values``, or None. None instead of a lookup when no row has an interval, so a
    figure of a table without intervals draws nothing extra."""
    found = _intervals(rows)
    if found is None or not found[2].any():
        return None
    low, high, ok = found
    table: dict[tuple, Interval] = {}
    for key, lo, hi in zip(rows.loc[ok, list(keys)].itertuples(index=False, name=None), low[ok], high[ok]):
        table.setdefault(key, _scaled(lo, hi, scale))

    def lookup(*values: Any) -> Interval | None:
        return table.get(values)

    return lookup


def interval_text(bounds: Interval | None, fmt: str = "{:.3f}") -> str:
    """`` [low, high]`` for a title or label; "" without an interval."""
    if bounds is None:
        return ""
    return f" [{fmt.format(bounds[0])}, {fmt.format(bounds[1])}]"


def draw_intervals(ax, positions: Sequence[float], bounds: Sequence[Interval | None], horizontal: bool = False,
                   at: Sequence[float] | None = None, label: str | None = None, **style: Any):
    """Error bars spanning each ``(low, high)`` at ``positions`` (x; y when ``horizontal``);
    entries None or not finite are skipped. The bars span exactly [low, high], whether or not the
    point estimate lies inside. ``at``: the point estimate of each entry; an entry whose estimate
    is NaN (a bar drawn as n/a) gets no bar either. Returns the ErrorbarContainer, or None when
    there is nothing to draw (then nothing is added to ``ax``)."""
    keep = []
    for k, (position, bound) in enumerate(zip(positions, bounds)):
        if bound is None or not (np.isfinite(bound[0]) and np.isfinite(bound[1]) and np.isfinite(position)):
            continue
        if at is not None and not np.isfinite(at[k]):
            continue
        keep.append((position, bound))
    if not keep:
        return None
    where = np.asarray([p for p, _ in keep], dtype=float)
    low = np.asarray([b[0] for _, b in keep], dtype=float)
    high = np.asarray([b[1] for _, b in keep], dtype=float)
    middle, half = (low + high) / 2, (high - low) / 2
    style = {**ERRORBAR_STYLE, **style}
    if horizontal:
        return ax.errorbar(middle, where, xerr=half, label=label, **style)
    return ax.errorbar(where, middle, yerr=half, label=label, **style)


def grouped_bars(ax, groups: list[str], models: pd.DataFrame, value, paper=None, scale: float = 1.0,
                 interval=None) -> None:
    """Bars per group (x) and model; ``value(model, group)`` -> float or NaN; ``paper(key, group)``;
    ``interval(model, group)`` -> (low, high) in the units of ``value``, or None: an error bar on
    the bar (x ``scale`` like the bar), labelled ``_ci:<model>`` (kept out of the legend)."""
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
        if interval is not None:
            bounds = [interval(m["model"], g) for g in groups]
            draw_intervals(ax, offset, [None if b is None else _scaled(*b, scale) for b in bounds], at=heights,
                           label=f"_ci:{m['model']}")
        if paper is not None and m["paper_key"]:
            published = np.asarray([paper(m["paper_key"], g) for g in groups], dtype=float)
            if np.isfinite(published).any():
                ax.plot(offset, published, label=None if drew_paper else "published (paper)", **PAPER_MARKER)
                drew_paper = True
    ax.set_xticks(x)

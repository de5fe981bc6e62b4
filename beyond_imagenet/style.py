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

__all__ = ["CHANCE_LEGEND", "MANY_MODELS", "many_models", "model_fontsize", "row_inches", "paradigm_colors", "labelled_models",
           "place_labels", "dot_panels", "suptitle_above", "CHANCE_ALPHA", "CHANCE_HATCH", "chance_note", "CI_COLUMNS", "at_chance", "chance_of", "clip_upper", "empty_note",
           "legend_outside", "n_text", "ERRORBAR_STYLE", "FAMILY_STYLES", "as_text", "draw_intervals", "grouped_bars", "interval",
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


#: A model at chance on a set (its accuracy interval reaches 1 / the number of classes): its bars or
#: points are drawn faded (this alpha) and cross-hatched, and labelled "chance", so it is neither
#: hidden nor read as a result (docs/evaluations.md §11).
CHANCE_ALPHA = 0.3
CHANCE_HATCH = "xx"
CHANCE_TEXT = "chance"


# ------------------------------------------------------------------ figures that scale with the models
#: The one threshold of the figures that scale (docs/evaluations.md §15): up to this many models a
#: bar figure draws bars, the comparisons figure lists every pair and the scatters against ImageNet
#: top-1 name every model; past it, bars become sorted dot plots (one row per model), the pairs a
#: model x model matrix per headline, and the scatters name only the study's ``label_models``.
MANY_MODELS = 8


def many_models(n: int) -> bool:
    """Whether ``n`` models are past :data:`MANY_MODELS` (the figures change kind)."""
    return int(n) > MANY_MODELS


def model_fontsize(n: int, few: float = 8.0, least: float = 5.5) -> float:
    """Font size of ``n`` model labels on one axis: ``few`` up to :data:`MANY_MODELS`, then smaller
    down to ``least`` at 30 models and beyond (the figure grows by :func:`row_inches` too)."""
    if not many_models(n):
        return few
    return float(max(least, few - (few - least) * (n - MANY_MODELS) / (30 - MANY_MODELS)))


def row_inches(n: int) -> float:
    """Height of one model row (dot plots, matrices) for ``n`` models: room for a label in
    :func:`model_fontsize` with a gap (0.3 in at few models, 0.2 in at 30)."""
    return max(0.2, 0.3 - 0.1 * max(0, n - MANY_MODELS) / (30 - MANY_MODELS))


#: Colour of each paradigm where a figure colours by paradigm, not by model (the scatters against
#: ImageNet top-1): the first shade of its palette; another paradigm takes the next qualitative colour.
PARADIGM_COLORS: dict[str, str] = {"supervised": PARADIGM_PALETTES["supervised"][0],
                                   "clip": PARADIGM_PALETTES["clip"][0], "self_supervised": OTHER_PALETTE[1]}


def paradigm_colors(paradigms: Sequence[str]) -> dict[str, str]:
    """Paradigm -> colour (:data:`PARADIGM_COLORS`; others in order from :data:`QUALITATIVE`)."""
    out, spare = {}, iter(QUALITATIVE * 3)
    for paradigm in dict.fromkeys(str(p) for p in paradigms):
        out[paradigm] = PARADIGM_COLORS.get(paradigm.lower()) or next(spare)
    return out


def labelled_models(models: Sequence[str], named: Sequence[str] | None = None,
                    paper: Sequence[str] = ()) -> list[str]:
    """The models a scatter names beside their point: the study's ``label_models`` when given;
    otherwise every model up to :data:`MANY_MODELS`, past it only the paper's models (``paper``:
    those with a paper_key). In study order."""
    if named is not None:
        wanted = set(named)
    elif not many_models(len(models)):
        wanted = set(models)
    else:
        wanted = set(paper)
    return [m for m in models if m in wanted]


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def place_labels(ax, points: Sequence[tuple[float, float, str]], fontsize: float = 7.0, **style: Any) -> list:
    """Name points ``(x, y, text)`` in data coordinates, each at the first of a ring of offsets
    (growing) where its box overlaps no label placed before it, no point, and stays inside the axes.
    A thin leader line joins a label moved away from its point. Labels are ``_point_label``
    annotations (tests read them back); returns them."""
    from matplotlib.transforms import Bbox

    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    dots = [ax.transData.transform((x, y)) for x, y, _ in points]
    pad = 3.5 * fig.dpi / 72  # half a marker
    taken = [Bbox.from_extents(px - pad, py - pad, px + pad, py + pad) for px, py in dots]
    directions = [(1, 0.4), (1, -1), (-1, 0.4), (-1, -1), (0, 1.4), (0, -1.8), (1, 1.4), (-1, 1.4)]
    placed = []
    for x, y, text in points:
        label = None
        for radius in (4, 8, 13, 19, 26, 34, 44):
            for dx, dy in directions:
                offset = (dx * radius, dy * radius * 0.8)
                candidate = ax.annotate(text, (x, y), xytext=offset, textcoords="offset points", fontsize=fontsize,
                                        ha="left" if dx > 0 else ("right" if dx < 0 else "center"),
                                        va="center", label="_point_label", zorder=7, **style)
                box = candidate.get_window_extent(renderer)
                inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
                if inside and not any(_overlap(box, other) for other in taken):
                    label = candidate
                    break
                candidate.remove()
            if label is not None:
                break
        if label is None:  # nowhere free: at the first offset, flagged (tests count these)
            label = ax.annotate(text, (x, y), xytext=(4, 2), textcoords="offset points", fontsize=fontsize,
                                va="center", label="_point_label_crowded", zorder=7, **style)
        elif radius > 8:
            ax.annotate("", (x, y), xytext=label.get_position(), textcoords="offset points",
                        arrowprops=dict(arrowstyle="-", color="0.5", linewidth=0.4, shrinkA=0, shrinkB=2),
                        label="_leader", zorder=6)
        taken.append(label.get_window_extent(renderer))
        placed.append(label)
    return placed


CHANCE_NOTE = ("faded, cross-hatched, 'chance': the model's accuracy interval reaches chance "
               "(1 / number of classes): not a result")


#: The legend entry of a point drawn at chance (hollow and faded; dot plots and scatters).
CHANCE_LEGEND = "hollow, faded: at chance (accuracy interval reaches 1 / number of classes), not a result"


def chance_note(fig) -> None:
    """The figure's footnote saying what a faded bar or point means."""
    fig.text(0.01, 0.0, CHANCE_NOTE, fontsize=6, color="0.35", ha="left", va="top", label="_chance_note")


def chance_of(chance: Mapping[str, float] | None, dataset: Any, task: Any = None) -> float | None:
    """The chance top-1 of a dataset (or ``<dataset>/<task>``) from a figure's ``chance`` param
    (``evaluations.chance_levels``), or None when not known."""
    if not chance:
        return None
    if task not in (None, "") and f"{dataset}/{task}" in chance:
        return float(chance[f"{dataset}/{task}"])
    level = chance.get(str(dataset))
    return None if level is None else float(level)


def at_chance(value: float, bounds: tuple[float, float] | None, level: float | None) -> bool:
    """Whether an accuracy is at chance: its interval's lower end (without an interval: the value
    itself) is at or below the chance ``level`` (same units). False when the level is unknown."""
    if level is None or value is None or not np.isfinite(value):
        return False
    low = bounds[0] if bounds is not None and np.isfinite(bounds[0]) else value
    return bool(low <= level * (1 + 1e-9))


def n_text(counts: Sequence[float], per: str = "") -> str:
    """``n=38``, or ``n=16–20 per task`` when the counts differ; "" without counts."""
    values = sorted({int(c) for c in counts if c is not None and np.isfinite(c)})
    if not values:
        return ""
    span = str(values[0]) if len(values) == 1 else f"{values[0]}–{values[-1]}"
    return f"n={span}" + (f" per {per}" if per else "")


def suptitle_above(fig, text: str, fontsize: float = 10, rect: Sequence[float] = (0, 0, 1, 1), **kwargs: Any):
    """The figure title above every panel at any figure size, then ``tight_layout`` below it.

    matplotlib's default ``y=0.98`` is a fraction of the height: inches into a tall figure, over
    the top panels' titles. Here the title hangs 0.08 in below the top edge, and the panels are laid
    out (``rect``: figure fractions) below its measured height plus 0.1 in. Returns the title."""
    height = fig.get_figheight()
    title = fig.suptitle(text, fontsize=fontsize, y=1 - 0.08 / height, va="top", **kwargs)
    box = title.get_window_extent(fig.canvas.get_renderer())
    top = 1 - (0.08 + box.height / fig.dpi + 0.1) / height
    fig.tight_layout(rect=(rect[0], rect[1], rect[2], min(rect[3], top)))
    return title


def empty_note(ax, values: Sequence[float], what: str) -> bool:
    """Write in the panel that every value is zero or missing (a blank axis says nothing); True when
    it did. The text artist is labelled ``_empty`` (tests read it back)."""
    finite = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if len(finite) and np.any(finite != 0):
        return False
    reason = "every value is 0" if len(finite) else "no values"
    ax.text(0.5, 0.5, f"{reason}: {what}", transform=ax.transAxes, ha="center", va="center", fontsize=9,
            color="0.3", bbox=dict(facecolor="white", edgecolor="0.6", boxstyle="round"), label="_empty", zorder=10)
    return True


def clip_upper(values: Sequence[float], floor: float, outlier: float = 5.0) -> float:
    """An upper axis limit robust to a few extreme bars or intervals (e.g. the error ratio of a
    factor with one image): 1.15 x the largest value within ``outlier`` x the median of the positive
    values, at least ``floor``. Bars and interval ends beyond it are clipped and marked with their
    value (:func:`mark_clipped`)."""
    finite = np.asarray([v for v in values if v is not None and np.isfinite(v) and v > 0], dtype=float)
    if not len(finite):
        return floor
    usual = finite[finite <= outlier * np.median(finite)]
    return max(floor, 1.15 * float(usual.max()))


def mark_clipped(ax, positions: Sequence[float], heights: Sequence[float], highs: Sequence[float], top: float) -> int:
    """Where a bar or its interval goes past ``top``: a small arrow at the top of the axis
    (labelled ``_clipped``) and the true numbers (the bar's value, "↑" the interval's end);
    returns how many."""
    count = 0
    for x, height, high in zip(positions, heights, highs):
        past_bar = height is not None and np.isfinite(height) and height > top
        past_end = high is not None and np.isfinite(high) and high > top
        if not (past_bar or past_end):
            continue
        text = "\n".join([*([f"{height:.3g}"] if past_bar else []), *([f"↑{high:.3g}"] if past_end else [])])
        ax.plot([x], [top], marker="^", color="black", markersize=4, linestyle="none", clip_on=False,
                label="_clipped", zorder=6)
        ax.annotate(text, (x, top), xytext=(0, 3), textcoords="offset points", ha="center", va="bottom",
                    fontsize=5.5, annotation_clip=False)
        count += 1
    return count


def legend_outside(target, *args: Any, ax=None, **kwargs: Any):
    """A legend beside the axes (right of ``ax`` for an axes, below the figure for a figure), never
    over the data. ``target``: an Axes or a Figure; the other arguments go to ``legend``."""
    kwargs.setdefault("fontsize", 7)
    kwargs.setdefault("frameon", False)
    if hasattr(target, "add_subplot"):  # a figure: one legend under every panel
        kwargs.setdefault("loc", "upper center")
        kwargs.setdefault("bbox_to_anchor", (0.5, 0.0))
        return target.legend(*args, **kwargs)
    kwargs.setdefault("loc", "upper left")
    kwargs.setdefault("bbox_to_anchor", (1.01, 1.0))
    kwargs.setdefault("borderaxespad", 0.0)
    return target.legend(*args, **kwargs)


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
                 interval=None, chance=None, top: float | None = None) -> None:
    """Bars per group (x) and model; ``value(model, group)`` -> float or NaN; ``paper(key, group)``;
    ``interval(model, group)`` -> (low, high) in the units of ``value``, or None: an error bar on
    the bar (x ``scale`` like the bar), labelled ``_ci:<model>`` (kept out of the legend).
    ``chance(model, group)`` -> True where the model is at chance: that bar faded
    (:data:`CHANCE_ALPHA`), cross-hatched and labelled "chance". ``top``: the axis' upper limit;
    interval ends beyond it are marked (:func:`mark_clipped`)."""
    width = 0.8 / max(len(models), 1)
    x = np.arange(len(groups))
    drew_paper = False
    for k, m in models.iterrows():
        offset = x - 0.4 + width * (k + 0.5)
        heights = np.asarray([value(m["model"], g) for g in groups], dtype=float) * scale
        bars = ax.bar(offset, np.nan_to_num(heights), width=width, color=m["color"], hatch=m["hatch"],
                      edgecolor="black", linewidth=0.4, label=m["label"])
        for xi, h, g, patch in zip(offset, heights, groups, bars):
            if np.isnan(h):
                ax.text(xi, 0, "n/a", rotation=90, ha="center", va="bottom", fontsize=6, color="gray")
            elif chance is not None and chance(m["model"], g):
                patch.set_alpha(CHANCE_ALPHA)
                patch.set_hatch(CHANCE_HATCH)
                ax.text(xi, h, CHANCE_TEXT, rotation=90, ha="center", va="bottom", fontsize=5, color="0.35",
                        label="_chance")
        scaled = [None] * len(groups)
        if interval is not None:
            bounds = [interval(m["model"], g) for g in groups]
            scaled = [None if b is None else _scaled(*b, scale) for b in bounds]
            draw_intervals(ax, offset, scaled, at=heights, label=f"_ci:{m['model']}")
        if top is not None:
            mark_clipped(ax, offset, heights, [np.nan if b is None else b[1] for b in scaled], top)
        if paper is not None and m["paper_key"]:
            published = np.asarray([paper(m["paper_key"], g) for g in groups], dtype=float)
            if np.isfinite(published).any():
                ax.plot(offset, published, label=None if drew_paper else "published (paper)", **PAPER_MARKER)
                drew_paper = True
    ax.set_xticks(x)


# ------------------------------------------------------------------ the paper's paired reading
#: ``layout: paired`` (robustness, transfer, shape bias): the families compared within a paradigm.
PAIRED_FAMILIES = ("vit", "convnet")
FAMILY_NAMES = {"vit": "ViT", "convnet": "ConvNet"}


def paradigm_pairs(models: pd.DataFrame) -> list[tuple[str, pd.Series, pd.Series]]:
    """(paradigm, ViT row, ConvNet row) of each paradigm with both families (``styled_models``
    rows, study order); a paper model (``paper_key``) is preferred, else the first of the family."""
    pairs = []
    for paradigm in dict.fromkeys(models["paradigm"]):
        rows = models[models["paradigm"] == paradigm]
        chosen = []
        for family in PAIRED_FAMILIES:
            of_family = rows[rows["family"].str.lower() == family]
            if of_family.empty:
                break
            paper = of_family[of_family["paper_key"] != ""]
            chosen.append((paper if len(paper) else of_family).iloc[0])
        if len(chosen) == 2:
            pairs.append((str(paradigm), chosen[0], chosen[1]))
    return pairs


def margin_lookup(comparisons: pd.DataFrame | None, dataset: str = "") -> Callable[[str, str], tuple | None]:
    """``lookup(vit, convnet)`` -> (margin, low, high) of ViT - ConvNet from a comparisons table
    (``uncertainty.compare``: the paired bootstrap of the headline), or None."""
    found: dict[tuple[str, str], tuple[float, float, float]] = {}
    if comparisons is not None and len(comparisons):
        rows = as_text(comparisons, "dataset")
        rows = rows[rows["dataset"] == dataset] if dataset else rows
        for _, r in rows.iterrows():
            d, lo, hi = (float(r[c]) for c in ("difference", "ci_low", "ci_high"))
            found[(str(r["model_a"]), str(r["model_b"]))] = (d, lo, hi)
            found[(str(r["model_b"]), str(r["model_a"]))] = (-d, -hi, -lo)
    return lambda a, b: found.get((a, b))


def plot_paired(groups: Sequence[str], labels: Sequence[str], models: pd.DataFrame, value: Callable, paths,
                title: str, ylabel: str, scale: float = 1.0, margin=None, headline_group: str | None = None,
                higher_is_better: bool = True, ylim: tuple[float, float] | None = None, unit: str = "",
                chance: Callable | None = None):
    """The paper's reading: per paradigm (one panel), ViT and ConvNet side by side at each group,
    with the winner and its margin ("+2.3 ViT") above the pair. ``margin(vit, convnet)`` ->
    (ViT - ConvNet, low, high) in displayed units from the paired bootstrap (comparisons), shown
    with its interval at ``headline_group`` (the headline the comparisons cover); elsewhere the
    margin of the two values (no interval: no paired resampling of it). A panel without both
    families says so. ``chance(model, group)`` -> True where the model is at chance there: its bar
    faded (:data:`CHANCE_ALPHA`), cross-hatched and labelled "chance", like the other layouts, and
    no winner is named for that pair ("chance: no margin"). Returns the saved (closed) figure."""
    pairs = paradigm_pairs(models)
    fig, axes = plt.subplots(1, max(1, len(pairs)), figsize=(max(4.0, 0.9 * len(groups) + 2) * max(1, len(pairs)),
                                                                3.8), squeeze=False)
    if not pairs:
        ax = axes[0, 0]
        ax.axis("off")
        ax.text(0.5, 0.5, "layout: paired needs a ViT and a ConvNet model of the same paradigm; this study has none",
                ha="center", va="center", fontsize=9, wrap=True, label="_empty")
    x = np.arange(len(groups))
    guessing: set[tuple[str, str]] = set()
    for ax, (paradigm, vit, conv) in zip(axes[0], pairs):
        heights = {}
        for k, m in enumerate((vit, conv)):
            h = np.asarray([value(m["model"], g) for g in groups], dtype=float) * scale
            heights[m["model"]] = h
            bars = ax.bar(x + (k - 0.5) * 0.38, np.nan_to_num(h), width=0.38, color=m["color"], hatch=m["hatch"],
                          edgecolor="black", linewidth=0.4, label=m["label"])
            for j, (g, patch) in enumerate(zip(groups, bars)):
                if chance is not None and np.isfinite(h[j]) and chance(m["model"], g):
                    patch.set_alpha(CHANCE_ALPHA)
                    patch.set_hatch(CHANCE_HATCH)
                    guessing.add((m["model"], g))
                    ax.text(x[j] + (k - 0.5) * 0.38, h[j], CHANCE_TEXT, rotation=90, ha="center", va="bottom",
                            fontsize=5, color="0.35", label="_chance")
        top = ylim[1] if ylim else np.nanmax([*heights[vit["model"]], *heights[conv["model"]], 0]) * 1.25 or 1.0
        for j, g in enumerate(groups):
            a, b = heights[vit["model"]][j], heights[conv["model"]][j]
            if not (np.isfinite(a) and np.isfinite(b)):
                continue
            if (vit["model"], g) in guessing or (conv["model"], g) in guessing:  # a guess wins nothing
                ax.annotate("chance: no margin", (j, max(a, b)), xytext=(0, 14), textcoords="offset points",
                            ha="center", va="bottom", fontsize=6, color="0.35", label="_margin",
                            annotation_clip=False)
                continue
            paired = margin(vit["model"], conv["model"]) if (margin and g == headline_group) else None
            diff = paired[0] if paired else a - b
            better_vit = diff > 0 if higher_is_better else diff < 0
            winner = FAMILY_NAMES["vit" if better_vit else "convnet"] if diff != 0 else "tie"
            text = f"+{abs(diff):.3g}{unit} {winner}" if diff != 0 else "tie"
            if paired:  # (+ 0.0: no "-0")
                text += f"\n[{paired[1] + 0.0:+.3g}, {paired[2] + 0.0:+.3g}]"
            ax.annotate(text, (j, max(a, b)), xytext=(0, 3), textcoords="offset points", ha="center", va="bottom",
                        fontsize=6.5, label="_margin", annotation_clip=False)
        empty_note(ax, [*heights[vit["model"]], *heights[conv["model"]]], "both models score 0 everywhere")
        ax.set_xticks(x)
        ax.set_xticklabels(labels, fontsize=7, rotation=30 if len(groups) > 4 else 0, ha="right" if len(groups) > 4
                           else "center")
        ax.set_ylim(*(ylim or (0, top)))
        ax.set_title(f"{paradigm}: {FAMILY_NAMES['vit']} vs {FAMILY_NAMES['convnet']}", fontsize=9)
        ax.set_ylabel(ylabel)
        legend_outside(ax, loc="upper center", bbox_to_anchor=(0.5, -0.18))
    fig.suptitle(title + (f"; interval of the margin at {headline_group}: paired bootstrap" if margin and
                          headline_group else ""), fontsize=9)
    fig.tight_layout()
    if guessing:
        chance_note(fig)
    save_figure(fig, paths)
    return fig


# ------------------------------------------------------------------ past MANY_MODELS: sorted dot plots
def dot_panels(groups: Sequence[str], labels: Sequence[str], models: pd.DataFrame, value: Callable, paths,
               title: str, xlabel: str, scale: float = 1.0, interval: Callable | None = None,
               chance: Callable | None = None, sort_by: str | None = None, higher_is_better: bool | None = True,
               n_of: Mapping[str, str] | None = None, xlim: tuple[float, float] | None = None,
               paper: Callable | None = None, reference: float | None = None, max_columns: int = 8):
    """A bar figure past :data:`MANY_MODELS`: one panel per group (``labels``: their names), one
    row per model, sorted by the value at ``sort_by`` (default: the last group, e.g. the average;
    best at the top, a model without a value last) and the same order in every panel, so a model
    is read along its row. A dot in the model's colour and family marker, its interval as a
    horizontal bar; at chance (``chance(model, group)``) the dot is hollow and faded (labelled
    ``_chance``); the published number a black diamond; ``reference`` a dashed line (e.g. error
    ratio 1). ``n_of``: group -> n text under its panel title. Model names in
    :func:`model_fontsize`, rows :func:`row_inches` apart. Returns the saved (closed) figure."""
    groups = list(groups)
    key = sort_by if sort_by in groups else groups[-1]
    keyed = np.asarray([value(m, key) for m in models["model"]], dtype=float)
    signed = keyed if higher_is_better is not False else -keyed
    order = sorted(range(len(models)), key=lambda k: (not np.isfinite(signed[k]), -np.nan_to_num(signed[k])))
    rows = models.iloc[order].reset_index(drop=True)
    n = len(rows)
    columns = min(len(groups), max_columns)
    panel_rows = int(math.ceil(len(groups) / columns))
    size = model_fontsize(n)
    height = row_inches(n) * n + 1.0
    label_inches = max(len(str(x)) for x in rows["label"]) * size * 0.55 / 72
    fig, axes = plt.subplots(panel_rows, columns, figsize=(max(6.0, 0.4 + label_inches + 1.75 * columns),
                                                           height * panel_rows + 0.6), squeeze=False, sharey=True)
    y = np.arange(n)[::-1]
    chance_drawn = False
    for ax in axes.flat[len(groups):]:
        ax.set_visible(False)
    for ax, group, label in zip(axes.flat, groups, labels):
        values = np.asarray([value(m, group) for m in rows["model"]], dtype=float) * scale
        bounds = [None] * n
        if interval is not None:
            bounds = [None if b is None else _scaled(*b, scale) for b in (interval(m, group) for m in rows["model"])]
            draw_intervals(ax, y, bounds, horizontal=True, at=values, label=f"_ci:{group}")
        for k, m in rows.iterrows():
            if not np.isfinite(values[k]):
                ax.text(0.02, y[k], "n/a", transform=ax.get_yaxis_transform(), fontsize=size - 1, color="gray",
                        va="center")
                continue
            guessing = chance is not None and chance(m["model"], group)
            chance_drawn |= bool(guessing)
            ax.plot([values[k]], [y[k]], marker=m["marker"], linestyle="none", markersize=4.5,
                    color=m["color"], markerfacecolor="white" if guessing else m["color"],
                    markeredgecolor=m["color"] if guessing else "black", markeredgewidth=0.6 if guessing else 0.3,
                    alpha=CHANCE_ALPHA if guessing else 1.0, zorder=5,
                    label="_chance" if guessing else f"_dot:{m['model']}")
            if paper is not None and m["paper_key"]:
                published = paper(m["paper_key"], group)
                if published is not None and np.isfinite(published):
                    ax.plot([published], [y[k]], **{**PAPER_MARKER, "markersize": 3}, label="_published")
        if reference is not None:
            ax.axvline(reference, color="black", linestyle="--", linewidth=0.7)
        ax.grid(axis="y", color="0.92", linewidth=0.5)
        ax.set_axisbelow(True)
        if xlim is not None:  # a little past the limits: a dot at 0 or 100 % is drawn whole
            pad = 0.03 * (xlim[1] - xlim[0])
            ax.set_xlim(xlim[0] - pad, xlim[1] + pad)
        ax.tick_params(axis="x", labelsize=6.5)
        n_line = (n_of or {}).get(group, "")
        ax.set_title(str(label) + (f"\n{n_line}" if n_line else "") + (" (sorted by)" if group == key else ""),
                     fontsize=7)
    axes[0, 0].set_yticks(y)
    axes[0, 0].set_yticklabels(rows["label"], fontsize=size)
    for row in axes:
        row[0].tick_params(axis="y", labelleft=True, labelsize=size)
    axes[0, 0].set_ylim(-0.7, n - 0.3)
    for ax in axes[-1]:
        ax.set_xlabel(xlabel, fontsize=7)
    fig.suptitle(f"{title} ({n} models, sorted by {labels[groups.index(key)]}; bar: interval)", fontsize=9)
    handles = [plt.Line2D([], [], marker=FAMILY_STYLES[f][0], linestyle="none", color="0.3", label=name)
               for f, name in (("convnet", "ConvNet"), ("vit", "ViT"), ("other", "other"))
               if (models["family"].str.lower().map(lambda v: v if v in FAMILY_STYLES else "other") == f).any()]
    if paper is not None and models["paper_key"].astype(bool).any():
        handles.append(plt.Line2D([], [], label="published (paper)", **{**PAPER_MARKER, "markersize": 3}))
    if chance_drawn:
        handles.append(plt.Line2D([], [], marker="o", linestyle="none", color="0.3", markerfacecolor="white",
                                  alpha=CHANCE_ALPHA, label=CHANCE_LEGEND))
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_size_inches()[1]))  # room for the suptitle
    legend_outside(fig, handles=handles, ncol=len(handles) if len(handles) < 5 else 3)
    save_figure(fig, paths)
    return fig

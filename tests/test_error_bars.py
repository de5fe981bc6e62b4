"""Error bars from a metric table's ci_low / ci_high (beyond_imagenet/style.py: interval,
interval_lookup, draw_intervals) in every figure that shows a point estimate, read back from the
returned matplotlib figures; and that tables without intervals draw nothing extra."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import tests.test_style as style_tests
from beyond_imagenet.style import (
    draw_intervals,
    interval,
    interval_lookup,
    interval_text,
    plt,
)
from tests.test_style import LABELS, STUDY, _figures

tables = style_tests.tables  # the tables tests/test_style.py builds (module fixture), without intervals

MODEL_LABEL = {r["model"]: r["label"] for r in STUDY}
#: Rows that are counts (or settings): no interval, as the bootstrap leaves them.
COUNTS = {"n_images", "n_images_all", "n_skipped", "n_benchmarks", "n_tasks", "bin_count", "weight_decay",
          "n_train", "n_val", "n_test"}


def _with_intervals(table: pd.DataFrame, path: Path) -> pd.DataFrame:
    """``table`` with asymmetric synthetic intervals around each value (none for counts, and none
    for every fifth row of one model: empty cells next to filled ones), through CSV."""
    from beyond_imagenet.tables import read_table, write_table

    k = np.arange(len(table)) % 7
    value = pd.to_numeric(table["value"], errors="coerce").to_numpy(dtype=float)
    one_model = (table["model"] == "vit_sup_mine").to_numpy()
    blank = table["metric"].isin(COUNTS).to_numpy() | (one_model & (np.arange(len(table)) % 5 == 0))
    low = np.where(blank, np.nan, value - 0.01 - 0.002 * k)
    high = np.where(blank, np.nan, value + 0.015 + 0.001 * k)
    write_table(table.assign(ci_low=low, ci_high=high).to_dict("records"), path)
    return read_table(path)


@pytest.fixture(scope="module")
def ci_tables(tables, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ci_tables")
    return {name: _with_intervals(table, tmp / f"{name}.csv") for name, table in tables.items()}


@pytest.fixture(scope="module")
def ci_figures(ci_tables, tmp_path_factory):
    return _figures(ci_tables, tmp_path_factory.mktemp("ci_figures"))


def _expected(rows: pd.DataFrame, scale: float = 1.0) -> tuple[float, float] | None:
    """The interval a figure should draw for the one selected row (None: no bar)."""
    assert len(rows) == 1, rows
    row = rows.iloc[0]
    if any(pd.isna(row[c]) for c in ("value", "ci_low", "ci_high")):
        return None
    return float(row["ci_low"]) * scale, float(row["ci_high"]) * scale


def _errorbars(ax, label: str):
    """The ErrorbarContainer labelled ``label`` (at most one), or None."""
    found = [c for c in ax.containers if type(c).__name__ == "ErrorbarContainer" and c.get_label() == label]
    assert len(found) <= 1, label
    return found[0] if found else None


def _vertical_segments(container) -> dict[float, tuple[float, float]]:
    """x -> (low, high) of a vertical error bar container."""
    if container is None:
        return {}
    (lines,) = container.lines[2]
    out = {}
    for segment in lines.get_segments():
        (x0, y0), (x1, y1) = segment
        assert x0 == pytest.approx(x1)
        out[round(float(x0), 9)] = (min(y0, y1), max(y0, y1))
    return out


def _check_bars(ax, model: str, expected: list[tuple[float, float] | None]) -> int:
    """The model's bars (container labelled with its label) carry exactly the expected error bars,
    in group order: a bar [low, high] x scale on the bar's centre, none where None. Returns how
    many bars were checked."""
    (bars,) = [c for c in ax.containers if c.get_label() == MODEL_LABEL[model]]
    centres = [round(p.get_x() + p.get_width() / 2, 9) for p in bars]
    assert len(centres) == len(expected)
    segments = _vertical_segments(_errorbars(ax, f"_ci:{model}"))
    assert set(segments) == {x for x, e in zip(centres, expected) if e is not None}, model
    for x, bounds in zip(centres, expected):
        if bounds is not None:
            assert segments[x] == pytest.approx(bounds), (model, x)
    return len(segments)


def _artists_with_interval_labels(fig) -> list:
    """Every artist or container a figure drew for intervals (labels ``_ci:`` / ``_band:``)."""
    found = []
    for ax in fig.axes:
        for artist in [*ax.containers, *ax.get_children()]:
            label = str(artist.get_label())
            if label.startswith(("_ci:", "_band:")) or type(artist).__name__ == "ErrorbarContainer":
                found.append(artist)
    return found


# ---------------------------------------------------------------------------------- helpers
def test_interval_helpers():
    rows = pd.DataFrame({"model": ["a", "b", "c"], "group": ["x", "x", "y"], "value": [0.5, 0.6, 0.7],
                         "ci_low": [0.4, np.nan, 0.65], "ci_high": [0.55, np.nan, 0.8]})
    assert interval(rows) == (0.4, 0.55)
    assert interval(rows.iloc[[1, 2]], scale=100) == pytest.approx((65, 80))
    assert interval(rows.iloc[[1]]) is None and interval(rows.iloc[:0]) is None
    assert interval(rows.drop(columns=["ci_high"])) is None and interval(rows.drop(columns=["ci_low", "ci_high"])) is None
    assert interval(rows.iloc[[0]], scale=-1) == (-0.55, -0.4)  # ordered again
    lookup = interval_lookup(rows, ["model", "group"], scale=100)
    assert lookup("a", "x") == pytest.approx((40, 55)) and lookup("b", "x") is None and lookup("a", "y") is None
    assert interval_lookup(rows.iloc[[1]], ["model"]) is None  # only empty cells: no lookup at all
    assert interval_lookup(rows.drop(columns=["ci_low", "ci_high"]), ["model"]) is None
    # Cells as CSV gives them back when a column holds text (e.g. a stray label): not a number -> none.
    assert interval(rows.astype({"ci_low": object}).assign(ci_low=["0.4", "", "x"]).iloc[[2]]) is None
    assert interval_text((0.0251, 0.0374)) == " [0.025, 0.037]" and interval_text(None) == ""
    assert interval_text((70.04, 72.46), "{:.1f}") == " [70.0, 72.5]"

    fig, ax = plt.subplots()
    assert draw_intervals(ax, [0, 1], [None, (np.nan, 1.0)]) is None
    assert draw_intervals(ax, [0], [(0.1, 0.2)], at=[np.nan]) is None  # a bar drawn as n/a
    assert not ax.containers and not ax.collections and not ax.lines
    # The bar spans [low, high] exactly, even when the estimate lies outside (percentile intervals).
    container = draw_intervals(ax, [0, 1, 2], [(0.1, 0.3), None, (0.5, 0.6)], at=[0.35, 0.4, 0.55], label="_ci:m")
    assert _vertical_segments(container) == {0.0: pytest.approx((0.1, 0.3)), 2.0: pytest.approx((0.5, 0.6))}
    assert ax.get_legend_handles_labels() == ([], [])
    (lines,) = draw_intervals(ax, [3.0], [(0.2, 0.4)], horizontal=True).lines[2]
    assert np.allclose(lines.get_segments()[0], [[0.2, 3.0], [0.4, 3.0]])
    plt.close(fig)


# ------------------------------------------------------------------------- without intervals
def test_without_intervals_nothing_extra_is_drawn(tables, tmp_path):
    """Tables without ci columns, or with the columns but only empty cells, draw no interval
    artist and (the latter) the same files as the former."""
    plain = _figures(tables, tmp_path / "plain")
    for name, fig in plain.items():
        assert not _artists_with_interval_labels(fig), name
    empty = {name: table.assign(ci_low=np.nan, ci_high=np.nan) for name, table in tables.items()}
    blank = _figures(empty, tmp_path / "empty")
    for name, fig in blank.items():
        assert not _artists_with_interval_labels(fig), name
    for path in sorted((tmp_path / "plain").iterdir()):
        assert path.read_bytes() == (tmp_path / "empty" / path.name).read_bytes(), path.name
    for name in ("reliability",):
        for ax in [a for a in plain[name].axes if a.get_visible()]:
            assert "[" not in ax.get_title()


# ------------------------------------------------------------------------------ bar figures
def test_bar_figures_draw_each_interval_on_its_bar(ci_tables, ci_figures):
    from beyond_imagenet.datasets.vtab import GROUPS, TASKS
    from beyond_imagenet.evaluations.imagenet_x import IMAGENET_X_ORDER
    from beyond_imagenet.evaluations.robustness import BENCHMARK_ORDER
    from beyond_imagenet.metrics.pug import PUG_SUBSETS
    from beyond_imagenet.style import as_text

    checked = {}
    # Robustness: top-1 x 100 per benchmark (overall rows), one axis.
    table = as_text(ci_tables["robustness"], "benchmark", "corruption")
    overall = table[(table["metric"] == "top1") & (table["corruption"] == "")]
    benchmarks = [b for b in BENCHMARK_ORDER if b in set(overall["benchmark"])]
    assert set(benchmarks) == set(overall["benchmark"]) and len(benchmarks) >= 3
    (ax,) = ci_figures["robustness"].axes
    for model in MODEL_LABEL:
        expected = [_expected(overall[(overall["model"] == model) & (overall["benchmark"] == b)], 100)
                    for b in benchmarks]
        checked[("robustness", model)] = _check_bars(ax, model, expected)

    # ImageNet-X: error ratio (scale 1) per factor, supervised and CLIP panels.
    table = as_text(ci_tables["imagenet_x"], "factor")
    data = table[(table["metric"] == "error_ratio") & (table["dataset"] == "imagenet_val")]
    supervised, clip = ci_figures["imagenet_x"].axes
    for model in MODEL_LABEL:
        ax = clip if model == "convnext_clip" else supervised
        expected = [_expected(data[(data["model"] == model) & (data["factor"] == f)]) for f in IMAGENET_X_ORDER]
        checked[("imagenet_x", model)] = _check_bars(ax, model, expected)

    # PUG: top-1 x 100 per subset and the average.
    data = ci_tables["pug"][ci_tables["pug"]["metric"] == "top1"]
    subsets = [s for s in (*PUG_SUBSETS, "Average") if s in set(data["subset"])]
    (ax,) = ci_figures["pug"].axes
    for model in MODEL_LABEL:
        expected = [_expected(data[(data["model"] == model) & (data["subset"] == s)], 100) for s in subsets]
        checked[("pug", model)] = _check_bars(ax, model, expected)

    # Transfer: per task (left) and the group means (right), x 100.
    data = ci_tables["transfer"][ci_tables["transfer"]["metric"] == "test_top1"]
    tasks = [t for t in TASKS if t in set(data["task"])]
    groups = [g for g in (*GROUPS, "all") if g in set(data.loc[data["task"] == "mean", "group"])]
    ax_tasks, ax_groups = ci_figures["transfer"].axes
    for model in MODEL_LABEL:
        mine = data[data["model"] == model]
        checked[("transfer", model)] = _check_bars(ax_tasks, model, [_expected(mine[mine["task"] == t], 100)
                                                                    for t in tasks])
        checked[("transfer mean", model)] = _check_bars(
            ax_groups, model, [_expected(mine[(mine["task"] == "mean") & (mine["group"] == g)], 100) for g in groups])
    # Every figure drew bars for every model, and the model with blanked cells got fewer.
    assert all(n > 0 for n in checked.values()), {k: n for k, n in checked.items() if not n}
    assert checked[("transfer", "vit_sup_mine")] < checked[("transfer", "vit_sup")] == len(tasks)
    # Thin black lines with caps, out of the legend.
    container = _errorbars(ax_tasks, "_ci:vit_sup")
    (lines,) = container.lines[2]
    assert {tuple(c) for c in lines.get_colors()} == {(0.0, 0.0, 0.0, 1.0)} and lines.get_linewidths()[0] < 1
    assert len(container.lines[1]) == 2  # caps
    assert not any(str(label).startswith("_ci") for label in ax_tasks.get_legend_handles_labels()[1])


# -------------------------------------------------------------------- points, lines, titles
def test_shape_bias_intervals(ci_tables, ci_figures):
    from beyond_imagenet.metrics.shape_bias import CATEGORIES
    from beyond_imagenet.style import as_text

    table = as_text(ci_tables["shape_bias"], "category")
    data = table[table["metric"] == "shape_bias"]
    (ax,) = [a for a in ci_figures["shape_bias"].axes if a.get_lines()]
    drew = 0
    for k, model in enumerate(MODEL_LABEL):
        rows = data[data["model"] == model]
        jitter = (k - (len(MODEL_LABEL) - 1) / 2) * 0.12
        # Horizontal bars through the per-category points: y = category row + the model's jitter.
        container = _errorbars(ax, f"_ci:{model}")
        segments = {}
        if container is not None:
            (lines,) = container.lines[2]
            for (x0, y0), (x1, y1) in lines.get_segments():
                assert y0 == pytest.approx(y1)
                segments[round(float(y0), 9)] = (min(x0, x1), max(x0, x1))
        expected = {round(CATEGORIES.index(c) + jitter, 9): _expected(rows[rows["category"] == c])
                    for c in rows.loc[rows["category"] != "", "category"]}
        assert segments.keys() == {y for y, e in expected.items() if e is not None}, model
        for y, bounds in segments.items():
            assert bounds == pytest.approx(expected[y])
        drew += len(segments)
        # The overall interval: a band of the model's colour, and in the legend entry.
        bounds = _expected(rows[rows["category"] == ""])
        bands = [p for p in ax.patches if p.get_label() == f"_band:{model}"]
        legend = [str(ln.get_label()) for ln in ax.get_lines() if str(ln.get_label()).startswith(f"{MODEL_LABEL[model]}:")]
        if bounds is None:
            assert not bands and "[" not in legend[0]
        else:
            (band,) = bands
            assert (band.get_x(), band.get_x() + band.get_width()) == pytest.approx(bounds)
            mean = rows.loc[rows["category"] == "", "value"].iloc[0]
            assert legend == [f"{MODEL_LABEL[model]}: {mean:.3f} [{bounds[0]:.3f}, {bounds[1]:.3f}]"]
    assert drew > 0


def test_reliability_and_confidence_intervals(ci_tables, ci_figures):
    table = ci_tables["calibration"]
    n_bars = 0
    for ax in [a for a in ci_figures["reliability"].axes if a.get_visible()]:
        model = LABELS[ax.get_title().split("\n")[0]]
        rows = table[(table["model"] == model) & (table["dataset"] == "imagenet_r")]
        acc = rows[rows["metric"] == "bin_accuracy"]
        centres = (acc["bin_lower"].astype(float) + acc["bin_upper"].astype(float)) / 2
        expected = {round(float(x), 9): _expected(acc.iloc[[i]]) for i, x in enumerate(centres)}
        segments = _vertical_segments(_errorbars(ax, "_ci:accuracy"))
        assert segments.keys() == {x for x, e in expected.items() if e is not None}, model
        for x, bounds in segments.items():
            assert bounds == pytest.approx(expected[x])
        n_bars += len(segments)
        # Title: "ECE 0.461 [0.433, 0.489] ...\nacc 23.0% [18.1, 27.9]" where the summary rows have one.
        ece, ece_ci = rows[rows["metric"] == "ece"], _expected(rows[rows["metric"] == "ece"])
        acc_row = rows[rows["metric"] == "accuracy"]
        acc_ci = _expected(acc_row, 100)
        title = ax.get_title()
        assert f"ECE {ece['value'].iloc[0]:.3f}" in title
        if ece_ci is not None:
            assert f"ECE {ece['value'].iloc[0]:.3f} [{ece_ci[0]:.3f}, {ece_ci[1]:.3f}]" in title
        if acc_ci is not None:
            assert f"acc {acc_row['value'].iloc[0]:.1%} [{acc_ci[0]:.1f}, {acc_ci[1]:.1f}]" in title
        if ece_ci is None and acc_ci is None:
            assert "[" not in title
    assert n_bars > 0
    bands = 0
    for ax in [a for a in ci_figures["confidence"].axes if a.get_visible()]:
        model = LABELS[ax.get_title().split("\n")[0]]  # first line: the label; then n
        rows = table[(table["model"] == model) & (table["dataset"] == "imagenet_val")]
        for metric in ("mean_confidence", "accuracy"):
            bounds = _expected(rows[rows["metric"] == metric])
            found = [p for p in ax.patches if p.get_label() == f"_band:{metric}"]
            if bounds is None:
                assert not found
            else:
                (band,) = found
                assert (band.get_x(), band.get_x() + band.get_width()) == pytest.approx(bounds)
                bands += 1
        # The bin shares are counts: no error bars.
        assert not [c for c in ax.containers if type(c).__name__ == "ErrorbarContainer"]
    assert bands > 0


def test_invariance_band_per_model(ci_tables, ci_figures):
    from matplotlib.colors import to_hex

    from beyond_imagenet.style import model_styles

    styles = model_styles(ci_tables["invariance"])
    for name, metric, scale in (("invariance_top1", "top1", 100.0), ("invariance_prob", "true_class_prob", 1.0)):
        table = ci_tables["invariance"]
        data = table[(table["metric"] == metric) & table["level"].notna()]
        n_bands = 0
        for ax, kind in zip(ci_figures[name].axes, ("scale", "shift", "resolution")):
            for model in MODEL_LABEL:
                rows = data[(data["model"] == model) & (data["transform"] == kind)]
                expected = {float(level): _expected(rows[rows["level"] == level], scale) for level in rows["level"]}
                bands = [c for c in ax.collections if c.get_label() == f"_band:{model}"]
                if all(e is None for e in expected.values()):
                    assert not bands
                    continue
                (band,) = bands
                assert to_hex(band.get_facecolor()[0], keep_alpha=False) == styles[model].color
                vertices = np.concatenate([p.vertices for p in band.get_paths()])
                for level, bounds in expected.items():
                    at = vertices[np.isclose(vertices[:, 0], level), 1]
                    if bounds is None:
                        continue
                    assert (at.min(), at.max()) == pytest.approx(bounds), (name, kind, model, level)
                n_bands += 1
        assert n_bands > 0, name


# -------------------------------------------------------------------------------- profile
def test_profile_carries_and_shows_intervals(tables, ci_tables, tmp_path):
    from beyond_imagenet.evaluations import EVALUATIONS
    from beyond_imagenet.profile import build_profile, plot_profile, write_profile
    from beyond_imagenet.tables import read_table

    plain = build_profile(tables)
    assert "ci_low" not in plain.columns and "ci_high" not in plain.columns
    profile = build_profile(ci_tables)
    assert list(profile.columns) == [*plain.columns[:list(plain.columns).index("value") + 1], "ci_low", "ci_high",
                                     *plain.columns[list(plain.columns).index("value") + 1:]]
    pd.testing.assert_frame_equal(profile.drop(columns=["ci_low", "ci_high"]), plain)
    # Scaled like the value: robustness (x 100) of one model against its table row.
    (headline,) = EVALUATIONS["robustness"].headlines
    row = profile[(profile["evaluation"] == "robustness") & (profile["model"] == "vit_sup")].iloc[0]
    source = ci_tables["robustness"]
    source = source[(source["model"] == "vit_sup") & (source["benchmark"] == "average") & (source["metric"] == "top1")]
    assert headline.scale == 100
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((100 * source["ci_low"].iloc[0], 100 * source["ci_high"].iloc[0]))
    write_profile(profile, tmp_path / "profile.csv")
    again = read_table(tmp_path / "profile.csv")
    fig = plot_profile(again, [tmp_path / "profile.png"])
    (ax,) = fig.axes
    texts = {(round(t.get_position()[0]), round(t.get_position()[1])): t.get_text() for t in ax.texts}
    headlines = list(dict.fromkeys(again["headline"]))
    models = list(dict.fromkeys(again["model"]))
    with_interval = 0
    for _, r in again.iterrows():
        text = texts[(headlines.index(r["headline"]), models.index(r["model"]))]
        if pd.isna(r["value"]):
            assert text == "–"
        elif pd.isna(r["ci_low"]) or pd.isna(r["ci_high"]):
            assert text == f"{r['value']:.3g}"
        else:
            value, bounds = text.split("\n")
            assert value == f"{r['value']:.3g}"
            low, high = (float(b) for b in bounds.strip("[]").split(", "))
            decimals = len(bounds.split(", ")[0].split(".")[1]) if "." in bounds else 0
            assert (low, high) == pytest.approx((r["ci_low"], r["ci_high"]), abs=0.51 * 10 ** -decimals)
            with_interval += 1
    assert with_interval > 0
    # No interval anywhere: the cells show the value alone.
    fig = plot_profile(plain, [tmp_path / "plain.png"])
    assert not any("[" in t.get_text() for t in fig.axes[0].texts)

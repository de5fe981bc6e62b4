"""Figures that scale (issue #21, item 2): each figure chooses its kind by the number of models
(``style.MANY_MODELS``), tested at 4 and at 30 models on synthetic tables. Read back from the
returned matplotlib figures: the kind of plot, every model present, no two texts overlapping, the
legend outside every axes, the n stated."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from beyond_imagenet.style import MANY_MODELS, plt
from tests.test_honest_figures import _legends_clear_of_axes

REFERENCE = "top-1 % (imagenet_val)"
ROBUSTNESS = "robustness: mean top-1 % of shifted sets"
FAMILIES = ("convnet", "vit", "other")
PARADIGMS = ("supervised", "clip", "self_supervised")


def _models(n: int) -> list[dict]:
    out = []
    for k in range(n):
        paper = {0: "convnext_sup", 1: "vit_clip"}.get(k, "")
        out.append({"model": f"m{k:02d}", "label": f"Model {k:02d} ({FAMILIES[k % 3]}, {PARADIGMS[k % 3 - 1]})",
                    "family": FAMILIES[k % 3], "paradigm": PARADIGMS[(k // 2) % 3], "paper_key": paper,
                    "training_data": "in1k" if k % 2 else "laion"})
    return out


def _sigmoid(v):
    return 1 / (1 + np.exp(-v))


def _logit(p):
    return np.log(p / (1 - p))


def _study(n: int, seed: int = 0):
    """(models, profile, robustness table) of ``n`` models: top-1 spread 50–85 %, the shifted average
    on a logit-linear line plus noise, an ECE, a shape bias; m03 at chance on the shape bias."""
    rng = np.random.default_rng(seed)
    models = _models(n)
    top1 = np.sort(rng.uniform(0.5, 0.85, n))[rng.permutation(n)]
    shifted = _sigmoid(1.1 * _logit(top1) - 0.8 + rng.normal(0, 0.15, n))
    rows, robustness = [], []
    for k, m in enumerate(models):
        base = {c: m[c] for c in ("model", "label", "family", "paradigm", "paper_key", "training_data")}
        for evaluation, headline, value, half, better, n_text in (
                ("accuracy", REFERENCE, 100 * top1[k], 1.5, True, "n=500"),
                ("robustness", ROBUSTNESS, 100 * shifted[k], 1.2, True, "n=200 per set"),
                ("calibration", "ECE (imagenet_val)", rng.uniform(0.02, 0.2), 0.01, False, "n=500"),
                ("shape_bias", "shape bias (cue)", rng.uniform(0.2, 0.7), 0.04, True, "n=160")):
            rows.append({**base, "evaluation": evaluation, "headline": headline, "value": value,
                         "ci_low": value - half, "ci_high": value + half, "higher_is_better": better, "n": n_text,
                         "at_chance": evaluation == "shape_bias" and m["model"] == "m03"})
        for benchmark, value in (("imagenet_val", top1[k]), ("average", shifted[k])):
            robustness.append({**base, "dataset": "", "benchmark": benchmark, "corruption": "", "severity": "",
                               "metric": "top1", "value": value})
    from beyond_imagenet.evaluations.robustness import effective_robustness_rows

    robustness += effective_robustness_rows(robustness, {m["model"]: m for m in models},
                                            {"effective_robustness_min_models": 3})
    return models, pd.DataFrame(rows), pd.DataFrame(robustness)


def _drawn_texts(fig) -> list:
    """The texts a saved figure shows: titles, axis labels, tick labels within the view (matplotlib
    keeps ticks past the limits, undrawn), annotations, legends, figure texts."""
    texts = [*fig.texts, *([fig._suptitle] if fig._suptitle else [])]
    for legend in [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]:
        texts += legend.get_texts()
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        texts += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label, *ax.texts]
        for axis in (ax.xaxis, ax.yaxis):
            low, high = sorted(axis.get_view_interval())
            span = (high - low) * 1e-6
            for tick in axis.get_major_ticks():
                if low - span <= tick.get_loc() <= high + span:
                    texts += [label for label in (tick.label1, tick.label2) if label.get_visible()]
    return list({id(t): t for t in texts}.values())


def _texts(fig):
    """(text, window extent) of every visible, non-empty text the saved figure shows."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    return [(text, text.get_window_extent(renderer)) for text in _drawn_texts(fig)
            if text.get_visible() and text.get_text().strip()]


def _no_text_overlaps(fig) -> int:
    """No two texts of the figure overlap (a 0.5 px tolerance for touching boxes); returns how many."""
    boxes = _texts(fig)
    for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2):
        overlap = (min(box_a.x1, box_b.x1) - max(box_a.x0, box_b.x0) > 0.5
                   and min(box_a.y1, box_b.y1) - max(box_a.y0, box_b.y0) > 0.5)
        assert not overlap, (a.get_text(), b.get_text())
    _suptitle_above_panels(fig)
    return len(boxes)


def _suptitle_above_panels(fig) -> None:
    """The figure title sits above every panel with its title and labels (matplotlib's default
    ``y=0.98`` is a fraction: inches into a tall figure, over the top panels' titles)."""
    if not fig._suptitle or not fig._suptitle.get_text().strip():
        return
    renderer = fig.canvas.get_renderer()
    bottom = fig._suptitle.get_window_extent(renderer).y0
    for ax in fig.axes:
        if ax.get_visible():
            top = ax.get_tightbbox(renderer).y1
            assert top <= bottom + 0.5, (fig._suptitle.get_text(), ax.get_title(), top, bottom)


def _panels(fig):
    return [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]


# --------------------------------------------------------------------- each headline vs ImageNet
@pytest.mark.parametrize("n", [4, 30])
def test_vs_imagenet_scales(tmp_path, n):
    from beyond_imagenet.vs_imagenet import plot_vs_imagenet

    models, profile, robustness = _study(n)
    fig = plot_vs_imagenet(profile, [tmp_path / "vs.png", tmp_path / "vs.pdf"], REFERENCE, robustness)
    assert (tmp_path / "vs.png").stat().st_size > 1000 and (tmp_path / "vs.pdf").is_file()
    panels = _panels(fig)
    assert len(panels) == 3  # every headline but the reference
    for ax in panels:
        points = {line.get_label() for line in ax.lines if line.get_label().startswith("_point:")}
        assert points == {f"_point:{m['model']}" for m in models}  # every model present
        assert "n=" in ax.get_title() and f"{n} models" in ax.get_title()  # n stated
        labels = [t for t in ax.texts if t.get_label() == "_point_label"]
        crowded = [t for t in ax.texts if t.get_label() == "_point_label_crowded"]
        assert not crowded
        if n <= MANY_MODELS:  # every model named
            assert len(labels) == n
        else:  # past the threshold: only the paper's models by default
            assert sorted(t.get_text() for t in labels) == sorted(m["label"] for m in models if m["paper_key"])
    robust = next(ax for ax in panels if ax.get_title().startswith(ROBUSTNESS))
    assert [line for line in robust.lines if line.get_label() == "_fit"]  # the logit-linear fit drawn
    gaps = [line for line in robust.lines if line.get_label() == "_effective_robustness"]
    assert len(gaps) == n and "effective robustness" in robust.get_title()
    shape = next(ax for ax in panels if ax.get_title().startswith("shape bias"))
    (guess,) = [line for line in shape.lines if line.get_label() == "_point:m03"]
    assert guess.get_alpha() < 1 and guess.get_markerfacecolor() == "white"  # at chance: faded
    assert _legends_clear_of_axes(fig) == 1
    _no_text_overlaps(fig)
    width, height = fig.get_size_inches()  # panels grow with the models: 3.4 in at 4, 4.8 in at 30
    assert (width, height) == pytest.approx((3 * 4.3, 3.95) if n == 4 else (3 * 5.7, 5.35))
    plt.close("all")


def test_vs_imagenet_names_the_studys_label_models_without_overlap(tmp_path):
    """30 models, the study's label_models: 8 of them, three with nearly the same point."""
    from beyond_imagenet.vs_imagenet import plot_vs_imagenet

    models, profile, robustness = _study(30, seed=3)
    named = ["m05", "m06", "m07", "m10", "m11", "m20", "m21", "m29"]
    crowd = profile["model"].isin(["m05", "m06", "m07"])
    profile.loc[crowd & (profile["headline"] == REFERENCE), "value"] = [70.0, 70.2, 70.4]
    profile.loc[crowd & (profile["headline"] == "ECE (imagenet_val)"), "value"] = [0.10, 0.101, 0.102]
    fig = plot_vs_imagenet(profile, [tmp_path / "vs.png"], REFERENCE, robustness, label_models=named)
    label = {m["model"]: m["label"] for m in models}
    for ax in _panels(fig):
        texts = sorted(t.get_text() for t in ax.texts if t.get_label().startswith("_point_label"))
        assert texts == sorted(label[m] for m in named)
        assert not [t for t in ax.texts if t.get_label() == "_point_label_crowded"]
    _no_text_overlaps(fig)
    plt.close("all")


# --------------------------------------------------------------------- bars -> sorted dot plots
def _robustness_table(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    rows = []
    for m in _models(n):
        for benchmark, dataset in (("imagenet_val", "imagenet_val"), ("imagenet_r", "imagenet_r"),
                                   ("imagenet_sketch", "imagenet_sketch"), ("average", "")):
            value = rng.uniform(0.1, 0.8) if m["model"] != "m02" else 0.002
            head = {**m, "dataset": dataset, "benchmark": benchmark, "corruption": "", "severity": ""}
            rows.append({**head, "metric": "top1", "value": value, "ci_low": value - 0.02, "ci_high": value + 0.02})
            if benchmark != "average":
                rows.append({**head, "metric": "n_images", "value": 200, "ci_low": np.nan, "ci_high": np.nan})
        rows.append({**m, "dataset": "", "benchmark": "average", "corruption": "", "severity": "",
                     "metric": "n_benchmarks", "value": 2, "ci_low": np.nan, "ci_high": np.nan})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("n", [4, 30])
def test_robustness_bars_become_a_sorted_dot_plot_past_the_threshold(tmp_path, n):
    from beyond_imagenet.evaluations.robustness import plot_robustness

    table = _robustness_table(n)
    chance = {"imagenet_val": 0.001, "imagenet_r": 0.005, "imagenet_sketch": 0.001}
    fig = plot_robustness(table, [tmp_path / "r.png"], chance=chance)
    panels = _panels(fig)
    if n <= MANY_MODELS:  # bars, one container per model
        (ax,) = panels
        assert len([c for c in ax.containers if c.get_label() in {m["label"] for m in _models(n)}]) == n
    else:  # one panel per benchmark, one row per model, sorted by the average (best at the top)
        from matplotlib.container import BarContainer

        assert len(panels) == 4 and not any(isinstance(c, BarContainer) for ax in panels for c in ax.containers)
        ticks = [t.get_text() for t in panels[0].get_yticklabels()]
        assert sorted(ticks) == sorted(m["label"] for m in _models(n))  # every model present
        average = table[(table["benchmark"] == "average") & (table["metric"] == "top1")].set_index("label")["value"]
        ordered = [average[t] for t in ticks]  # tick labels top to bottom: best first
        assert ordered == sorted(ordered, reverse=True)
        assert all("n=200" in ax.get_title() for ax in panels[:3])  # n stated
        assert any(line.get_label() == "_chance" for ax in panels for line in ax.lines)  # m02: faded
        assert panels[0].get_yticklabels()[0].get_fontsize() < 8  # smaller names at 30 models
    assert _legends_clear_of_axes(fig) == 1
    _no_text_overlaps(fig)
    plt.close("all")


# --------------------------------------------------------------------- comparisons: pairs -> matrix
def _comparisons(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(2)
    models = _models(n)
    rows = []
    for headline, images in (("top-1 % (imagenet_val)", 500), ("ECE (imagenet_val)", 500)):
        for a, b in itertools.combinations(models, 2):
            d = rng.normal(0, 3)
            rows.append({"evaluation": "x", "headline": headline, "dataset": "imagenet_val", "model_a": a["model"],
                         "model_b": b["model"], "label_a": a["label"], "label_b": b["label"], "difference": d,
                         "ci_low": d - 2, "ci_high": d + 2, "mcnemar_p": np.nan,
                         "distinguishable": bool(abs(d) > 2), "n": images})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("n", [4, 30])
def test_comparisons_become_a_matrix_past_the_threshold_and_state_n(tmp_path, n):
    from beyond_imagenet.uncertainty import plot_comparisons

    table = _comparisons(n)
    fig = plot_comparisons(table, [tmp_path / "c.png"])
    panels = _panels(fig)
    assert len(panels) == 2 and all("n=500 images" in ax.get_title() for ax in panels)
    if n <= MANY_MODELS:  # every pair a row
        assert all(len(ax.get_yticklabels()) == n * (n - 1) // 2 for ax in panels)
        assert not any(ax.get_images() for ax in panels)
        _no_text_overlaps(fig)
    else:  # a model x model matrix, every model on both axes, a dot where the interval excludes 0
        for ax in panels:
            (image,) = ax.get_images()
            matrix = np.ma.getdata(image.get_array())
            assert matrix.shape == (n, n) and np.allclose(matrix, -matrix.T, equal_nan=True)
            assert [t.get_text() for t in ax.get_yticklabels()] == [m["label"] for m in _models(n)]
            (dots,) = [line for line in ax.lines if line.get_label() == "_significant"]
            significant = table[(table["headline"] == ax.get_title().split("\n")[0]) & table["distinguishable"]]
            assert len(dots.get_xdata()) == 2 * len(significant)
        _no_text_overlaps(fig)
    plt.close("all")


def test_compute_comparisons_carries_n_to_the_figure(tmp_path):
    """comparisons.csv through write / read: the n column survives and the figure states it."""
    from beyond_imagenet.tables import read_table
    from beyond_imagenet.uncertainty import COMPARISON_COLUMNS, plot_comparisons, write_comparisons

    assert "n" in COMPARISON_COLUMNS
    rows = _comparisons(3).to_dict("records")
    write_comparisons(rows, tmp_path / "comparisons.csv")
    table = read_table(tmp_path / "comparisons.csv")
    assert (table["n"] == 500).all()
    fig = plot_comparisons(table, [tmp_path / "c.png"])
    assert all(ax.get_title().endswith("n=500 images") for ax in _panels(fig))
    # what n counts: CKA resamples batches, not images
    cka = _comparisons(3).assign(headline="mean layer-to-layer CKA (val)", n=2, n_unit="batches")
    fig = plot_comparisons(cka, [tmp_path / "k.png"])
    assert _panels(fig)[0].get_title().endswith("n=2 batches")
    plt.close("all")


# --------------------------------------------------------------------- layout: paired, at chance
def test_paired_layout_fades_a_model_at_chance(tmp_path):
    from beyond_imagenet.evaluations.robustness import plot_robustness_paired
    from beyond_imagenet.style import CHANCE_ALPHA, CHANCE_HATCH

    rows = []
    models = [{"model": m, "label": m, "family": f, "paradigm": p, "paper_key": ""}
              for m, f, p in (("vs", "vit", "supervised"), ("cs", "convnet", "supervised"))]
    top1 = {"vs": (0.8, 0.6), "cs": (0.0005, 0.004)}  # cs: random weights, at chance everywhere
    for m in models:
        val, shifted = top1[m["model"]]
        for benchmark, dataset, value in (("imagenet_val", "imagenet_val", val), ("imagenet_r", "imagenet_r", shifted),
                                          ("average", "", shifted)):
            rows.append({**m, "dataset": dataset, "benchmark": benchmark, "corruption": "", "severity": "",
                         "metric": "top1", "value": value, "ci_low": value * 0.8, "ci_high": value * 1.2 + 0.001})
        rows.append({**m, "dataset": "", "benchmark": "average", "corruption": "", "severity": "",
                     "metric": "n_benchmarks", "value": 1, "ci_low": np.nan, "ci_high": np.nan})
    chance = {"imagenet_val": 0.001, "imagenet_r": 0.005}
    fig = plot_robustness_paired(pd.DataFrame(rows), [tmp_path / "p.png"], chance=chance)
    (ax,) = fig.axes
    (vit,) = [c for c in ax.containers if c.get_label() == "vs"]
    (conv,) = [c for c in ax.containers if c.get_label() == "cs"]
    assert all(p.get_alpha() == CHANCE_ALPHA and p.get_hatch() == CHANCE_HATCH for p in conv)
    assert not any(p.get_alpha() == CHANCE_ALPHA for p in vit)
    assert len([t for t in ax.texts if t.get_label() == "_chance"]) == 3
    margins = [t.get_text() for t in ax.texts if t.get_label() == "_margin"]
    assert margins == ["chance: no margin"] * 3  # a guess wins nothing
    assert any(t.get_label() == "_chance_note" for t in fig.texts)
    # Without chance levels: drawn as before, margins named.
    fig = plot_robustness_paired(pd.DataFrame(rows), [tmp_path / "q.png"])
    assert [t.get_text() for t in fig.axes[0].texts if t.get_label() == "_margin"][0].endswith("ViT")
    plt.close("all")


def test_label_models_is_a_study_setting_of_its_models():
    from conftest import default_config

    from beyond_imagenet.study import ConfigError, validate_config

    config = default_config()
    assert "label_models" not in validate_config(default_config())  # absent: the figure's default
    first = next(iter(config["models"]))
    config["label_models"] = [first]
    assert validate_config(config)["label_models"] == [first]
    config = default_config()
    config["label_models"] = [first, "no_such_model"]
    with pytest.raises(ConfigError, match="label_models.*no_such_model"):
        validate_config(config)


@pytest.mark.parametrize("n", [4, 30])
def test_transfer_bars_become_a_sorted_dot_plot_past_the_threshold(tmp_path, n):
    from beyond_imagenet.datasets.vtab import TASKS
    from beyond_imagenet.evaluations.transfer import plot_transfer, transfer_rows
    from beyond_imagenet.paper_results import load_paper_results

    rng = np.random.default_rng(4)
    models = _models(n)
    results = [{"model": m["model"], "dataset": "vtab", "task": t, "test_top1": rng.random(), "val_top1": 0.5,
                "weight_decay": 1e-3, "n_train": 800, "n_val": 200, "n_test": 50} for m in models for t in TASKS]
    table = pd.DataFrame(transfer_rows(results, {m["model"]: m for m in models}))
    fig = plot_transfer(table, "vtab", [tmp_path / "t.png"], paper_top1=load_paper_results()["vtab"]["top1"])
    panels = _panels(fig)
    from matplotlib.container import BarContainer

    bars = [c for ax in panels for c in ax.containers if isinstance(c, BarContainer)]
    if n <= MANY_MODELS:
        assert len(panels) == 2 and len(bars) == 2 * n
    else:  # a panel per task and per group mean, every model a row
        assert not bars and len(panels) == len(TASKS) + 4
        assert sorted(t.get_text() for t in panels[0].get_yticklabels()) == sorted(m["label"] for m in models)
        assert all("n=50" in ax.get_title() for ax in panels[:len(TASKS)])
        _no_text_overlaps(fig)
    assert _legends_clear_of_axes(fig) == 1
    plt.close("all")


# ------------------------------------------------------------------------------ CKA cross-model
def _cka_matrices(n: int, seed: int = 0) -> list:
    """Within and every cross matrix of ``n`` models (4 to 6 blocks each), CKA in [0.2, 1]."""
    from beyond_imagenet.evaluations.cka.passes import CkaMatrix

    rng = np.random.default_rng(seed)
    layers = {f"m{k:02d}": [f"blocks.{b}" for b in range(4 + k % 3)] for k in range(n)}
    out = [CkaMatrix(m, m, "within", ls, ls, rng.uniform(0.2, 1, (len(ls), len(ls)))) for m, ls in layers.items()]
    out += [CkaMatrix(a, b, "cross", layers[a], layers[b], rng.uniform(0.2, 1, (len(layers[a]), len(layers[b]))))
            for a, b in itertools.combinations(layers, 2)]
    return out


@pytest.mark.parametrize("n", [4, 30])
def test_cka_cross_becomes_a_model_matrix_past_the_threshold(tmp_path, n):
    """Up to MANY_MODELS one layer heatmap per pair; past it a model x model matrix of each pair's
    last-layer CKA (every model on both axes) and the heatmaps of the labelled models' pairs only:
    one panel per pair made a 255-inch figure at 30 models."""
    from beyond_imagenet.evaluations.cka import MAX_CROSS_PANELS, plot_cka

    matrices = _cka_matrices(n)
    labels = {m["model"]: m["label"] for m in _models(n)}
    named = ["m00", "m01", "m02", "m03"]
    fig = plot_cka(matrices, "cross", labels, "imagenet_val", 64, [tmp_path / "cka.png"], label_models=named)
    panels = [ax for ax in _panels(fig) if ax.get_images()]
    width, height = fig.get_size_inches()
    if n <= MANY_MODELS:
        assert len(panels) == n * (n - 1) // 2
        assert all("rows: " in ax.get_title() and "columns: " in ax.get_title() for ax in panels)
    else:
        summary, *pairs = panels
        assert summary.get_images()[0].get_array().shape == (n, n)
        assert [t.get_text() for t in summary.get_yticklabels()] == list(labels.values())
        assert [t.get_text() for t in summary.get_xticklabels()] == list(labels.values())
        cka = {(m.model_a, m.model_b): m.cka[-1, -1] for m in matrices if m.kind == "cross"}
        assert np.isclose(np.ma.getdata(summary.get_images()[0].get_array())[0, 1], cka[("m00", "m01")])
        assert len(pairs) == min(MAX_CROSS_PANELS, 6) and height < 30 and width < 30
        assert all(ax.get_title().startswith("rows: Model 0") for ax in pairs[:3])
    assert "n=64" in fig._suptitle.get_text()
    _no_text_overlaps(fig)
    plt.close("all")


def test_cka_cross_past_the_threshold_says_why_no_heatmap(tmp_path):
    """No labelled model (no label_models, no paper model): the matrix alone, and the title says how
    to get the layer heatmaps."""
    from beyond_imagenet.evaluations.cka import plot_cka

    fig = plot_cka(_cka_matrices(12), "cross", {}, "val", 32, [tmp_path / "cka.png"])
    assert len([ax for ax in _panels(fig) if ax.get_images()]) == 1
    assert "label_models" in fig._suptitle.get_text()
    _no_text_overlaps(fig)
    plt.close("all")


@pytest.mark.parametrize("n", [4, 30])
def test_vs_imagenet_says_why_a_panel_is_empty(tmp_path, n):
    """A headline no model has a value of (invariance "% of top-1 retained" at 0 % top-1): the panel
    says so instead of a blank axis."""
    from beyond_imagenet.vs_imagenet import plot_vs_imagenet

    models, profile, robustness = _study(n)
    retained = profile[profile["evaluation"] == "shape_bias"].assign(
        evaluation="invariance", headline="scale: % of top-1 retained (imagenet_val)", value=np.nan,
        ci_low=np.nan, ci_high=np.nan)
    fig = plot_vs_imagenet(pd.concat([profile, retained]), [tmp_path / "vs.png"], REFERENCE, robustness)
    (panel,) = [ax for ax in _panels(fig) if ax.get_title().startswith("scale: % of top-1 retained")]
    (note,) = [t for t in panel.texts if t.get_label() == "_empty"]
    assert "no point" in note.get_text() and "undefined for a model at 0 % top-1" in note.get_text()
    assert not [t for ax in _panels(fig) if ax is not panel for t in ax.texts if t.get_label() == "_empty"]
    _no_text_overlaps(fig)
    plt.close("all")

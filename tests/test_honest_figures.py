"""Figures and profile that tell the truth (issue #25, item 1): a model at chance is drawn faded and
labelled and never ranked; every panel / column states its n; an all-zero panel says so; a
temperature at its search bound is flagged; one extreme interval does not set the axis; legends
never sit over data; CKA layers are labelled the same way for every source; the human band in
shape bias. Each property is read back from the returned matplotlib figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import tests.test_style as style_tests
from beyond_imagenet.style import CHANCE_ALPHA, CHANCE_HATCH, plt

tables = style_tests.tables  # tests/test_style.py's module fixture: every figure's table, 4 models

MODELS = [{"model": "guess", "label": "Guessing (random weights)", "family": "convnet", "paradigm": "supervised",
           "paper_key": ""},
          {"model": "real", "label": "Real weights", "family": "vit", "paradigm": "supervised", "paper_key": ""}]
LABEL = {m["model"]: m["label"] for m in MODELS}


def _paths(tmp_path, stem):
    return [tmp_path / f"{stem}.png"]


def _bars(ax, model: str) -> list:
    (container,) = [c for c in ax.containers if c.get_label() == LABEL[model]]
    return list(container)


def _faded(patch) -> bool:
    return patch.get_alpha() == CHANCE_ALPHA and patch.get_hatch() == CHANCE_HATCH


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def _legends_clear_of_axes(fig) -> int:
    """Every legend of ``fig`` lies outside every visible axes (no legend over data); returns how many."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)  # save_figure closed the figure: draw it again off-screen
    canvas.draw()
    renderer = canvas.get_renderer()
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)]
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for ax in fig.axes:
            if ax.get_visible() and ax.get_label() != "<colorbar>":
                assert not _overlaps(box, ax.get_window_extent(renderer)), (fig, ax.get_title())
    return len(legends)


# ----------------------------------------------------------------------------- chance levels
def test_chance_level_comes_from_the_label_space():
    from beyond_imagenet.datasets.readers import chance_level
    from beyond_imagenet.datasets.vtab import TASKS

    assert chance_level("imagenet1k") == pytest.approx(1 / 1000)
    assert chance_level("imagenet_r") == chance_level("imagenet_a") == pytest.approx(1 / 200)
    assert chance_level("cue_conflict") == pytest.approx(1 / 16)
    assert chance_level("vtab", "dtd") == pytest.approx(1 / TASKS["dtd"].n_classes) == pytest.approx(1 / 47)
    assert chance_level("vtab") is None and chance_level("no_such_space") is None


def test_chance_levels_of_the_default_study():
    from conftest import default_config

    from beyond_imagenet.evaluations import chance_levels
    from beyond_imagenet.study import Study, validate_config

    study = Study(validate_config(default_config()))
    levels = chance_levels(study)
    assert levels["imagenet_val"] == pytest.approx(1 / 1000) and levels["imagenet_r"] == pytest.approx(1 / 200)
    assert levels["cue_conflict"] == pytest.approx(1 / 16)
    assert levels["vtab/clevr_count"] == pytest.approx(1 / 8) and "vtab" not in levels


def test_at_chance_reads_the_interval():
    from beyond_imagenet.style import at_chance

    assert at_chance(0.0, (0.0, 0.0), 0.001)            # 0 of n right: at chance
    assert at_chance(0.05, (0.0, 0.15), 1 / 16)          # the interval reaches 1/16
    assert not at_chance(0.5, (0.3, 0.7), 1 / 16)
    assert not at_chance(0.0, (0.0, 0.0), None)          # unknown chance: never flagged
    assert at_chance(0.0005, None, 0.001) and not at_chance(0.01, None, 0.001)  # no interval: the value


# -------------------------------------------------------------------------------- bar figures
def _robustness_table() -> pd.DataFrame:
    rows = []
    for m, top1 in (("guess", 0.0), ("real", 0.8)):
        for benchmark, n in (("imagenet_val", 50), ("imagenet_v2", 20)):
            bounds = (0.0, 0.0) if top1 == 0 else (top1 - 0.1, top1 + 0.1)
            rows += [{**MODELS[m == "real"], "dataset": benchmark, "benchmark": benchmark, "corruption": "",
                      "severity": "", "metric": "top1", "value": top1, "ci_low": bounds[0], "ci_high": bounds[1]},
                     {**MODELS[m == "real"], "dataset": benchmark, "benchmark": benchmark, "corruption": "",
                      "severity": "", "metric": "n_images", "value": n, "ci_low": np.nan, "ci_high": np.nan}]
        rows += [{**MODELS[m == "real"], "dataset": "", "benchmark": "average", "corruption": "", "severity": "",
                  "metric": "top1", "value": top1, "ci_low": max(0, top1 - 0.1), "ci_high": top1 and top1 + 0.1},
                 {**MODELS[m == "real"], "dataset": "", "benchmark": "average", "corruption": "", "severity": "",
                  "metric": "n_benchmarks", "value": 1, "ci_low": np.nan, "ci_high": np.nan}]
    return pd.DataFrame(rows)


def test_robustness_fades_the_guessing_model_and_states_n(tmp_path):
    from beyond_imagenet.evaluations.robustness import plot_robustness

    fig = plot_robustness(_robustness_table(), _paths(tmp_path, "r"),
                          chance={"imagenet_val": 0.001, "imagenet_v2": 0.001})
    (ax,) = fig.axes
    assert all(_faded(p) for p in _bars(ax, "guess"))
    real = _bars(ax, "real")
    assert not any(_faded(p) for p in real) and all(p.get_height() > 0 for p in real)
    assert sum(t.get_label() == "_chance" for t in ax.texts) == 3  # ImageNet, V2, Average of the guessing model
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == ["ImageNet\nn=50", "V2\nn=20", "Average (1)"]
    assert _legends_clear_of_axes(fig) == 1
    # Without chance levels nothing is faded (a study whose spaces are unknown).
    plain = plot_robustness(_robustness_table(), _paths(tmp_path, "r2"))
    assert not any(_faded(p) for p in _bars(plain.axes[0], "guess"))


def test_an_all_zero_panel_says_so(tmp_path):
    from beyond_imagenet.evaluations.pug import plot_pug
    from beyond_imagenet.metrics.pug import PUG_SUBSETS

    rows = []
    for m in MODELS:
        for subset in PUG_SUBSETS:
            rows += [{**m, "dataset": "pug", "subset": subset, "metric": "top1", "value": 0.0, "rule": "membership"},
                     {**m, "dataset": "pug", "subset": subset, "metric": "n_images", "value": 2, "rule": "membership"}]
        rows.append({**m, "dataset": "pug", "subset": "Average", "metric": "top1", "value": 0.0, "rule": "membership"})
    table = pd.DataFrame(rows)
    fig = plot_pug(table, "pug", _paths(tmp_path, "pug"))
    (ax,) = fig.axes
    (note,) = [t for t in ax.texts if t.get_label() == "_empty"]
    assert "every value is 0" in note.get_text()
    assert all("n=2" in t.get_text() for t in ax.get_xticklabels()[:-1])
    assert ax.get_xticklabels()[-1].get_text().endswith("n=20")
    # One model above 0: no note.
    table.loc[(table["model"] == "real") & (table["metric"] == "top1"), "value"] = 0.5
    assert not [t for t in plot_pug(table, "pug", _paths(tmp_path, "pug2")).axes[0].texts
                if t.get_label() == "_empty"]


def test_one_extreme_interval_does_not_set_the_axis(tmp_path):
    from beyond_imagenet.evaluations.imagenet_x import plot_imagenet_x
    from beyond_imagenet.metrics.imagenet_x import FACTORS

    rows = []
    for m in MODELS:
        for k, factor in enumerate(FACTORS):
            value = 12.0 if (m["model"] == "real" and factor == FACTORS[0]) else 0.8 + 0.02 * k
            high = 35.0 if value == 12.0 else value + 0.2
            rows += [{**m, "dataset": "val", "factor": factor, "metric": "error_ratio", "value": value,
                      "ci_low": value - 0.2, "ci_high": high},
                     {**m, "dataset": "val", "factor": factor, "metric": "n_images", "value": 3}]
        rows += [{**m, "dataset": "val", "factor": "average", "metric": "error_ratio", "value": 1.5,
                  "ci_low": 1.0, "ci_high": 2.0},
                 {**m, "dataset": "val", "factor": "overall", "metric": "accuracy", "value": 0.0 if m["model"] ==
                  "guess" else 0.9, "ci_low": 0.0 if m["model"] == "guess" else 0.8, "ci_high": 0.95},
                 {**m, "dataset": "val", "factor": "overall", "metric": "n_images", "value": 48}]
    fig = plot_imagenet_x(pd.DataFrame(rows), "val", _paths(tmp_path, "x"), chance={"val": 0.001})
    supervised = fig.axes[0]
    top = supervised.get_ylim()[1]
    assert 2.0 <= top < 12.0  # set by the usual ratios (and the average), not by the 12 or its 35
    clipped = [ln for ln in supervised.get_lines() if ln.get_label() == "_clipped"]
    assert len(clipped) == 1 and clipped[0].get_ydata()[0] == pytest.approx(top)
    assert any("12" in t.get_text() and "↑35" in t.get_text() for t in supervised.texts)
    assert all(_faded(p) for p in _bars(supervised, "guess"))
    assert not any(_faded(p) for p in _bars(supervised, "real"))
    assert "n=48" in fig._suptitle.get_text()


# ------------------------------------------------------------------------------- calibration
def test_a_temperature_at_its_bound_is_flagged(tmp_path):
    from beyond_imagenet.evaluations.calibration import plot_reliability
    from beyond_imagenet.metrics.calibration import TEMPERATURE_BOUNDS, calibration_from_logits, temperature_at_bound

    low, high = TEMPERATURE_BOUNDS
    assert temperature_at_bound(99.99998677) and temperature_at_bound(low) and not temperature_at_bound(4.29)
    rng = np.random.default_rng(0)
    rows = []
    for m, temperature in zip(MODELS, (high, 0.8)):
        labels = rng.integers(0, 10, 100)
        logits = rng.normal(size=(100, 10)) + (m["model"] == "real") * 6 * np.eye(10)[labels]
        result = calibration_from_logits(logits, labels, n_bins=5)
        head = {**m, "dataset": "val", "bin": "", "bin_lower": "", "bin_upper": ""}
        acc = result["accuracy"]
        rows += [{**head, "metric": k, "value": result[k]} for k in ("ece", "mce", "mean_confidence", "n_images")]
        rows.append({**head, "metric": "accuracy", "value": acc, "ci_low": acc - 0.05, "ci_high": acc + 0.05})
        rows += [{**head, "metric": k, "value": 0.1} for k in ("ece_heldout", "ece_temperature_scaled")]
        rows.append({**head, "metric": "temperature", "value": temperature})
        for b in range(5):
            for metric, key in (("bin_count", "count"), ("bin_accuracy", "accuracy"), ("bin_confidence", "confidence")):
                rows.append({**m, "dataset": "val", "metric": metric, "bin": b, "bin_lower": result["bins"]["lower"][b],
                             "bin_upper": result["bins"]["upper"][b], "value": result["bins"][key][b]})
    table = pd.DataFrame(rows)
    # The guessing model: accuracy interval reaches 1/10 (chance of its 10 classes).
    fig = plot_reliability(table, "val", _paths(tmp_path, "rel"), chance={"val": 0.1})
    panels = {ax.get_title().split("\n")[0]: ax for ax in fig.axes if ax.get_visible()}
    assert "= bound: no fit" in panels[LABEL["guess"]].get_title()
    assert "bound" not in panels[LABEL["real"]].get_title()
    assert all("n=100" in ax.get_title() for ax in panels.values())
    assert [t for t in panels[LABEL["guess"]].texts if t.get_label() == "_chance"]
    assert not [t for t in panels[LABEL["real"]].texts if t.get_label() == "_chance"]
    filled = [p for c in panels[LABEL["real"]].containers for p in c if p.get_facecolor()[3] > 0]
    assert filled and not any(_faded(p) for p in filled)
    assert _legends_clear_of_axes(fig) == 1


def test_the_temperature_table_row_flags_the_bound():
    from beyond_imagenet.evaluations.calibration import _temperature

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 10, 60)
    # Confidently wrong on every image: the NLL falls all the way to a uniform softmax, T to the bound.
    out = {"logits": 5 * np.eye(10)[(labels + 1) % 10], "labels": labels}
    rows = _temperature({"model": "m"}, out, out["logits"], seed=0, n_bins=5)
    assert rows["temperature_at_bound"] == 1.0 and rows["temperature"] > 99
    out = {"logits": 5 * np.eye(10)[labels] + rng.normal(size=(60, 10)), "labels": labels}
    rows = _temperature({"model": "m"}, out, out["logits"], seed=0, n_bins=5)
    assert rows["temperature_at_bound"] == 0.0


# -------------------------------------------------------------------------------- shape bias
def test_shape_bias_draws_the_human_band_and_fades_a_guessing_model(tmp_path):
    from beyond_imagenet.evaluations.shape_bias import plot_shape_bias
    from beyond_imagenet.human_reference import load_human_shape_bias

    rows = []
    for m, accuracy in zip(MODELS, (0.05, 0.6)):
        rows += [{**m, "dataset": "cue", "category": "", "metric": "shape_bias", "value": 0.4},
                 {**m, "dataset": "cue", "category": "", "metric": "accuracy_16", "value": accuracy,
                  "ci_low": accuracy - 0.05, "ci_high": accuracy + 0.1},
                 {**m, "dataset": "cue", "category": "", "metric": "n_images", "value": 1200},
                 {**m, "dataset": "cue", "category": "cat", "metric": "shape_bias", "value": 0.5}]
    humans = load_human_shape_bias()
    fig = plot_shape_bias(pd.DataFrame(rows), "cue", _paths(tmp_path, "sb"), chance={"cue": 1 / 16}, humans=humans)
    (ax,) = [a for a in fig.axes if a.get_lines()]
    (band,) = [p for p in ax.patches if p.get_label() == "_humans:band"]
    assert (band.get_x(), band.get_x() + band.get_width()) == pytest.approx(
        (humans["overall"]["min"], humans["overall"]["max"]))
    (mean,) = [ln for ln in ax.get_lines() if str(ln.get_label()).startswith("humans (10 observers)")]
    assert mean.get_xdata()[0] == pytest.approx(humans["overall"]["mean"])
    (per_category,) = [ln for ln in ax.get_lines() if ln.get_label() == "_humans:mean"]
    assert len(per_category.get_xdata()) == 16
    overall = {str(ln.get_label()).split(":")[0]: ln for ln in ax.get_lines()
               if str(ln.get_label()).startswith(tuple(LABEL.values()))}
    assert overall[LABEL["guess"]].get_alpha() == CHANCE_ALPHA and "chance" in overall[LABEL["guess"]].get_label()
    assert overall[LABEL["real"]].get_alpha() in (None, 1.0)
    assert "n=1200" in ax.get_title()
    assert _legends_clear_of_axes(fig) == 1


# ------------------------------------------------------------------------------------ profile
def test_profile_never_ranks_a_guessing_model_and_states_n(tmp_path):
    from beyond_imagenet.profile import build_profile, plot_profile, write_profile
    from beyond_imagenet.tables import read_table

    accuracy = pd.DataFrame([{**m, "dataset": "d", "metric": metric, "value": value, "ci_low": low, "ci_high": high}
                             for m, top1 in zip(MODELS, (0.0, 0.6))
                             for metric, value, low, high in (("top1", top1, top1 and top1 - 0.1, top1 and top1 + 0.1),
                                                              ("n_images", 50, np.nan, np.nan))])
    calibration = pd.DataFrame([{**m, "dataset": "d", "bin": "", "metric": metric, "value": value}
                                for m, (ece, acc) in zip(MODELS, ((0.001, 0.0), (0.2, 0.6)))
                                for metric, value in (("ece", ece), ("accuracy", acc), ("n_images", 50))])
    profile = build_profile({"accuracy": accuracy, "calibration": calibration}, chance={"d": 0.001})
    rows = profile.set_index(["headline", "model"])
    for headline in ("top-1 % (d)", "ECE (d)"):
        assert rows.loc[(headline, "guess"), "at_chance"] and not rows.loc[(headline, "real"), "at_chance"]
        # The guessing model has the best ECE (0.001) but is neither ranked nor scored (coloured).
        assert np.isnan(rows.loc[(headline, "guess"), "rank"]) and np.isnan(rows.loc[(headline, "guess"), "score"])
        assert rows.loc[(headline, "real"), "rank"] == 1
        assert rows.loc[(headline, "guess"), "n"] == "n=50"
    write_profile(profile, tmp_path / "profile.csv")
    fig = plot_profile(read_table(tmp_path / "profile.csv"), _paths(tmp_path, "profile"))
    (ax,) = fig.axes
    assert len([p for p in ax.patches if p.get_label() == "_chance_cell"]) == 2
    assert all(t.get_text().endswith("n=50") for t in ax.get_xticklabels())
    (image,) = ax.get_images()
    assert np.ma.getmaskarray(image.get_array())[0].all()  # the guessing row: no colour in any column
    # Without chance levels (or for a real model), ranking as before.
    assert build_profile({"calibration": calibration}).set_index("model").loc["guess", "rank"] == 1


# -------------------------------------------------------------------- legends, CKA, every figure
def test_no_legend_over_data_in_any_figure(tables, tmp_path):
    figures = style_tests._figures(tables, tmp_path)
    found = {name: _legends_clear_of_axes(fig) for name, fig in figures.items()}
    assert all(found.values()), found  # every figure has a legend, and none is over an axes


def test_cka_layers_are_labelled_by_block_index_for_every_source(tmp_path):
    from beyond_imagenet.evaluations.cka import plot_cka
    from beyond_imagenet.evaluations.cka.passes import CkaMatrix

    timm = [f"stages.{s}.blocks.{b}" for s in range(2) for b in range(3)]
    clip = [f"transformer.resblocks.{b}" for b in range(4)]
    matrices = [CkaMatrix("t", "t", "within", timm, timm, np.eye(6)),
                CkaMatrix("c", "c", "within", clip, clip, np.eye(4)),
                CkaMatrix("t", "c", "cross", timm, clip, np.ones((6, 4)))]
    for kind in ("within", "cross"):
        fig = plot_cka(matrices, kind, {"t": "timm model", "c": "clip model"}, "val", 32, _paths(tmp_path, kind))
        for ax in [a for a in fig.axes if a.get_visible() and a.get_label() != "<colorbar>" and a.get_images()]:
            for ticks, label in ((ax.get_xticklabels(), ax.get_xlabel()), (ax.get_yticklabels(), ax.get_ylabel())):
                texts = [t.get_text() for t in ticks]
                assert texts == [str(i) for i in range(len(texts))], texts
                assert "block 0–" in label
        assert "n=32" in fig._suptitle.get_text()
    plt.close("all")


# ------------------------------------------------------------------------- layout: paired
def test_paired_layout_draws_the_margin_and_its_interval(tmp_path):
    from beyond_imagenet.evaluations.robustness import plot_robustness_paired

    rows = []
    models = [{"model": m, "label": m, "family": f, "paradigm": p, "paper_key": ""}
              for m, f, p in (("vs", "vit", "supervised"), ("cs", "convnet", "supervised"),
                              ("vc", "vit", "clip"), ("cc", "convnet", "clip"), ("lone", "other", "ssl"))]
    top1 = {"vs": (0.8, 0.6), "cs": (0.7, 0.65), "vc": (0.5, 0.4), "cc": (0.6, 0.5), "lone": (0.3, 0.3)}
    for m in models:
        val, v2 = top1[m["model"]]
        for benchmark, value in (("imagenet_val", val), ("imagenet_v2", v2), ("average", v2)):
            rows.append({**m, "dataset": "" if benchmark == "average" else benchmark, "benchmark": benchmark,
                         "corruption": "", "severity": "", "metric": "top1", "value": value})
        rows.append({**m, "dataset": "", "benchmark": "average", "corruption": "", "severity": "",
                     "metric": "n_benchmarks", "value": 1})
    comparisons = pd.DataFrame([
        {"evaluation": "robustness", "headline": "h", "dataset": "", "model_a": "cs", "model_b": "vs",
         "difference": 5.0, "ci_low": 1.0, "ci_high": 9.0},  # ConvNet - ViT: the ConvNet wins by 5
        {"evaluation": "robustness", "headline": "h", "dataset": "", "model_a": "vc", "model_b": "cc",
         "difference": -10.0, "ci_low": -14.0, "ci_high": -6.0}])
    fig = plot_robustness_paired(pd.DataFrame(rows), _paths(tmp_path, "paired"), comparisons)
    panels = {ax.get_title(): ax for ax in fig.axes}
    assert set(panels) == {"supervised: ViT vs ConvNet", "clip: ViT vs ConvNet"}  # no panel for a lone family
    sup = [t.get_text() for t in panels["supervised: ViT vs ConvNet"].texts if t.get_label() == "_margin"]
    # ImageNet: ViT 80 vs ConvNet 70; V2: ConvNet by 5; the average: the paired interval, as ViT - ConvNet.
    assert sup[0] == "+10 ViT" and sup[1] == "+5 ConvNet" and sup[2] == "+5 ConvNet\n[-9, -1]"
    clip = [t.get_text() for t in panels["clip: ViT vs ConvNet"].texts if t.get_label() == "_margin"]
    assert clip[2] == "+10 ConvNet\n[-14, -6]"
    assert _legends_clear_of_axes(fig) == 2


def test_layout_is_a_setting_of_the_paired_evaluations(tmp_path):
    from conftest import default_config

    from beyond_imagenet.evaluations import EVALUATIONS, layout
    from beyond_imagenet.study import Study, validate_config

    assert {name for name, record in EVALUATIONS.items() if any(f.paired for f in record.figures)} == {
        "robustness", "transfer", "shape_bias"}
    config = default_config()
    assert layout(Study(validate_config(default_config())), "robustness") == "models"
    config["evaluations"]["robustness"]["layout"] = "paired"
    assert layout(Study(validate_config(config)), "robustness") == "paired"
    config["evaluations"]["robustness"]["layout"] = "sideways"
    with pytest.raises(Exception, match="layout"):
        validate_config(config)


def test_a_plot_job_gets_only_its_datasets_chance_levels():
    """Adding a dataset to one evaluation must not rerun another's figures (tests/test_job_params.py)."""
    import types

    from conftest import default_config

    from beyond_imagenet.evaluations import EVALUATIONS, figure_chance
    from beyond_imagenet.study import Study, validate_config

    study = Study(validate_config(default_config()))
    reliability = EVALUATIONS["calibration"].figure("reliability")
    assert figure_chance(study, "calibration", reliability, types.SimpleNamespace(dataset="imagenet_r")) == {
        "imagenet_r": pytest.approx(1 / 200)}
    robustness = EVALUATIONS["robustness"].figure("robustness")  # one figure over the evaluation's datasets
    assert set(figure_chance(study, "robustness", robustness, types.SimpleNamespace())) == set(
        study.evaluation_datasets("robustness"))
    transfer = EVALUATIONS["transfer"].figure("transfer")
    assert set(figure_chance(study, "transfer", transfer, types.SimpleNamespace(dataset="vtab"))) == {
        "vtab/dtd", "vtab/eurosat", "vtab/clevr_count"}
    assert not EVALUATIONS["cka"].figure("cka").chance

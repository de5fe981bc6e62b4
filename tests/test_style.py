"""One figure style keyed by model (beyond_imagenet/style.py): the rule, and that every per-model
figure draws each model in the colour model_styles gives it."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex

from beyond_imagenet.style import PAPER_COLORS, ModelStyle, model_styles

PAPER_MODELS = {  # paper_key -> (family, paradigm)
    "convnext_sup": ("convnet", "supervised"), "vit_sup": ("vit", "supervised"),
    "convnext_clip": ("convnet", "clip"), "vit_clip": ("vit", "clip"),
}


def _row(model, family, paradigm, paper_key="", label=None):
    return {"model": model, "label": label or model, "family": family, "paradigm": paradigm, "paper_key": paper_key}


# ------------------------------------------------------------------------------------- the rule
def test_paper_models_get_their_fixed_colours_whatever_their_order():
    assert PAPER_COLORS == {"convnext_sup": "#1f4e99", "vit_sup": "#7fb2e5",
                            "convnext_clip": "#a50f15", "vit_clip": "#f4837d"}
    paper = [_row(f"p_{key}", family, paradigm, key) for key, (family, paradigm) in PAPER_MODELS.items()]
    others = [_row("a", "convnet", "supervised"), _row("b", "vit", "clip"), _row("c", "other", "dino")]
    rng = random.Random(0)
    for _ in range(10):
        rows = paper + others
        rng.shuffle(rows)
        styles = model_styles(rows)
        for key in PAPER_MODELS:
            assert styles[f"p_{key}"].color == PAPER_COLORS[key]
        # No other model ever takes a paper colour, even with no paper model in the study.
        assert not {styles[m].color for m in "abc"} & set(PAPER_COLORS.values())
        assert not {s.color for s in model_styles(others).values()} & set(PAPER_COLORS.values())
    # Only one of the study's paper models: the others still do not get its colour.
    alone = model_styles([_row("x", "vit", "supervised"), _row("vs", "vit", "supervised", "vit_sup")])
    assert alone["vs"].color == PAPER_COLORS["vit_sup"] and alone["x"].color != PAPER_COLORS["vit_sup"]


def test_paradigm_shades_family_markers_and_hatches():
    styles = model_styles([_row("s", "convnet", "supervised"), _row("c", "vit", "clip"), _row("o", "resnet", "ssl"),
                           _row("vs", "vit", "supervised", "vit_sup")])
    assert styles["s"] == ModelStyle(color="#1f77b4", marker="s", linestyle="-", hatch="")
    assert styles["c"] == ModelStyle(color="#d62728", marker="o", linestyle="--", hatch="//")
    assert styles["o"] == ModelStyle(color="#7f7f7f", marker="^", linestyle=":", hatch="..")
    assert styles["vs"] == ModelStyle(color="#7fb2e5", marker="o", linestyle="--", hatch="//")


def test_no_colour_repeats_within_a_study_of_mixed_paradigms():
    rows = [_row("vs", "vit", "supervised", "vit_sup"), _row("cc", "convnet", "clip", "convnext_clip")]
    rows += [_row(f"sup{i}", "convnet", "supervised") for i in range(3)]
    rows += [_row(f"clip{i}", "vit", "clip") for i in range(3)]
    rows += [_row("dino", "vit", "ssl"), _row("mae", "other", "mae")]
    assert len(rows) == 10
    colors = [s.color for s in model_styles(rows).values()]
    assert len(set(colors)) == 10
    # A paradigm that runs out of shades moves on to other colours, still without repeats.
    many = [_row(f"m{i}", "vit", "clip") for i in range(25)] + [_row(f"s{i}", "convnet", "supervised") for i in range(5)]
    assert len({s.color for s in model_styles(many).values()}) == 30


def test_deterministic_and_table_or_rows_alike():
    rows = [_row("b", "vit", "clip"), _row("a", "convnet", "supervised", "convnext_sup"), _row("c", "vit", "supervised"),
            _row("d", "other", "clip")]
    first = model_styles(rows)
    assert model_styles(rows) == first and model_styles([dict(r) for r in rows]) == first
    assert list(first) == ["b", "a", "c", "d"]  # study order
    # A tidy table: several rows per model, paper_key empty (NaN after CSV) for the others.
    table = pd.DataFrame([{**r, "metric": m, "value": 0.5} for r in rows for m in ("x", "y")])
    table["paper_key"] = table["paper_key"].replace("", np.nan)
    assert model_styles(table) == first


# ----------------------------------------------------------------------- every figure, one study
# The same 4-model study in every table, in config order: a non-paper model first, then two of the
# paper's models and another non-paper model of the first one's paradigm (so its shade depends on
# the study order, which every figure must read from its whole table).
STUDY = [_row("conv_sup", "convnet", "supervised", label="ConvNet sup (mine)"),
         _row("vit_sup", "vit", "supervised", "vit_sup", label="ViT sup"),
         _row("convnext_clip", "convnet", "clip", "convnext_clip", label="ConvNeXt CLIP"),
         _row("vit_sup_mine", "vit", "supervised", label="ViT sup (mine)")]
LABELS = {r["label"]: r["model"] for r in STUDY}


def _outputs(logits, labels, ids) -> dict:
    return {"logits": np.asarray(logits, dtype=np.float32), "labels": np.asarray(labels),
            "ids": np.asarray(ids, dtype=object), "attrs": {}}


def _through_csv(rows, path: Path) -> pd.DataFrame:
    from beyond_imagenet.tables import read_table, write_table

    write_table(rows, path)
    return read_table(path)


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    """Every table a per-model figure reads, built by the workflow's row builders (as the compute
    scripts call them) on random outputs, written and read back as CSV."""
    from beyond_imagenet.datasets import resolve_dataset
    from beyond_imagenet.datasets.generate import generate, imagenet_val_file_names
    from beyond_imagenet.datasets.imagenet_variants import pug_class_map
    from beyond_imagenet.datasets.manifest import build_manifest
    from beyond_imagenet.datasets.vtab import TASKS
    from beyond_imagenet.evaluations.imagenet_x import imagenet_x_rows
    from beyond_imagenet.evaluations.invariance import invariance_rows
    from beyond_imagenet.evaluations.invariance.variants import Variant
    from beyond_imagenet.evaluations.pug import pug_rows
    from beyond_imagenet.evaluations.robustness import robustness_average, robustness_rows
    from beyond_imagenet.evaluations.shape_bias import shape_bias_rows
    from beyond_imagenet.evaluations.transfer import transfer_rows
    from beyond_imagenet.metrics.calibration import calibration_from_logits

    tmp = tmp_path_factory.mktemp("style_tables")

    def generated(kind, **settings):
        spec = resolve_dataset(kind, {"kind": kind, "source": "generate", **settings}, str(tmp))
        generate(spec, spec.dataset_dir)
        return spec, build_manifest(spec)["samples"]

    cue, cue_samples = generated("cue_conflict", images_per_class=1)
    pug, pug_samples = generated("pug_imagenet", images_per_class=1)
    names = imagenet_val_file_names()
    val_ids = [f"x/{n}" for label in range(0, 1000, 25) for n in names[label][:2]]
    rng = np.random.default_rng(0)
    rows = {k: [] for k in ("calibration", "robustness", "imagenet_x", "shape_bias", "pug", "invariance",
                            "transfer")}
    results = []
    for base in STUDY:
        # calibration (evaluations/calibration.py: table), on two datasets
        for dataset in ("imagenet_val", "imagenet_r"):
            labels = rng.integers(0, 10, 200)
            logits = rng.normal(size=(200, 10)) * 3 + 4 * np.eye(10)[labels] * rng.random((200, 1))
            result = calibration_from_logits(logits, labels, n_bins=5)
            head = {**base, "dataset": dataset}
            no_bin = {"bin": "", "bin_lower": "", "bin_upper": ""}
            for metric in ("ece", "mce", "accuracy", "mean_confidence", "overconfidence", "n_images"):
                rows["calibration"].append({**head, "metric": metric, **no_bin, "value": result[metric]})
            bins = result["bins"]
            for b in range(5):
                for metric, key in (("bin_count", "count"), ("bin_accuracy", "accuracy"),
                                    ("bin_confidence", "confidence")):
                    rows["calibration"].append({**head, "metric": metric, "bin": b, "bin_lower": bins["lower"][b],
                                                "bin_upper": bins["upper"][b], "value": bins[key][b]})
        # robustness, ImageNet-X, shape bias, PUG (scripts/compute_*.py)
        out = _outputs(rng.normal(size=(len(val_ids), 1000)), np.zeros(len(val_ids), int), val_ids)
        robust = robustness_rows(out, "imagenet_val", "imagenet1k", real=True)
        robust += robustness_average(robust)
        rows["robustness"] += [{**base, "dataset": "imagenet_val", **r} for r in robust]
        rows["imagenet_x"] += [{**base, "dataset": "imagenet_val", **r} for r in imagenet_x_rows(out)]
        out = _outputs(rng.normal(size=(len(cue_samples), 1000)), [lab for _, lab in cue_samples],
                       [s for s, _ in cue_samples])
        rows["shape_bias"] += [{**base, "dataset": "cue", **r} for r in shape_bias_rows(out)]
        out = _outputs(rng.normal(size=(len(pug_samples), 1000)), [lab for _, lab in pug_samples],
                       [s for s, _ in pug_samples])
        rows["pug"] += [{**base, "dataset": "pug", **r} for r in pug_rows(out, pug_class_map(pug.root))]
        # invariance (evaluations/invariance: table): standard outputs reused for scale 1 / resolution 224
        ids = [f"i{k}" for k in range(20)]
        labels = rng.integers(0, 10, 20)
        variants = {}
        for variant in (Variant("scale", 1), Variant("scale", 2), Variant("shift", 0), Variant("shift", 30),
                        Variant("resolution", 224), Variant("resolution", 160)):
            out = _outputs(rng.normal(size=(20, 10)) + 3 * np.eye(10)[labels], labels, ids)
            out["attrs"] = {"variant": "" if variant.value in (1, 224) else variant.name}
            variants[variant] = out
        rows["invariance"] += invariance_rows(variants, ids, None, {**base, "dataset": "imagenet_val"})
        # transfer (evaluations/transfer.py: table)
        results += [{"model": base["model"], "dataset": "vtab", "task": t, "test_top1": rng.random(), "val_top1": 0.5,
                     "weight_decay": 1e-3, "n_train": 800, "n_val": 200, "n_test": 10} for t in TASKS]
    rows["transfer"] = transfer_rows(results, {r["model"]: r for r in STUDY})
    return {name: _through_csv(r, tmp / f"{name}.csv") for name, r in rows.items()}


def _hex(color) -> str:
    return to_hex(color, keep_alpha=False)


def _bar_colors(ax) -> dict[str, set[str]]:
    """Model -> facecolours (and hatches) of the bar containers labelled with its label."""
    out: dict[str, set] = {}
    for container in ax.containers:
        model = LABELS.get(container.get_label())
        if model is not None:
            out.setdefault(model, set()).update((_hex(p.get_facecolor()), p.get_hatch() or "") for p in container)
    return out


def _figures(tables, tmp_path):
    from beyond_imagenet.paper_results import load_paper_results
    from beyond_imagenet.evaluations.calibration import plot_confidence_histogram, plot_reliability
    from beyond_imagenet.evaluations.invariance import plot_invariance
    from beyond_imagenet.evaluations.imagenet_x import plot_imagenet_x
    from beyond_imagenet.evaluations.pug import plot_pug
    from beyond_imagenet.evaluations.robustness import plot_robustness
    from beyond_imagenet.evaluations.shape_bias import plot_shape_bias
    from beyond_imagenet.evaluations.transfer import plot_transfer

    paper = load_paper_results()
    paths = lambda stem: [tmp_path / f"{stem}.png", tmp_path / f"{stem}.pdf"]  # noqa: E731
    figures = {
        "reliability": plot_reliability(tables["calibration"], "imagenet_r", paths("reliability"),
                                        paper=paper["calibration"]["imagenet_r"]["ece"]),
        "confidence": plot_confidence_histogram(tables["calibration"], "imagenet_val", paths("confidence")),
        "robustness": plot_robustness(tables["robustness"], paths("robustness"), paper=paper["robustness"]),
        "imagenet_x": plot_imagenet_x(tables["imagenet_x"], "imagenet_val", paths("imagenet_x"),
                                      paper=paper["imagenet_x"]),
        "shape_bias": plot_shape_bias(tables["shape_bias"], "cue", paths("shape_bias"), paper=paper["shape_bias"]),
        "pug": plot_pug(tables["pug"], "pug", paths("pug"), paper=paper["pug"]),
        "invariance_top1": plot_invariance(tables["invariance"], "imagenet_val", "top1", paths("inv_top1"),
                                           paper=paper["invariance"]),
        "invariance_prob": plot_invariance(tables["invariance"], "imagenet_val", "true_class_prob", paths("inv_p")),
        "transfer": plot_transfer(tables["transfer"], "vtab", paths("transfer"), paper_top1=paper["vtab"]["top1"]),
    }
    for stem in ("reliability", "confidence", "robustness", "imagenet_x", "shape_bias", "pug", "inv_top1", "inv_p",
                 "transfer"):
        for path in paths(stem):
            assert path.stat().st_size > 1000, path
    return figures


def test_every_figure_draws_each_model_in_its_style(tables, tmp_path):
    styles = model_styles(tables["robustness"])
    # The study's model list is the same in every table, so every table gives the same styles.
    for name, table in tables.items():
        assert model_styles(table) == styles, name
    assert styles["vit_sup"].color == PAPER_COLORS["vit_sup"]
    assert styles["convnext_clip"].color == PAPER_COLORS["convnext_clip"]
    assert len({s.color for s in styles.values()}) == 4
    assert (styles["conv_sup"].color, styles["vit_sup_mine"].color) == ("#1f77b4", "#0e7c7b")  # study order
    colour = {m: s.color for m, s in styles.items()}
    bars = {m: {(s.color, s.hatch)} for m, s in styles.items()}
    figures = _figures(tables, tmp_path)
    seen: dict[str, dict[str, str]] = {}  # figure -> model -> colour read back

    # Calibration: one panel per model (title = label); the model's bars in its colour, unhatched
    # (the hatched, unfilled bars are the gap to the diagonal).
    for name in ("reliability", "confidence"):
        panels = [ax for ax in figures[name].axes if ax.get_visible()]
        assert len(panels) == 4
        for ax in panels:
            model = LABELS[ax.get_title().split("\n")[0]]
            filled = {_hex(p.get_facecolor()) for c in ax.containers for p in c if p.get_fill() and p.get_facecolor()[3]}
            assert filled == {colour[model]}, (name, model)
            seen.setdefault(name, {})[model] = filled.pop()

    # Grouped bars: one labelled bar series per model, in its colour and family hatch.
    for name in ("robustness", "pug", "transfer"):
        found = {}
        for ax in figures[name].axes:
            for model, colors in _bar_colors(ax).items():
                found.setdefault(model, set()).update(colors)
        assert found == bars, name
        seen[name] = {m: next(iter(c))[0] for m, c in found.items()}
    supervised, clip = figures["imagenet_x"].axes
    assert _bar_colors(supervised) == {m: bars[m] for m in ("conv_sup", "vit_sup", "vit_sup_mine")}
    assert _bar_colors(clip) == {"convnext_clip": bars["convnext_clip"]}
    seen["imagenet_x"] = {m: next(iter(c))[0] for ax in (supervised, clip) for m, c in _bar_colors(ax).items()}

    # Shape bias: per-category points (family marker) and the overall / published lines, model colour.
    (ax,) = [a for a in figures["shape_bias"].axes if a.get_lines()]
    lines = ax.get_lines()
    for model, style in styles.items():
        label = next(r["label"] for r in STUDY if r["model"] == model)
        overall = [ln for ln in lines if str(ln.get_label()).startswith(f"{label}:")]
        assert len(overall) == 1 and _hex(overall[0].get_color()) == style.color, model
        seen.setdefault("shape_bias", {})[model] = _hex(overall[0].get_color())
    points = [ln for ln in lines if ln.get_linestyle() == "None" and ln.get_marker() not in ("D", "None", None, "")]
    assert [(_hex(p.get_color()), p.get_marker()) for p in points] == [(s.color, s.marker) for s in styles.values()]
    published = [ln for ln in lines if "published" in str(ln.get_label())]
    assert {_hex(ln.get_color()) for ln in published} == {colour["vit_sup"], colour["convnext_clip"]}

    # Invariance: one line per model and panel in its colour, line style and marker; the published
    # (dotted, thin) curves of the paper models in the model's colour too.
    for name in ("invariance_top1", "invariance_prob"):
        axes = figures[name].axes
        assert len(axes) == 3
        for ax in axes:
            curves = {LABELS[str(ln.get_label())]: ln for ln in ax.get_lines() if str(ln.get_label()) in LABELS}
            assert {m: (_hex(ln.get_color()), ln.get_marker(), ln.get_linestyle()) for m, ln in curves.items()} == {
                m: (s.color, s.marker, s.linestyle) for m, s in styles.items()}
            seen.setdefault(name, {}).update({m: _hex(ln.get_color()) for m, ln in curves.items()})
            if name == "invariance_top1":
                dotted = [ln for ln in ax.get_lines() if str(ln.get_label()).startswith("_") and ln.get_linestyle() == ":"
                          and ln.get_linewidth() == 1]
                assert {_hex(ln.get_color()) for ln in dotted} == {colour["vit_sup"], colour["convnext_clip"]}

    # The point of it all: one colour per model across every figure.
    assert set(seen) == {"reliability", "confidence", "robustness", "pug", "transfer", "imagenet_x", "shape_bias",
                         "invariance_top1", "invariance_prob"}
    for name, found in seen.items():
        assert found == colour, name


def test_a_model_keeps_its_colour_when_a_figure_draws_a_subset(tables, tmp_path):
    """Per-dataset panels take their colours from the whole table (the study), not from the rows
    they draw."""
    from beyond_imagenet.evaluations.calibration import plot_reliability

    table = tables["calibration"]
    styles = model_styles(table)
    # A table where the first model has no imagenet_r rows: the others keep their colours there.
    partial = table[~((table["model"] == "conv_sup") & (table["dataset"] == "imagenet_r"))]
    fig = plot_reliability(partial, "imagenet_r", [tmp_path / "r.png"])
    for ax in [a for a in fig.axes if a.get_visible()]:
        model = LABELS[ax.get_title().split("\n")[0]]
        (patch, *_) = ax.containers[0]
        assert _hex(patch.get_facecolor()) == styles[model].color
    assert len([a for a in fig.axes if a.get_visible()]) == 3

"""The model profile: headline registry over the evaluations' tidy tables, ranks, the figure."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from beyond_imagenet.evaluations import EVALUATIONS
from beyond_imagenet.profile import Headline, build_profile, headline_rows, headlines, profile_tables, write_profile
from beyond_imagenet.tables import read_table, write_table

MODELS = [
    {"model": "cs", "label": "ConvNet sup", "family": "convnet", "paradigm": "supervised", "paper_key": "convnext_sup"},
    {"model": "vc", "label": "ViT CLIP", "family": "vit", "paradigm": "clip", "paper_key": ""},
]


def _rows(per_model: dict[str, list[dict]]) -> list[dict]:
    return [{**m, **r} for m in MODELS for r in per_model[m["model"]]]


def _tables(tmp_path) -> dict[str, pd.DataFrame]:
    """One small table per evaluation in the row format its compute script writes, through CSV."""
    tables = {
        "accuracy": _rows({"cs": [{"dataset": "imagenet_val", "metric": "top1", "value": 0.8},
                                  {"dataset": "imagenet_val", "metric": "top5", "value": 0.95}],
                           "vc": [{"dataset": "imagenet_val", "metric": "top1", "value": 0.6},
                                  {"dataset": "imagenet_val", "metric": "top5", "value": 0.9}]}),
        "calibration": _rows({m: [{"dataset": d, "metric": "ece", "bin": "", "value": v},
                                  {"dataset": d, "metric": "bin_count", "bin": 0, "value": 3}]
                              for m, d, v in (("cs", "imagenet_val", 0.03), ("vc", "imagenet_val", 0.13))}),
        "robustness": _rows({m: [{"dataset": "imagenet_a", "benchmark": "imagenet_a", "corruption": "", "severity": "",
                                  "metric": "top1", "value": v / 2},
                                 {"dataset": "", "benchmark": "average", "corruption": "", "severity": "",
                                  "metric": "top1", "value": v},
                                 {"dataset": "", "benchmark": "average", "corruption": "", "severity": "",
                                  "metric": "n_benchmarks", "value": 7}]
                             for m, v in (("cs", 0.5), ("vc", 0.55))}),
        "imagenet_x": _rows({m: [{"dataset": "imagenet_val", "factor": "pose", "metric": "error_ratio", "value": 1.1},
                                 {"dataset": "imagenet_val", "factor": "average", "metric": "error_ratio", "value": v}]
                             for m, v in (("cs", 1.2), ("vc", 1.0))}),
        "shape_bias": _rows({m: [{"dataset": "cue_conflict", "category": "", "metric": "shape_bias", "value": v},
                                 {"dataset": "cue_conflict", "category": "cat", "metric": "shape_bias", "value": 0.9}]
                             for m, v in (("cs", 0.33), ("vc", 0.46))}),
        "pug": _rows({m: [{"dataset": "pug", "subset": "Worlds", "metric": "top1", "value": 0.3, "rule": "membership"},
                          {"dataset": "pug", "subset": "Average", "metric": "top1", "value": v, "rule": "membership"}]
                      for m, v in (("cs", 0.32), ("vc", 0.27))}),
        "transfer": _rows({m: [{"dataset": "vtab", "task": "dtd", "group": "natural", "metric": "test_top1", "value": 0.7},
                               {"dataset": "vtab", "task": "mean", "group": "natural", "metric": "test_top1", "value": 0.7},
                               {"dataset": "vtab", "task": "mean", "group": "all", "metric": "test_top1", "value": v}]
                           for m, v in (("cs", 0.71), ("vc", 0.74))}),
        "invariance": _rows({m: [row for k in ("scale", "shift") for row in (
                                 {"dataset": "imagenet_val", "transform": k, "level": "", "variant": f"{k}-summary",
                                  "metric": "mean_top1", "value": v},
                                 {"dataset": "imagenet_val", "transform": k, "level": "", "variant": f"{k}-summary",
                                  "metric": "retained_top1", "value": v + 0.2},
                                 {"dataset": "imagenet_val", "transform": k, "level": 2, "variant": f"{k}-2",
                                  "metric": "top1", "value": v})]
                             for m, v in (("cs", 0.7), ("vc", 0.5))}),
        # cka.csv rows as cka_summary_rows writes them (a within pair per model, one cross pair).
        "cka": [{**a, "dataset": "imagenet_val", "partner": b["model"], "partner_label": b["label"], "kind": kind,
                 "metric": metric, "value": value}
                for a, b, kind, metric, value in (
                    (MODELS[0], MODELS[0], "within", "mean_layer_similarity", 0.6),
                    (MODELS[0], MODELS[0], "within", "first_last", 0.2),
                    (MODELS[1], MODELS[1], "within", "mean_layer_similarity", 0.8),
                    (MODELS[1], MODELS[1], "within", "first_last", 0.4),
                    (MODELS[0], MODELS[1], "cross", "last_layer", 0.5),
                    (MODELS[1], MODELS[0], "cross", "last_layer", 0.5))],
    }
    out = {}
    for name, rows in tables.items():
        write_table(rows, tmp_path / f"{name}.csv")
        out[name] = read_table(tmp_path / f"{name}.csv")  # as the profile reads them: "" -> NaN, ints
    return out


def test_every_registered_evaluation_gives_its_headline(tmp_path):
    tables = _tables(tmp_path)
    assert set(tables) == {n for n, r in EVALUATIONS.items() if r.headlines}  # the fixture covers the whole registry
    profile = build_profile(tables)
    got = {(r.evaluation, r.headline, r.model): r.value for r in profile.itertuples()}
    assert got[("accuracy", "top-1 % (imagenet_val)", "cs")] == pytest.approx(80.0)
    assert got[("calibration", "ECE (imagenet_val)", "vc")] == pytest.approx(0.13)
    assert got[("robustness", "robustness: mean top-1 % of shifted sets", "vc")] == pytest.approx(55.0)
    assert got[("imagenet_x", "ImageNet-X mean error ratio (imagenet_val)", "cs")] == pytest.approx(1.2)
    assert got[("shape_bias", "shape bias (cue_conflict)", "vc")] == pytest.approx(0.46)
    assert got[("pug", "PUG mean top-1 % (pug)", "cs")] == pytest.approx(32.0)
    assert got[("transfer", "VTAB linear probe mean top-1 % (vtab)", "vc")] == pytest.approx(74.0)
    assert got[("invariance", "shift: % of top-1 retained (imagenet_val)", "cs")] == pytest.approx(90.0)
    assert got[("cka", "mean layer-to-layer CKA (imagenet_val)", "vc")] == pytest.approx(0.8)
    assert len(profile) == 2 * 10  # one row per model and headline (invariance: one per transform)
    ordered = build_profile(tables, models=["vc", "cs"])
    assert list(ordered["model"][:4]) == ["vc", "cs", "vc", "cs"]  # study order within each headline
    assert list(dict.fromkeys(ordered["headline"])) == list(dict.fromkeys(profile["headline"]))
    assert set(profile["label"]) == {"ConvNet sup", "ViT CLIP"}


def test_rank_and_score_follow_the_direction(tmp_path):
    profile = build_profile(_tables(tmp_path)).set_index(["headline", "model"])
    # Higher is better: accuracy; lower is better: ECE and ImageNet-X error ratio.
    assert profile.loc[("top-1 % (imagenet_val)", "cs"), "rank"] == 1
    assert profile.loc[("ECE (imagenet_val)", "cs"), "rank"] == 1 and profile.loc[("ECE (imagenet_val)", "cs"), "score"] == 1
    assert profile.loc[("ImageNet-X mean error ratio (imagenet_val)", "vc"), "rank"] == 1
    assert profile.loc[("ECE (imagenet_val)", "vc"), "score"] == 0
    # No better direction (how alike a model's layers are): shown, neither ranked nor scored.
    cka = profile.loc["mean layer-to-layer CKA (imagenet_val)"]
    assert cka["rank"].isna().all() and cka["score"].isna().all()


def test_only_the_studys_evaluations_and_ties():
    assert profile_tables(["calibration", "cka", "invariance"]) == {"calibration": "calibration", "cka": "cka",
                                                                    "invariance": "invariance"}
    assert profile_tables(["calibration"]) == {"calibration": "calibration"}
    table = pd.DataFrame([{**m, "dataset": "d", "metric": "top1", "value": 0.5} for m in MODELS])
    profile = build_profile({"accuracy": table})
    assert list(profile["rank"]) == [1, 1] and profile["score"].isna().all()


def test_unknown_format_is_skipped_with_a_warning_and_duplicates_fail(caplog):
    table = pd.DataFrame([{**m, "dataset": "d", "measure": "top1", "value": 0.5} for m in MODELS])
    with caplog.at_level(logging.WARNING):
        assert headline_rows("accuracy", headlines("accuracy")[0], table) == []
    assert "no column 'metric'" in caplog.text
    twice = pd.DataFrame([{**MODELS[0], "dataset": "d", "metric": "top1", "value": v} for v in (0.1, 0.2)])
    with pytest.raises(ValueError, match="several rows"):
        headline_rows("accuracy", Headline("accuracy", {"metric": "top1"}, True, "x", by=()), twice)


def test_table_and_figure(tmp_path):
    from beyond_imagenet.profile import plot_profile

    profile = build_profile(_tables(tmp_path))
    write_profile(profile, tmp_path / "profile.csv")
    again = read_table(tmp_path / "profile.csv")
    assert len(again) == len(profile) and np.allclose(again["value"], profile["value"])
    plot_profile(again, [tmp_path / "profile.png", tmp_path / "profile.pdf"])
    assert (tmp_path / "profile.png").stat().st_size > 5000 and (tmp_path / "profile.pdf").stat().st_size > 1000
    empty = build_profile({})
    write_profile(empty, tmp_path / "empty.csv")
    plot_profile(read_table(tmp_path / "empty.csv"), [tmp_path / "empty.png"])

"""The across-model analysis (beyond_imagenet/across_models.py) on simulated studies: a planted
rank correlation / group difference is found, and where there is none the interval covers 0 at
about the stated level (over many seeds); the table and figure from a profile."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from beyond_imagenet.across_models import (
    COLUMNS,
    across_models,
    group_difference,
    plot_across_models,
    rank_correlation,
    spearman_rows,
)

LEVEL = 0.90
RESAMPLES = 400
SEEDS = 150


def test_spearman_rows_matches_scipy_with_ties():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 5, size=(3, 20)), rng.normal(size=(3, 20))
    for i in range(3):
        assert spearman_rows(x[i], y[i]) == pytest.approx(spearmanr(x[i], y[i]).statistic)
    assert np.isnan(spearman_rows(np.ones(5), np.arange(5.0)))


def _excludes_zero(low, high):
    return low > 0 or high < 0


def test_a_planted_rank_correlation_is_found_and_its_interval_covers_it():
    found, covered = 0, 0
    for seed in range(SEEDS // 3):
        rng = np.random.default_rng(seed)
        top1 = rng.uniform(60, 85, size=30)
        value = 0.5 * top1 + rng.normal(scale=2.0, size=30)  # rho about 0.9
        rho, low, high = rank_correlation(top1, value, RESAMPLES, seed, LEVEL)
        found += _excludes_zero(low, high) and rho > 0
        covered += low <= 0.89 <= high or low <= 0.93 <= high
    assert found == SEEDS // 3
    assert covered >= 0.7 * (SEEDS // 3)


def test_no_correlation_is_found_where_there_is_none_at_the_stated_level():
    false_positives = 0
    for seed in range(SEEDS):
        rng = np.random.default_rng(1000 + seed)
        top1, value = rng.uniform(60, 85, size=30), rng.normal(size=30)
        _, low, high = rank_correlation(top1, value, RESAMPLES, seed, LEVEL)
        false_positives += _excludes_zero(low, high)
    # Binomial(150, 0.10): mean 15, sd 3.7; the percentile bootstrap of a correlation over 30 points
    # under-covers a little. A broken interval (e.g. a quarter of the width) would give ~100.
    assert false_positives / SEEDS <= (1 - LEVEL) + 0.08


def _groups(rng, n=30):
    member = np.arange(n) < n // 3
    # The group's models are the more accurate ones: their raw values are higher everywhere the
    # property follows accuracy, so only a comparison at matched accuracy can be right.
    top1 = np.where(member, rng.uniform(75, 88, size=n), rng.uniform(60, 80, size=n))
    return top1, member


def test_no_group_difference_at_matched_accuracy_where_only_accuracy_differs():
    false_positives, raw_differences = 0, []
    for seed in range(SEEDS):
        rng = np.random.default_rng(2000 + seed)
        top1, member = _groups(rng)
        value = 2.0 * top1 + rng.normal(scale=3.0, size=len(top1))
        raw_differences.append(value[member].mean() - value[~member].mean())
        _, low, high, _ = group_difference(top1, value, member, RESAMPLES, seed, LEVEL)
        false_positives += _excludes_zero(low, high)
    assert np.mean(raw_differences) > 10  # the raw comparison would find a large difference
    assert false_positives / SEEDS <= (1 - LEVEL) + 0.08


def test_a_planted_group_difference_at_matched_accuracy_is_found():
    found, covered = 0, 0
    for seed in range(SEEDS // 3):
        rng = np.random.default_rng(3000 + seed)
        top1, member = _groups(rng)
        value = 2.0 * top1 + 6.0 * member + rng.normal(scale=3.0, size=len(top1))
        difference, low, high, standardized = group_difference(top1, value, member, RESAMPLES, seed, LEVEL)
        found += low > 0
        covered += low <= 6.0 <= high
        design = np.column_stack([np.ones_like(top1), top1, member])
        coef, *_ = np.linalg.lstsq(design, value, rcond=None)
        assert difference == pytest.approx(coef[2])  # the group coefficient of y ~ 1 + top1 + member
        assert standardized == pytest.approx(difference / np.std(value - design @ coef, ddof=3))
    assert found >= 0.9 * (SEEDS // 3)
    assert covered >= 0.75 * (SEEDS // 3)


def _profile(seed=0, n=12):
    rng = np.random.default_rng(seed)
    top1 = rng.uniform(60, 85, size=n)
    paradigm = np.where(np.arange(n) % 2 == 0, "supervised", "clip")
    data = np.where(np.arange(n) < 4, "IN-1k", np.where(np.arange(n) < 8, "LAION-2B", ""))
    rows = []
    headlines = {"top-1 % (imagenet_val)": ("accuracy", top1),
                 "ECE (imagenet_val)": ("calibration", -0.01 * top1 + rng.normal(scale=0.01, size=n)),
                 "shape bias (cue_conflict)": ("shape_bias", 0.3 + 0.4 * (paradigm == "clip") + rng.normal(scale=0.01,
                                                                                                         size=n))}
    for headline, (evaluation, values) in headlines.items():
        for i in range(n):
            rows.append({"model": f"m{i}", "label": f"m{i}", "family": "vit" if i < 6 else "convnet",
                         "paradigm": paradigm[i], "paper_key": "", "training_data": data[i],
                         "evaluation": evaluation, "headline": headline, "value": values[i]})
    return pd.DataFrame(rows)


def test_the_table_from_a_profile(tmp_path):
    uncertainty = {"level": 0.95, "resamples": 200, "seed": 0}
    table = across_models(_profile(), "top-1 % (imagenet_val)", uncertainty)
    assert list(table.columns) == list(COLUMNS)
    corr = table[table["analysis"] == "rank_correlation"].set_index("headline")
    assert set(corr.index) == {"ECE (imagenet_val)", "shape bias (cue_conflict)"}  # not top-1 against itself
    assert corr.loc["ECE (imagenet_val)", "value"] < -0.5 and corr.loc["ECE (imagenet_val)", "distinguishable"]
    groups = table[table["analysis"] == "group_difference"]
    shape = groups[(groups["headline"] == "shape bias (cue_conflict)") & (groups["grouping"] == "paradigm")]
    assert shape.set_index("group").loc["clip", "value"] == pytest.approx(0.4, abs=0.05)
    assert shape.set_index("group").loc["clip", "distinguishable"]
    # an empty training_data is no group; groups of one model are left out
    assert set(groups[groups["grouping"] == "training_data"]["group"]) == {"IN-1k", "LAION-2B"}
    assert set(groups["grouping"]) == {"paradigm", "family", "training_data"}
    # the same inputs give the same table (seeded)
    pd.testing.assert_frame_equal(table, across_models(_profile(), "top-1 % (imagenet_val)", uncertainty))
    paths = [tmp_path / "across.png", tmp_path / "across.pdf"]
    plot_across_models(table, paths, title="test")
    assert all(p.stat().st_size > 1000 for p in paths)
    with Image.open(paths[0]) as image:
        assert image.size[0] < 3000 and image.size[1] < 3000


def test_too_few_models_or_no_reference_give_an_empty_table(tmp_path):
    uncertainty = {"level": 0.95, "resamples": 50, "seed": 0}
    small = _profile(n=3)
    assert across_models(small, "top-1 % (imagenet_val)", uncertainty).empty
    assert across_models(_profile(), "top-1 % (somewhere)", uncertainty).empty
    plot_across_models(across_models(small, "top-1 % (imagenet_val)", uncertainty), [tmp_path / "empty.png"])
    assert (tmp_path / "empty.png").stat().st_size > 1000

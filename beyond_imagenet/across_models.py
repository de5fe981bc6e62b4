"""Across models: how much of each headline ImageNet accuracy accounts for, and what differs
between paradigms, families and training data at matched ImageNet accuracy (docs/evaluations.md §14).

Reads only the profile (``results/metrics/profile.csv``: one value per model and headline) and
writes ``results/metrics/across_models.csv`` with two kinds of rows:

- ``rank_correlation``: Spearman's rho between the headline and the reference (ImageNet top-1)
  across the models that have both, with a percentile bootstrap interval over *models*
  (models resampled with replacement, rho recomputed);
- ``group_difference``: for each grouping column (paradigm, family, training_data) and each of
  its groups, the difference between the group's models and all the others *at matched ImageNet
  accuracy*: the group coefficient of a least-squares fit headline ~ a + b top-1 + d group (two
  parallel lines; to the extent a line describes the relation). Not the mean residual of one
  line fitted to all models: where the group is also the more accurate one, that line's slope
  absorbs part of the difference (tests/test_across_models.py plants such a case). Its interval:
  a bootstrap over models stratified by group / rest (both keep their size), refitted in each
  resample. ``standardized`` is d over the fit's residual standard deviation, to compare
  headlines of different units.

The intervals are over the study's models as a sample of models: they say how much the answer
depends on which models were picked, not how well each model's value is measured (the
per-model intervals over images are not propagated).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from beyond_imagenet.metrics.bootstrap import (
    percentile_interval,
    resample_indices,
    unit_seed,
)

log = logging.getLogger(__name__)

GROUPINGS = ("paradigm", "family", "training_data")
#: Fewer models than this give no correlation, fewer in a group (or in the rest) no group row: the
#: bootstrap over a handful of models says little (a group of 2 resampled within itself gives a
#: near-zero-width interval). Even at these sizes the intervals are a little narrow: see
#: benchmarks/across_models_coverage.py and docs/evaluations.md §14.
MIN_MODELS = 8
MIN_GROUP = 4
COLUMNS = ("analysis", "evaluation", "headline", "reference", "grouping", "group", "n_models", "n_group",
           "value", "ci_low", "ci_high", "standardized", "level", "distinguishable")


def reference_headline(study) -> str | None:
    """The profile's ImageNet top-1 headline of a study: the accuracy headline of its first
    accuracy dataset of kind imagenet_val (None: the study has none)."""
    from beyond_imagenet.evaluations import EVALUATIONS

    if "accuracy" not in study.evaluations:
        return None
    for dataset in study.evaluation_datasets("accuracy"):
        if study.datasets[dataset].kind == "imagenet_val":
            headline = EVALUATIONS["accuracy"].headlines[0]
            return headline.name.format_map({"dataset": dataset}).replace(" ()", "")
    return None


def spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row of ``x`` with the same row of ``y`` (ties: average ranks);
    NaN for a row where either is constant."""
    rx, ry = rankdata(x, axis=-1), rankdata(y, axis=-1)
    rx = rx - rx.mean(axis=-1, keepdims=True)
    ry = ry - ry.mean(axis=-1, keepdims=True)
    denominator = np.sqrt((rx ** 2).sum(axis=-1) * (ry ** 2).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (rx * ry).sum(axis=-1) / denominator, np.nan)


def rank_correlation(x: Sequence[float], y: Sequence[float], resamples: int, seed, level: float
                     ) -> tuple[float, float, float]:
    """rho(x, y) and its percentile interval from ``resamples`` bootstrap resamples of the pairs."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    rho = float(spearman_rows(x, y))
    idx = np.stack(list(resample_indices(len(x), resamples, seed))) if resamples else np.zeros((0, len(x)), int)
    low, high = percentile_interval(spearman_rows(x[idx], y[idx]), level) if resamples else (np.nan, np.nan)
    return rho, low, high


def residual_differences(x: np.ndarray, y: np.ndarray, member: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of (x, y, member): the group coefficient d of the least-squares fit
    y ~ a + b x + d member (the group minus the rest at equal x; Frisch-Waugh: the slope of y's
    residual on x against member's residual on x), and the sd of that fit's residuals. A row
    with no spread in x has nothing to match on (b = 0: d is the difference of the means)."""
    x, y, member = np.atleast_2d(x), np.atleast_2d(y), np.atleast_2d(member).astype(float)
    xc = x - x.mean(axis=-1, keepdims=True)
    yc = y - y.mean(axis=-1, keepdims=True)
    mc = member - member.mean(axis=-1, keepdims=True)
    sxx = (xc ** 2).sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        y_on_x = yc - np.where(sxx > 0, (xc * yc).sum(axis=-1, keepdims=True) / sxx, 0.0) * xc
        m_on_x = mc - np.where(sxx > 0, (xc * mc).sum(axis=-1, keepdims=True) / sxx, 0.0) * xc
        smm = (m_on_x ** 2).sum(axis=-1)
        # a group whose accuracies cannot be told from the rest's by a line (no overlap left) has no d
        d = np.where(smm > 1e-9 * x.shape[-1], (m_on_x * y_on_x).sum(axis=-1) / smm, np.nan)
        residuals = y_on_x - d[:, None] * m_on_x
        n = x.shape[-1]
        sd = np.sqrt((residuals ** 2).sum(axis=-1) / (n - 3)) if n > 3 else np.full(len(x), np.nan)
    return d, sd


def group_difference(x: Sequence[float], y: Sequence[float], member: Sequence[bool], resamples: int, seed,
                     level: float) -> tuple[float, float, float, float]:
    """The group minus the rest at matched x (:func:`residual_differences`), its interval (bootstrap
    over models stratified by group / rest, refitted in each resample) and the standardized value."""
    x, y, member = np.asarray(x, float), np.asarray(y, float), np.asarray(member, bool)
    value, sd = (float(v[0]) for v in residual_differences(x, y, member))
    if resamples:
        idx = np.stack(list(resample_indices(len(x), resamples, seed, strata=member)))
        low, high = percentile_interval(residual_differences(x[idx], y[idx], member[idx])[0], level)
    else:
        low, high = np.nan, np.nan
    return value, low, high, (value / sd if np.isfinite(sd) and sd > 0 else np.nan)


def _distinguishable(low: float, high: float) -> Any:
    if not (np.isfinite(low) and np.isfinite(high)):
        return ""
    return bool(low > 0 or high < 0)


def across_models(profile: pd.DataFrame, reference: str, uncertainty: Mapping[str, Any],
                  groupings: Sequence[str] = GROUPINGS) -> pd.DataFrame:
    """The rows of across_models.csv (see the module docstring) from a profile table."""
    level, resamples, seed = float(uncertainty["level"]), int(uncertainty["resamples"]), int(uncertainty["seed"])
    rows: list[dict[str, Any]] = []
    if profile.empty or reference not in set(profile["headline"]):
        log.warning("across models: the profile has no %r headline; nothing to relate to ImageNet accuracy", reference)
        return pd.DataFrame(columns=COLUMNS)
    ref = profile[profile["headline"] == reference].set_index("model")["value"].astype(float)
    details = profile.drop_duplicates("model").set_index("model")
    for headline, group in profile.groupby("headline", sort=False):
        if headline == reference:
            continue
        values = group.set_index("model")["value"].astype(float)
        models = [m for m in values.index if m in ref.index and np.isfinite(values[m]) and np.isfinite(ref[m])]
        base = {"evaluation": group["evaluation"].iloc[0], "headline": headline, "reference": reference,
                "n_models": len(models), "level": level}
        if len(models) < MIN_MODELS:
            log.warning("across models: %s has %d model(s) with ImageNet accuracy; at least %d are needed",
                        headline, len(models), MIN_MODELS)
            continue
        x, y = ref[models].to_numpy(), values[models].to_numpy()
        rho, low, high = rank_correlation(x, y, resamples, unit_seed(seed, f"across:{headline}"), level)
        rows.append({**base, "analysis": "rank_correlation", "grouping": "", "group": "", "n_group": len(models),
                     "value": rho, "ci_low": low, "ci_high": high, "standardized": np.nan,
                     "distinguishable": _distinguishable(low, high)})
        for grouping in groupings:
            if grouping not in details.columns:
                continue
            labels = details.loc[models, grouping].fillna("").astype(str).to_numpy()
            for name in sorted(set(labels) - {""}):
                member = labels == name
                if member.sum() < MIN_GROUP or (~member).sum() < MIN_GROUP:
                    continue
                value, low, high, standardized = group_difference(
                    x, y, member, resamples, unit_seed(seed, f"across:{headline}:{grouping}:{name}"), level)
                rows.append({**base, "analysis": "group_difference", "grouping": grouping, "group": name,
                             "n_group": int(member.sum()), "value": value, "ci_low": low, "ci_high": high,
                             "standardized": standardized, "distinguishable": _distinguishable(low, high)})
    return pd.DataFrame(rows, columns=COLUMNS)


def write_across_models(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    from beyond_imagenet.io import atomic_path

    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.10g")


# ------------------------------------------------------------------------------------ figure
def plot_across_models(table: pd.DataFrame, paths: Sequence[str | os.PathLike], title: str = "") -> None:
    """Left: each headline's rank correlation with ImageNet top-1 and its interval over models.
    Right: standardized group - rest differences at matched accuracy (headline x group), a dot
    where the interval excludes 0. Sized by the number of headlines and groups."""
    from beyond_imagenet.style import plt, save_figure

    corr = table[table["analysis"] == "rank_correlation"].reset_index(drop=True)
    groups = table[table["analysis"] == "group_difference"]
    headlines = list(corr["headline"])
    columns = list(dict.fromkeys(f"{g}: {n}" for g, n in zip(groups["grouping"], groups["group"])))
    height = max(2.5, 0.32 * len(headlines) + 1.2)
    width_right = max(3.0, 0.35 * len(columns) + 1.5)
    fig, (left, right) = plt.subplots(1, 2, figsize=(4.5 + width_right, height), squeeze=True,
                                      gridspec_kw={"width_ratios": [4.5, width_right]})
    if corr.empty:
        left.text(0.5, 0.5, "no headline with enough models", ha="center", va="center", transform=left.transAxes)
    else:
        ypos = np.arange(len(corr))[::-1]
        err = np.vstack([corr["value"] - corr["ci_low"], corr["ci_high"] - corr["value"]])
        left.errorbar(corr["value"], ypos, xerr=np.nan_to_num(err), fmt="o", color="black", capsize=2)
        left.axvline(0, color="grey", lw=0.8)
        left.set_yticks(ypos, [f"{h} (n={n})" for h, n in zip(corr["headline"], corr["n_models"])])
        left.set_xlim(-1.05, 1.05)
        left.set_xlabel(f"Spearman rho with {corr['reference'].iloc[0]}")
    if columns and headlines:
        matrix = np.full((len(headlines), len(columns)), np.nan)
        significant = np.zeros_like(matrix, dtype=bool)
        for _, row in groups.iterrows():
            i, j = headlines.index(row["headline"]), columns.index(f"{row['grouping']}: {row['group']}")
            matrix[i, j] = row["standardized"]
            significant[i, j] = str(row["distinguishable"]) == "True"
        limit = np.nanmax(np.abs(matrix)) if np.isfinite(matrix).any() else 1.0
        image = right.imshow(matrix, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
        for i, j in zip(*np.nonzero(significant)):
            right.plot(j, i, marker="o", color="black", markersize=3)
        right.set_xticks(range(len(columns)), columns, rotation=60, ha="right")
        right.set_yticks(range(len(headlines)), [])
        fig.colorbar(image, ax=right, label="group - rest at matched top-1 (residual sd)", shrink=0.8)
    else:
        right.axis("off")
        right.text(0.5, 0.5, "no group with enough models", ha="center", va="center", transform=right.transAxes)
    if title:
        fig.suptitle(title)
    save_figure(fig, paths)

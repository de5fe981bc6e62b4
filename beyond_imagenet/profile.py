"""Model profile: every model across every evaluation the study ran, in one table and one figure.

The paper's point is that models with the same ImageNet accuracy differ everywhere else; the
profile puts one headline number per evaluation side by side. What the headline of an evaluation
is lives in each evaluation's registry record (``beyond_imagenet.evaluations``: which table,
which rows, higher or lower is better), so a new evaluation joins the profile with no change here.

The profile reads only the tidy metric tables (``results/metrics/<table>.csv``), never outputs.
Where the selected rows carry an interval (``ci_low`` / ``ci_high``), the profile carries it too,
scaled like the value; a profile of tables without intervals has no such columns.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from beyond_imagenet.style import plt, save_figure

log = logging.getLogger(__name__)

MODEL_COLUMNS = ("model", "label", "family", "paradigm", "paper_key", "training_data")
CI_COLUMNS = ("ci_low", "ci_high")


@dataclasses.dataclass(frozen=True)
class Headline:
    """One profile column (or one per distinct value of ``by``) taken from a metric table.

    ``select``: column -> accepted value (or tuple of values), compared as text; ``""`` matches
    an empty cell. ``by``: grouping columns giving one headline each (e.g. the dataset); those the
    table lacks are ignored. ``name``: display name, formatted with the ``by`` values.
    ``scale``: factor for display (1 = as stored). After selection each model must have exactly
    one row per ``by`` group. ``higher_is_better`` None: a property with no better direction
    (e.g. how alike a model's layers are), shown but neither ranked nor coloured. ``accuracy``
    and ``n``: see the fields.
    """

    table: str
    select: Mapping[str, str | tuple[str, ...]]
    higher_is_better: bool | None
    name: str
    by: tuple[str, ...] = ("dataset",)
    scale: float = 1.0
    #: The accuracy rows (same table, same model and ``by`` group) that say whether the model is at
    #: chance there: all of them with an interval reaching their dataset's (or VTAB task's) chance
    #: top-1. Such a cell is shown greyed and labelled, never ranked. None: never at chance.
    accuracy: Mapping[str, str | tuple[str, ...]] | None = None
    #: The count rows that give the column's n (images; or per ``n_per``, e.g. test images per task).
    n: Mapping[str, str | tuple[str, ...]] | None = None
    n_per: str = ""


def headlines(evaluation: str) -> tuple[Headline, ...]:
    """The headline numbers of an evaluation: its registry record's ``headlines`` (none for an
    evaluation the registry does not know)."""
    from beyond_imagenet.evaluations import EVALUATIONS

    record = EVALUATIONS.get(evaluation)
    return record.headlines if record else ()


def profile_tables(evaluations: Sequence[str]) -> dict[str, str]:
    """Metric tables the profile reads for a study's evaluations: evaluation -> table name.

    Evaluations without a registered headline are left out (CKA's is read from ``cka.csv``, the
    tidy summary of its matrices).
    """
    out = {}
    for evaluation in evaluations:
        for headline in headlines(evaluation):
            out.setdefault(evaluation, headline.table)
    return out


def _text(series: pd.Series) -> pd.Series:
    """Cells as text for matching: empty -> "", 1.0 -> "1" (tables store mixed types)."""

    def one(value: Any) -> str:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return ""
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)

    return series.map(one)


def _matching(table: pd.DataFrame, select: Mapping[str, str | tuple[str, ...]]) -> pd.Series | None:
    """Rows of ``table`` whose columns hold the accepted values (as text); None if a column is missing."""
    keep = pd.Series(True, index=table.index)
    for column, wanted in select.items():
        if column not in table.columns:
            return None
        accepted = {wanted} if isinstance(wanted, str) else set(wanted)
        keep &= _text(table[column]).isin(accepted)
    return keep


def _group(table: pd.DataFrame, model: Any, groups: Mapping[str, Any]) -> pd.Series:
    """Rows of ``table`` of ``model`` in the ``by`` group ``groups`` (columns the table has)."""
    keep = _text(table["model"]) == str(model)
    for column, value in groups.items():
        keep &= _text(table[column]) == _text(pd.Series([value])).iloc[0]
    return keep


def _at_chance(table: pd.DataFrame, keep: pd.Series | None, chance: Mapping[str, float] | None) -> bool:
    """Whether every selected accuracy row is at chance (style.at_chance) on its dataset / task."""
    from beyond_imagenet.style import at_chance, chance_of

    if keep is None or not chance or not keep.any():
        return False
    rows = table[keep]
    with_ci = all(c in rows.columns for c in CI_COLUMNS)
    verdicts = []
    for _, row in rows.iterrows():
        level = chance_of(chance, "" if pd.isna(row.get("dataset")) else row.get("dataset"),
                          None if pd.isna(row.get("task", None)) else row.get("task"))
        low = pd.to_numeric(pd.Series([row[CI_COLUMNS[0]] if with_ci else np.nan]), errors="coerce").iloc[0]
        high = pd.to_numeric(pd.Series([row[CI_COLUMNS[1]] if with_ci else np.nan]), errors="coerce").iloc[0]
        verdicts.append(at_chance(float(row["value"]), (low, high) if np.isfinite(low) else None, level))
    return all(verdicts)


def _n(table: pd.DataFrame, keep: pd.Series | None, per: str) -> str:
    from beyond_imagenet.style import n_text

    if keep is None or not keep.any():
        return ""
    return n_text(pd.to_numeric(table.loc[keep, "value"], errors="coerce").tolist(), per)


def headline_rows(evaluation: str, headline: Headline, table: pd.DataFrame,
                  chance: Mapping[str, float] | None = None) -> list[dict[str, Any]]:
    """The profile rows of one headline: one per (model, by-group); with ``ci_low`` / ``ci_high``
    (x scale, NaN for an empty cell) when the table has those columns; ``n`` (text, e.g. "n=38")
    and ``at_chance`` (see :class:`Headline`; ``chance``: dataset / ``<dataset>/<task>`` -> chance
    top-1, ``evaluations.chance_levels``)."""
    keep = _matching(table, headline.select)
    if keep is None:
        missing = next(c for c in headline.select if c not in table.columns)
        log.warning("profile: %s table has no column %r; %s skipped", headline.table, missing, evaluation)
        return []
    rows = table[keep]
    if rows.empty:
        log.warning("profile: no %s rows match %s; %s skipped", headline.table, dict(headline.select), evaluation)
        return []
    by = [c for c in headline.by if c in rows.columns]
    out = []
    keys = ["model", *by]
    duplicated = rows.duplicated(subset=keys, keep=False)
    if duplicated.any():
        raise ValueError(f"profile: {evaluation} headline selects several rows per {keys} in {headline.table}, e.g.\n"
                         f"{rows[duplicated].head(4).to_string()}")
    with_ci = all(c in rows.columns for c in CI_COLUMNS)
    accuracy = _matching(table, headline.accuracy) if headline.accuracy else None
    counts = _matching(table, headline.n) if headline.n else None
    for _, row in rows.iterrows():
        groups = {c: ("" if pd.isna(row[c]) else row[c]) for c in by}
        name = headline.name.format_map(_Blank(groups)).replace(" ()", "")
        mine = _group(table, row["model"], groups)
        out.append({**{c: ("" if c not in row or pd.isna(row[c]) else row[c]) for c in MODEL_COLUMNS},
                    "evaluation": evaluation, "headline": name, "value": float(row["value"]) * headline.scale,
                    **(_interval(row, headline.scale) if with_ci else {}),
                    "higher_is_better": headline.higher_is_better,
                    "n": _n(table, None if counts is None else counts & mine, headline.n_per),
                    "at_chance": _at_chance(table, None if accuracy is None else accuracy & mine, chance)})
    return out


def _interval(row: pd.Series, scale: float) -> dict[str, float]:
    """ci_low / ci_high of a table row x scale (ordered again if the scale is negative)."""
    low, high = (pd.to_numeric(pd.Series([row[c]]), errors="coerce").iloc[0] * scale for c in CI_COLUMNS)
    if low > high:
        low, high = high, low
    return {"ci_low": float(low), "ci_high": float(high)}


class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return ""


def build_profile(tables: Mapping[str, pd.DataFrame], models: Sequence[str] | None = None,
                  comparisons: pd.DataFrame | None = None, chance: Mapping[str, float] | None = None) -> pd.DataFrame:
    """The profile of every model: evaluation -> its metric table (as read) in, tidy rows out.

    Adds per headline ``rank`` (1 = best model) and ``score`` (0 = worst, 1 = best, linear in the
    value; NaN when all models tie or the value is missing), so the figure can colour by "better".
    ``models``: the study's order of models (rows keep it within each headline). ``ci_low`` /
    ``ci_high`` (after ``value``) only when some headline row has an interval. ``comparisons``
    (``comparisons.csv``) adds ``rank_significant``: whether the interval of the paired difference
    to the next-ranked model excludes 0 (the last-ranked model: to the one above it); empty
    without a comparison or a better direction. ``n``: the images the cell rests on (text);
    ``at_chance``: the model is at chance there (``chance``: see :func:`headline_rows`); such rows
    get no rank and no score, so a guessing model is never coloured as best.
    """
    rows: list[dict[str, Any]] = []
    for evaluation, table in tables.items():
        for headline in headlines(evaluation):
            rows += headline_rows(evaluation, headline, table, chance)
    with_ci = any(np.isfinite(row.get(c, np.nan)) for row in rows for c in CI_COLUMNS)
    frame = pd.DataFrame(rows, columns=[*MODEL_COLUMNS, "evaluation", "headline", "value",
                                        *(CI_COLUMNS if with_ci else ()), "higher_is_better", "n", "at_chance"])
    if frame.empty:
        return frame.assign(rank=pd.Series(dtype=float), score=pd.Series(dtype=float))
    ranks, scores = [], []
    for _, group in frame.groupby("headline", sort=False):
        values = group["value"].astype(float).where(~group["at_chance"].astype(bool))
        direction = group["higher_is_better"].iloc[0]
        if direction is None or pd.isna(direction):
            ranks.append(values * np.nan)
            scores.append(values * np.nan)
            continue
        signed = values if direction else -values
        ranks.append(signed.rank(ascending=False, method="min"))
        low, high = signed.min(), signed.max()
        scores.append((signed - low) / (high - low) if high > low else signed * np.nan)
    frame["rank"] = pd.concat(ranks)
    frame["score"] = pd.concat(scores)
    if comparisons is not None:
        frame["rank_significant"] = rank_significance(frame, comparisons)
    if models is not None:
        order = {m: i for i, m in enumerate(models)}
        frame = frame.assign(_order=frame["model"].map(lambda m: order.get(m, len(order))))
        frame["_headline"] = frame["headline"].map({h: i for i, h in enumerate(dict.fromkeys(frame["headline"]))})
        frame = frame.sort_values(["_headline", "_order"], kind="stable").drop(columns=["_order", "_headline"])
        frame = frame.reset_index(drop=True)
    return frame


def rank_significance(frame: pd.DataFrame, comparisons: pd.DataFrame) -> pd.Series:
    """Per profile row: True / False (see :func:`build_profile`), or None."""
    distinguishable = {}
    for _, row in comparisons.iterrows():
        value = _direction(row["distinguishable"])
        distinguishable[(row["headline"], frozenset((row["model_a"], row["model_b"])))] = value
    out = pd.Series([None] * len(frame), index=frame.index, dtype=object)
    for headline, group in frame.groupby("headline", sort=False):
        ranked = group.dropna(subset=["rank"]).sort_values("rank", kind="stable")
        order = list(ranked.index)
        for k, index in enumerate(order):
            neighbour = order[k + 1] if k + 1 < len(order) else (order[k - 1] if k else None)
            if neighbour is not None:
                pair = frozenset((frame.at[index, "model"], frame.at[neighbour, "model"]))
                out.at[index] = distinguishable.get((headline, pair))
    return out


def read_tables(paths: Mapping[str, str | os.PathLike]) -> dict[str, pd.DataFrame]:
    from beyond_imagenet.tables import read_table

    return {evaluation: read_table(path) for evaluation, path in paths.items()}


def write_profile(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    """Like tables.write_table, but keeps the header when no headline was found."""
    from beyond_imagenet.io import atomic_path

    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.10g")


# ------------------------------------------------------------------------------------ figure
def _direction(value) -> bool | None:
    """higher_is_better as read back from CSV: True, False, or None for an empty cell."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, str):
        return {"true": True, "false": False}.get(value.strip().lower())
    return bool(value)


def _interval_text(value: float, low: float, high: float) -> str:
    """``[low, high]`` with the decimals of the value's 3 significant digits."""
    magnitude = max(abs(value), abs(low), abs(high))
    decimals = max(0, 2 - int(np.floor(np.log10(magnitude)))) if magnitude > 0 else 0
    return f"[{low:.{decimals}f}, {high:.{decimals}f}]"


def plot_profile(profile: pd.DataFrame, paths: Sequence, title: str = "Model profile"):
    """Every model (rows) across every evaluation headline (columns) on one page.

    Cell colour: how good the model is on that headline relative to the others (green = best,
    red = worst; grey = no spread, missing, or no better direction); cell text: the value, and
    below it the interval ``[ci_low, ci_high]`` where the profile has one. A cell whose model is at
    chance there (``at_chance``) is grey, hatched and labelled "chance" (it has no rank). Column
    names carry ↑ / ↓ for higher / lower is better and the cell's n. Returns the saved (closed)
    figure.
    """
    import textwrap

    if profile.empty:
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.axis("off")
        ax.text(0.5, 0.5, "no evaluation with a headline number in this study", ha="center", va="center")
        save_figure(fig, paths)
        return fig
    headlines = list(dict.fromkeys(profile["headline"]))
    models = list(dict.fromkeys(profile["model"]))
    labels = profile.drop_duplicates("model").set_index("model")["label"].to_dict()
    score = profile.pivot(index="model", columns="headline", values="score").reindex(index=models, columns=headlines)
    value = profile.pivot(index="model", columns="headline", values="value").reindex(index=models, columns=headlines)
    bounds = None
    if all(c in profile.columns for c in CI_COLUMNS):
        bounds = [profile.assign(**{c: pd.to_numeric(profile[c], errors="coerce")})
                  .pivot(index="model", columns="headline", values=c).reindex(index=models, columns=headlines)
                  for c in CI_COLUMNS]
    better = profile.drop_duplicates("headline").set_index("headline")["higher_is_better"].to_dict()
    # "*": the ranking against the next-ranked model is not significant (its interval includes 0).
    marks = profile["rank_significant"].map(lambda v: _direction(v) is not False) if "rank_significant" in profile \
        else pd.Series(True, index=profile.index)
    significant = profile.assign(_mark=marks).pivot(index="model", columns="headline", values="_mark") \
        .reindex(index=models, columns=headlines).fillna(True)
    guessing = (profile.assign(_chance=profile["at_chance"].map(lambda v: _direction(v) is True))
                .pivot(index="model", columns="headline", values="_chance").reindex(index=models, columns=headlines)
                .fillna(False).astype(bool)) if "at_chance" in profile else None
    n_of = {}
    if "n" in profile:
        for h, group in profile.groupby("headline", sort=False):
            found = [str(v) for v in dict.fromkeys(group["n"]) if isinstance(v, str) and v]
            n_of[h] = found[0] if len(found) == 1 else " / ".join(found)
    fig, ax = plt.subplots(figsize=(1.3 + 1.15 * len(headlines), 1.6 + 0.45 * len(models)))
    cmap = plt.get_cmap("RdYlGn").with_extremes(bad="#dddddd")
    # Colour range padded so that the extremes stay light enough to read the numbers on.
    ax.imshow(np.ma.masked_invalid(score.to_numpy(dtype=float)), cmap=cmap, vmin=-0.35, vmax=1.35, aspect="auto")
    for i in range(len(models)):
        for j in range(len(headlines)):
            v = value.iat[i, j]
            text = "–" if pd.isna(v) else f"{v:.3g}" + ("*" if not significant.iat[i, j] else "")
            low, high = (np.nan, np.nan) if bounds is None else (bounds[0].iat[i, j], bounds[1].iat[i, j])
            at_chance = guessing is not None and guessing.iat[i, j]
            if at_chance:  # greyed: not a result, whatever the number
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="#dddddd", edgecolor="white",
                                           hatch="//", linewidth=0, label="_chance_cell", zorder=1))
                text += "\nchance"
            style = dict(color="0.45") if at_chance else {}
            if pd.isna(v) or pd.isna(low) or pd.isna(high):
                ax.text(j, i, text, ha="center", va="center", fontsize=7, zorder=2, **style)
            else:
                ax.text(j, i, f"{text}\n{_interval_text(v, low, high)}", ha="center", va="center", fontsize=6,
                        linespacing=1.1, zorder=2, **style)
    ax.set_xticks(range(len(headlines)))
    arrows = {True: " ↑", False: " ↓"}
    ax.set_xticklabels([textwrap.fill(f"{h}{arrows.get(_direction(better[h]), '')}", 18)
                        + (f"\n{n_of[h]}" if n_of.get(h) else "") for h in headlines], fontsize=6.5, rotation=0)
    ax.xaxis.tick_top()
    ax.set_yticks(range(len(models)))
    ax.set_yticklabels([labels.get(m, m) for m in models], fontsize=8)
    ax.set_title(title, fontsize=10, pad=12)
    notes = []
    if not significant.to_numpy(dtype=bool).all():
        notes.append("* rank not significant: the interval of the difference to the next-ranked model includes 0")
    if guessing is not None and guessing.to_numpy().any():
        notes.append("grey 'chance': the model's accuracy interval there reaches chance (1 / number of classes); "
                     "not ranked")
    if notes:
        fig.text(0.01, 0.005, "\n".join(notes), fontsize=6)
    fig.tight_layout()
    save_figure(fig, paths)
    return fig

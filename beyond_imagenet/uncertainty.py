"""An uncertainty on every number (docs/evaluations.md §11): bootstrap intervals of the metric tables
and paired model-against-model differences, from the cached outputs (no model runs).

An evaluation hands over its images as :class:`beyond_imagenet.evaluations.Sample` records (one per
model and set of images: per-image arrays and the function that turns them into the table's rows)
through its record's ``samples``; model-level rows computed across samples (the robustness
average, the VTAB means) come from its ``combine``. Then, generically:

* :func:`model_replicates`: every sample's rows on ``resamples`` seeded resamples of its images
  (identical indices for every model scored on the same images), plus the combined rows;
* :func:`add_intervals`: ``ci_low`` / ``ci_high`` of every table row a replicate exists for
  (matched by the row's non-value columns); counts and rows no sample recomputes stay empty;
* :func:`compare`: every headline, every pair of models: the difference on the common images,
  its interval from identical resamples, McNemar's exact p where the headline is one accuracy.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from beyond_imagenet.metrics.bootstrap import mcnemar_exact, percentile_interval, resample_indices, unit_seed

if TYPE_CHECKING:  # pragma: no cover
    from beyond_imagenet.evaluations import Evaluation, Sample

log = logging.getLogger(__name__)

Rows = list[dict[str, Any]]
Key = tuple
#: Columns a table row carries for its model (study.model_columns), not part of a row's identity.
MODEL_DETAIL_COLUMNS = {"label", "family", "paradigm", "paper_key", "training_data"}
IGNORED = {"value", "ci_low", "ci_high", "model", *MODEL_DETAIL_COLUMNS}
COMPARISON_COLUMNS = ("evaluation", "headline", "dataset", "model_a", "model_b", "label_a", "label_b",
                      "difference", "ci_low", "ci_high", "mcnemar_p", "distinguishable", "n", "n_unit")


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def row_key(row: Mapping[str, Any]) -> Key:
    """What identifies a row within its model: every column but the value, the CI and the model's."""
    return tuple(sorted((k, _text(v)) for k, v in row.items() if k not in IGNORED))


@dataclasses.dataclass
class Entry:
    point: float
    replicates: np.ndarray
    sample: "Sample | None" = None  # the sample whose rows give it (None: a combined row)
    positions: np.ndarray | None = None  # the sample's images it was computed on (None: all)
    n: int | None = None  # the images it rests on (a combined row: those of the samples it combines)


def _rows_to_entries(sample: "Sample", data: Mapping[str, np.ndarray], strata, resamples: int,
                     seed: int, positions=None) -> dict[Key, Entry]:
    point_rows = sample.rows(data)
    keys = [row_key(r) for r in point_rows]
    where = {k: j for j, k in enumerate(keys)}
    values = np.full((resamples, len(keys)), np.nan)
    n = len(next(iter(data.values()))) if data else 0
    for b, idx in enumerate(resample_indices(n, resamples, unit_seed(seed, sample.unit), strata)):
        rows = sample.rows({name: array[idx] for name, array in data.items()})
        if keys and len(rows) == len(keys) and row_key(rows[0]) == keys[0] and row_key(rows[-1]) == keys[-1]:
            values[b] = [r["value"] for r in rows]  # the same rows in the same order (the usual case)
        else:
            for r in rows:
                j = where.get(row_key(r))
                if j is not None:
                    values[b, j] = r["value"]
    return {k: Entry(float(r["value"]), values[:, j], sample, positions, _row_images(sample, data, r, n))
            for j, (k, r) in enumerate(zip(keys, point_rows))}


def _row_images(sample: "Sample", data: Mapping[str, np.ndarray], row: Mapping[str, Any], n: int) -> int:
    """The images a row rests on: all ``n``, or the finite values of its ``Sample.row_data`` array."""
    name = sample.row_data(row) if getattr(sample, "row_data", None) is not None else None
    return n if name is None else int(np.isfinite(np.asarray(data[name], dtype=float)).sum())


def _restricted(sample: "Sample", positions: np.ndarray | None):
    if positions is None:
        return sample.data, sample.strata
    return ({k: v[positions] for k, v in sample.data.items()},
            None if sample.strata is None else np.asarray(sample.strata)[positions])


def model_replicates(samples: Sequence["Sample"], uncertainty: Mapping[str, Any],
                     combine: Callable[[Rows], Rows] | None = None,
                     positions: Mapping[str, np.ndarray] | None = None) -> dict[Key, Entry]:
    """The entries (point value and replicates) of one model's rows from its samples, and of the
    rows ``combine`` makes of them (each replicate: the samples' replicate ``b``, so the images of
    every set are resampled within it). ``positions``: per unit, the images to use (common ids)."""
    resamples, seed = int(uncertainty["resamples"]), int(uncertainty["seed"])
    entries: dict[Key, Entry] = {}
    for sample in samples:
        pos = (positions or {}).get(sample.unit)
        data, strata = _restricted(sample, pos)
        entries.update(_rows_to_entries(sample, data, strata, resamples, seed, pos))
    if combine is not None and entries:
        keys = list(entries)

        def rows_of(values) -> Rows:
            return [{**dict(k), "value": v} for k, v in zip(keys, values)]

        point = combine(rows_of([entries[k].point for k in keys]))
        matrix = np.stack([entries[k].replicates for k in keys], axis=1)
        combined = {row_key(r): (float(r["value"]), np.full(resamples, np.nan)) for r in point}
        for b in range(resamples):
            for r in combine(rows_of(matrix[b])):
                if row_key(r) in combined:
                    combined[row_key(r)][1][b] = r["value"]
        images = _combined_images(combine, keys, entries, rows_of)
        for k, (value, reps) in combined.items():
            entries[k] = Entry(value, reps, n=images.get(k))
    return entries


def _combined_images(combine: Callable[[Rows], Rows], keys: list[Key], entries: Mapping[Key, Entry],
                     rows_of: Callable) -> dict[Key, int]:
    """Per row ``combine`` makes: the images it rests on, the sum over the samples (units) whose rows
    change it (each unit's values moved in turn; e.g. the robustness average rests on its shifted
    sets, not on clean ImageNet)."""
    point = [entries[k].point for k in keys]
    base = {row_key(r): float(r["value"]) for r in combine(rows_of(point))}
    units: dict[tuple[str, int], tuple[list[int], int]] = {}  # rows of one set resting on the same images
    for j, k in enumerate(keys):
        entry = entries[k]
        if entry.sample is not None and entry.n is not None:
            units.setdefault((entry.sample.unit, entry.n), ([], entry.n))[0].append(j)
    out = dict.fromkeys(base, 0)
    for positions, n in units.values():
        moved = list(point)
        for j in positions:
            moved[j] = moved[j] + 1.0
        for r in combine(rows_of(moved)):
            key = row_key(r)
            before, after = base.get(key, np.nan), float(r["value"])
            if key in out and not (before == after or (np.isnan(before) and np.isnan(after))):
                out[key] += n
    return {k: v for k, v in out.items() if v}


def replicates_by_model(samples: Sequence["Sample"], uncertainty, combine=None) -> dict[str, dict[Key, Entry]]:
    by_model: dict[str, list] = defaultdict(list)
    for sample in samples:
        by_model[sample.model].append(sample)
    return {model: model_replicates(group, uncertainty, combine) for model, group in by_model.items()}


def add_intervals(rows: Rows, replicates: Mapping[str, Mapping[Key, Entry]], level: float) -> Rows:
    """``rows`` with ``ci_low`` / ``ci_high`` (after ``value``): the percentile interval of the
    row's replicates; NaN (an empty cell) for counts and rows without replicates."""
    out = []
    for row in rows:
        entry = replicates.get(row.get("model"), {}).get(row_key(row))
        low, high = percentile_interval(entry.replicates, level) if entry is not None else (np.nan, np.nan)
        out.append({**row, "ci_low": low, "ci_high": high})
    return out


def with_empty_intervals(rows: Rows) -> Rows:
    return [{**row, "ci_low": np.nan, "ci_high": np.nan} for row in rows]


# ------------------------------------------------------------------------------- comparisons
def _selected(key: Key, select: Mapping[str, Any]) -> bool:
    columns = dict(key)
    for column, wanted in select.items():
        accepted = {wanted} if isinstance(wanted, str) else set(wanted)
        if column not in columns or columns[column] not in accepted:
            return False
    return True


def _common_positions(a: "Sample", b: "Sample"):
    """Positions in a and in b of the images both scored (in a's order); None, None when identical."""
    if a.ids is b.ids:  # one array in memory for every model of a set (workflow.reduced_item)
        return None, None
    ids_a, ids_b = np.asarray(a.ids), np.asarray(b.ids)
    if ids_a.shape == ids_b.shape and np.array_equal(ids_a, ids_b):
        return None, None
    where_b = {sid: i for i, sid in enumerate(ids_b.tolist())}
    pos_a = np.asarray([i for i, sid in enumerate(ids_a.tolist()) if sid in where_b], dtype=np.int64)
    pos_b = np.asarray([where_b[sid] for sid in ids_a[pos_a].tolist()], dtype=np.int64)
    return pos_a, pos_b


def compare(record: "Evaluation", samples: Sequence["Sample"], replicates: Mapping[str, Mapping[Key, Entry]],
            uncertainty: Mapping[str, Any], model_columns: Mapping[str, Mapping[str, Any]]) -> Rows:
    """Every pair of models (study order) on every headline of ``record``: the paired difference
    ``a - b`` (in the headline's display units, as in the profile) on the images both scored, its
    percentile interval from identical resamples, and McNemar's exact p when the headline is the
    mean of one sample's per-image correct vector (``Sample.correct``)."""
    from beyond_imagenet.profile import _Blank

    level = float(uncertainty["level"])
    by_model: dict[str, dict[str, "Sample"]] = defaultdict(dict)
    for sample in samples:
        by_model[sample.model][sample.unit] = sample
    models = [m for m in model_columns if m in by_model]
    out: Rows = []
    for i, a in enumerate(models):
        for b in models[i + 1:]:
            units = [u for u in by_model[a] if u in by_model[b]]
            positions = {u: _common_positions(by_model[a][u], by_model[b][u]) for u in units}
            if set(units) == set(by_model[a]) == set(by_model[b]) and all(p[0] is None for p in positions.values()):
                entries_a, entries_b = replicates[a], replicates[b]  # same images: the table's replicates
            else:
                entries_a = model_replicates([by_model[a][u] for u in units], uncertainty, record.combine,
                                             {u: p[0] for u, p in positions.items() if p[0] is not None})
                entries_b = model_replicates([by_model[b][u] for u in units], uncertainty, record.combine,
                                             {u: p[1] for u, p in positions.items() if p[1] is not None})
            for headline in record.headlines:
                # Rows of the two models pair on their columns but the record's `pair_ignore` (e.g.
                # the CKA within-model row's partner, which is the model itself).
                paired = {_pair_key(k, record.pair_ignore): e for k, e in entries_b.items()
                          if _selected(k, headline.select)}
                for key, ea in entries_a.items():
                    eb = paired.get(_pair_key(key, record.pair_ignore))
                    if eb is None or not _selected(key, headline.select):
                        continue
                    columns = dict(key)
                    groups = {c: columns.get(c, "") for c in headline.by if c in columns}
                    diff = (ea.replicates - eb.replicates) * headline.scale
                    low, high = percentile_interval(diff, level)
                    out.append({
                        "evaluation": record.name,
                        "headline": headline.name.format_map(_Blank(groups)).replace(" ()", ""),
                        "dataset": columns.get("dataset", ""), "model_a": a, "model_b": b,
                        "label_a": model_columns[a].get("label", a), "label_b": model_columns[b].get("label", b),
                        "difference": (ea.point - eb.point) * headline.scale, "ci_low": low, "ci_high": high,
                        "mcnemar_p": _mcnemar(ea, eb, columns.get("metric")),
                        "distinguishable": bool(low > 0 or high < 0) if not np.isnan(low) else "",
                        # the images both models were scored on (an average: summed over its sets)
                        "n": ea.n if ea.n is not None else "",
                        "n_unit": _counts(ea) if ea.n is not None else "",
                    })
    return out


def _counts(entry: Entry) -> str:
    """What the entry's n counts (``Sample.counts``; a combined row: its samples', "images")."""
    return getattr(entry.sample, "counts", "images") if entry.sample is not None else "images"


def _pair_key(key: Key, ignore: Sequence[str]) -> Key:
    return tuple((c, v) for c, v in key if c not in ignore)


def _mcnemar(ea: Entry, eb: Entry, metric: str | None) -> float:
    if ea.sample is None or eb.sample is None or metric not in ea.sample.correct:
        return np.nan
    column = ea.sample.correct[metric]
    a = ea.sample.data[column] if ea.positions is None else ea.sample.data[column][ea.positions]
    b = eb.sample.data[column] if eb.positions is None else eb.sample.data[column][eb.positions]
    return mcnemar_exact(a, b)


def write_comparisons(rows: Rows, path) -> None:
    import pandas as pd

    from beyond_imagenet.io import atomic_path

    frame = pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.10g")


def table_and_comparisons(record: "Evaluation", job) -> tuple[Rows, Rows]:
    """The record's table with its intervals, and its comparisons (the compute job's two outputs)."""
    rows = record.table(job)
    uncertainty = getattr(job.params, "uncertainty", None) if record.samples else None
    if not uncertainty:
        return with_empty_intervals(rows), []
    samples = record.samples(job)
    replicates = replicates_by_model(samples, uncertainty, record.combine)
    return (add_intervals(rows, replicates, float(uncertainty["level"])),
            compare(record, samples, replicates, uncertainty, job.params.models))


# ------------------------------------------------------------------------------------ figure
def plot_comparisons(comparisons, paths, title: str = "Model against model") -> None:
    """One panel per headline, its n (images the differences are over) in the title. Up to
    ``style.MANY_MODELS`` models: every pair's difference a − b (dot) with its interval (bar); a
    filled dot: the interval excludes 0 (distinguishable), hollow: it does not. Past it: a model x
    model matrix (row − column, coloured by the difference, a dot where the interval excludes 0)
    with model names in ``style.model_fontsize``. Returns the saved (closed) figure."""
    import math

    import pandas as pd

    from beyond_imagenet.style import many_models, n_text, plt, save_figure, suptitle_above

    if comparisons.empty:
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.axis("off")
        ax.text(0.5, 0.5, "no model pairs to compare in this study", ha="center", va="center")
        save_figure(fig, paths)
        return fig
    headlines = list(dict.fromkeys(comparisons["headline"]))
    models_of = {h: list(dict.fromkeys([*g["model_a"], *g["model_b"]]))
                 for h, g in comparisons.groupby("headline", sort=False)}
    n_models = max(len(m) for m in models_of.values())
    counts = pd.to_numeric(comparisons["n"], errors="coerce") if "n" in comparisons else None

    def n_of(headline) -> str:
        if counts is None:
            return ""
        mine = comparisons["headline"] == headline
        text = n_text(counts[mine].tolist())
        units = [str(u) for u in dict.fromkeys(comparisons.loc[mine, "n_unit"]) if isinstance(u, str) and u] \
            if "n_unit" in comparisons else []
        return f"{text} {' / '.join(units) or 'images'}" if text else ""

    if many_models(n_models):
        return _comparison_matrices(comparisons, headlines, models_of, n_of, paths, title)
    cols = min(3, len(headlines))
    rows = math.ceil(len(headlines) / cols)
    n_pairs = comparisons.groupby("headline").size().max()
    longest = max(len(f"{a} − {b}") for a, b in zip(comparisons["label_a"], comparisons["label_b"]))
    width = 2.2 + longest * 5.5 * 0.55 / 72  # the plot, and the pair names in 5.5 pt
    height = 0.9 + (0.28 * n_pairs + 0.9) * rows
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height), squeeze=False)
    for ax in axes.flat[len(headlines):]:
        ax.set_visible(False)
    for ax, headline in zip(axes.flat, headlines):
        data = comparisons[comparisons["headline"] == headline].reset_index(drop=True)
        y = range(len(data))[::-1]
        diff = data["difference"].astype(float)
        low = (diff - data["ci_low"].astype(float)).clip(lower=0)
        high = (data["ci_high"].astype(float) - diff).clip(lower=0)
        ax.errorbar(diff, list(y), xerr=[low.fillna(0), high.fillna(0)], fmt="none", ecolor="0.35", linewidth=1)
        distinct = data["distinguishable"].map(lambda v: str(v).strip().lower() == "true")
        for yi, d, filled in zip(y, diff, distinct):
            ax.plot(d, yi, "o", color="#1f77b4", markerfacecolor="#1f77b4" if filled else "white", markersize=5)
        ax.axvline(0, color="black", linewidth=0.7, linestyle="--")
        ax.set_yticks(list(y))
        ax.set_yticklabels([f"{a} − {b}" for a, b in zip(data["label_a"], data["label_b"])], fontsize=5.5)
        n = n_of(headline)
        ax.set_title(headline + (f"\n{n}" if n else ""), fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
    suptitle_above(fig, f"{title} (filled: interval excludes 0)", fontsize=10)
    save_figure(fig, paths)
    return fig


def _comparison_matrices(comparisons, headlines, models_of, n_of, paths, title):
    """Past ``style.MANY_MODELS``: per headline the matrix of row − column differences (RdBu,
    symmetric about 0 per panel), a black dot where its interval excludes 0; models in study order."""
    import math

    from beyond_imagenet.style import model_fontsize, plt, row_inches, save_figure, suptitle_above

    n = max(len(m) for m in models_of.values())
    side = row_inches(n) * n
    size = model_fontsize(n)
    cols = min(2 if n > 16 else 3, len(headlines))
    rows = math.ceil(len(headlines) / cols)
    label_inches = max(len(str(x)) for x in [*comparisons["label_a"], *comparisons["label_b"]]) * size * 0.55 / 72
    fig, axes = plt.subplots(rows, cols, figsize=(cols * (side + label_inches + 1.4),
                                                   rows * (side + label_inches + 0.9) + 0.5), squeeze=False)
    for ax in axes.flat[len(headlines):]:
        ax.set_visible(False)
    for ax, headline in zip(axes.flat, headlines):
        data = comparisons[comparisons["headline"] == headline]
        models = models_of[headline]
        index = {m: i for i, m in enumerate(models)}
        labels = dict(zip(data["model_a"], data["label_a"])) | dict(zip(data["model_b"], data["label_b"]))
        matrix = np.full((len(models), len(models)), np.nan)
        marks = []
        for _, r in data.iterrows():
            i, j, d = index[r["model_a"]], index[r["model_b"]], float(r["difference"])
            matrix[i, j], matrix[j, i] = d, -d
            if str(r["distinguishable"]).strip().lower() == "true":
                marks += [(i, j), (j, i)]
        limit = np.nanmax(np.abs(matrix)) if np.isfinite(matrix).any() and np.nanmax(np.abs(matrix)) > 0 else 1.0
        image = ax.imshow(matrix, cmap="RdBu", vmin=-limit, vmax=limit, aspect="equal")
        if marks:
            ax.plot([j for _, j in marks], [i for i, _ in marks], "o", color="black", markersize=max(1.5, size / 3),
                    linestyle="none", label="_significant")
        ax.set_xticks(range(len(models)), [labels.get(m, m) for m in models], rotation=90, fontsize=size)
        ax.set_yticks(range(len(models)), [labels.get(m, m) for m in models], fontsize=size)
        n_line = n_of(headline)
        ax.set_title(headline + (f"\n{n_line}" if n_line else ""), fontsize=8)
        bar = fig.colorbar(image, ax=ax, shrink=0.7, pad=0.02)
        bar.set_label("row − column", fontsize=7)
        bar.ax.tick_params(labelsize=6)
    suptitle_above(fig, f"{title}: row − column per headline ({n} models; dot: interval excludes 0)", fontsize=10)
    save_figure(fig, paths)
    return fig

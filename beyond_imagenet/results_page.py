"""An interactive results page: one standalone HTML file per study (``results/results.html``).

Beside the Snakemake report, for a study of many models: the profile as a sortable table (click a
column header), and per headline a plotly scatter of the headline against ImageNet top-1, one
point per model with its interval, coloured by paradigm, with hover on model, label, training
data, value and interval (a dot plot by model where the study has no ImageNet top-1). Made from
``profile.csv`` (and ``across_models.csv`` for each headline's rank correlation, when there is
one) only; plotly.js is embedded, so the file opens offline.
"""

from __future__ import annotations

import html
import json
import os

import numpy as np
import pandas as pd

from beyond_imagenet.io import atomic_path

PARADIGM_COLOURS = {"supervised": "#1f77b4", "clip": "#d62728", "self_supervised": "#2ca02c"}

_SORT_SCRIPT = """
function sortTable(th) {
  const table = th.closest('table'), body = table.tBodies[0];
  const index = Array.from(th.parentNode.children).indexOf(th);
  const ascending = th.dataset.order !== 'asc';
  th.parentNode.querySelectorAll('th').forEach(h => delete h.dataset.order);
  th.dataset.order = ascending ? 'asc' : 'desc';
  const key = row => {
    const cell = row.children[index], v = cell.dataset.value;
    return v !== undefined && v !== '' ? parseFloat(v) : cell.textContent;
  };
  const rows = Array.from(body.rows).sort((a, b) => {
    const x = key(a), y = key(b);
    if (typeof x === 'number' && typeof y === 'number') return ascending ? x - y : y - x;
    return ascending ? String(x).localeCompare(String(y)) : String(y).localeCompare(String(x));
  });
  rows.forEach(r => body.appendChild(r));
}
document.querySelectorAll('#profile th').forEach(th => th.addEventListener('click', () => sortTable(th)));
"""

_STYLE = """
body { font-family: sans-serif; margin: 1.5em; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; }
th { cursor: pointer; background: #f3f3f3; position: sticky; top: 0; }
th[data-order=asc]::after { content: ' \\25B2'; }
th[data-order=desc]::after { content: ' \\25BC'; }
td.num { text-align: right; white-space: nowrap; }
.ci { color: #777; font-size: 0.85em; }
"""

MODEL_DETAILS = ("label", "paradigm", "family", "training_data")


def _text(value) -> str:
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)


def _interval(row: pd.Series) -> tuple[float, float]:
    low, high = (pd.to_numeric(pd.Series([row.get(c, np.nan)]), errors="coerce").iloc[0] for c in ("ci_low", "ci_high"))
    return float(low), float(high)


def profile_table_html(profile: pd.DataFrame) -> str:
    """The profile as an HTML table, one row per model, a column per headline (value, interval)."""
    headlines = list(dict.fromkeys(profile["headline"]))
    models = profile.drop_duplicates("model").set_index("model")
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ("model", *MODEL_DETAILS, *headlines))
    body = []
    cells = {(r["model"], r["headline"]): r for _, r in profile.iterrows()}
    for model in models.index:
        tds = [f"<td>{html.escape(str(model))}</td>"]
        tds += [f"<td>{html.escape(_text(models.loc[model].get(c)))}</td>" for c in MODEL_DETAILS]
        for headline in headlines:
            row = cells.get((model, headline))
            if row is None or not np.isfinite(float(row["value"])):
                tds.append('<td class="num" data-value=""></td>')
                continue
            value = float(row["value"])
            low, high = _interval(row)
            ci = f' <span class="ci">[{low:.3g}, {high:.3g}]</span>' if np.isfinite(low) and np.isfinite(high) else ""
            tds.append(f'<td class="num" data-value="{value:.10g}">{value:.4g}{ci}</td>')
        body.append("<tr>" + "".join(tds) + "</tr>")
    return f'<table id="profile"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def headline_figure(profile: pd.DataFrame, headline: str, reference: str | None, note: str = ""):
    """One plotly figure: the headline against the reference per model (or a dot plot by model)."""
    import plotly.graph_objects as go

    rows = profile[profile["headline"] == headline].copy()
    ref = (profile[profile["headline"] == reference].set_index("model")["value"].astype(float)
           if reference and reference != headline else None)
    fig = go.Figure()
    for paradigm, group in rows.groupby(rows["paradigm"].map(_text), sort=True):
        group = group[np.isfinite(group["value"].astype(float))]
        if ref is not None:
            group = group[group["model"].isin(ref.index)]
        if group.empty:
            continue
        intervals = np.array([_interval(r) for _, r in group.iterrows()]).reshape(-1, 2)
        values = group["value"].astype(float).to_numpy()
        with_ci = np.isfinite(intervals).all(axis=1)
        err = {"type": "data", "symmetric": False, "array": np.where(with_ci, intervals[:, 1] - values, 0),
               "arrayminus": np.where(with_ci, values - intervals[:, 0], 0), "visible": bool(with_ci.any())}
        custom = np.column_stack([group["model"].map(_text), group["label"].map(_text),
                                  group["training_data"].map(_text) if "training_data" in group else [""] * len(group),
                                  [f"[{lo:.4g}, {hi:.4g}]" if ok else "no interval"
                                   for (lo, hi), ok in zip(intervals, with_ci)]])
        x = ref[group["model"]].to_numpy() if ref is not None else values
        y = values if ref is not None else group["label"].map(_text).to_numpy()
        fig.add_trace(go.Scatter(
            x=x, y=y, mode="markers", name=paradigm or "(none)", customdata=custom,
            marker={"color": PARADIGM_COLOURS.get(paradigm, "#7f7f7f"), "size": 9},
            **({"error_y": err} if ref is not None else {"error_x": err}),
            hovertemplate=("<b>%{customdata[0]}</b><br>%{customdata[1]}<br>training data: %{customdata[2]}<br>"
                           + f"{html.escape(headline)}: " + ("%{y:.4g}" if ref is not None else "%{x:.4g}")
                           + " %{customdata[3]}" + (f"<br>{html.escape(reference)}: %{{x:.4g}}" if ref is not None else "")
                           + "<extra></extra>")))
    fig.update_layout(title=headline + (f" ({note})" if note else ""), height=420 if ref is not None else
                      max(300, 22 * rows["model"].nunique() + 120), margin={"l": 60, "r": 20, "t": 50, "b": 50},
                      xaxis_title=reference if ref is not None else headline,
                      yaxis_title=headline if ref is not None else "", legend_title="paradigm")
    return fig


def write_results_page(profile: pd.DataFrame, path: str | os.PathLike, title: str, reference: str | None = None,
                       across: pd.DataFrame | None = None) -> None:
    """Write the standalone page (atomically)."""
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    rho = {}
    if across is not None and not across.empty:
        for _, row in across[across["analysis"] == "rank_correlation"].iterrows():
            rho[row["headline"]] = f"Spearman rho with top-1 {float(row['value']):.2f} " \
                                   f"[{float(row['ci_low']):.2f}, {float(row['ci_high']):.2f}]"
    has_reference = bool(reference) and reference in set(profile["headline"])
    figures = []
    for i, headline in enumerate(dict.fromkeys(profile["headline"])):
        fig = headline_figure(profile, headline, reference if has_reference else None, rho.get(headline, ""))
        figures.append(pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=f"headline-{i}",
                                   config={"responsive": True}))
    models = json.dumps(sorted(profile["model"].astype(str).unique()))
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_STYLE}</style>
<script type="text/javascript">{get_plotlyjs()}</script></head>
<body><h1>{html.escape(title)}</h1>
<p>{len(json.loads(models))} models. Click a column header to sort; hover a point for its model, training data, value
and interval (the bootstrap interval over images of the metric tables).</p>
<h2>Profile</h2>
{profile_table_html(profile) if not profile.empty else "<p>No headline in this study.</p>"}
<h2>Headlines{" against " + html.escape(reference) if has_reference else ""}</h2>
{"".join(figures)}
<script type="application/json" id="models">{models}</script>
<script>{_SORT_SCRIPT}</script>
</body></html>
"""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(page)


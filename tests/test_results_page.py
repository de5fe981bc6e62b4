"""The interactive results page (beyond_imagenet/results_page.py) in a real headless browser:
Debian's chromium loads it with no console message, the sortable table shows every model and
plotly draws one chart per headline. CI (root, CI=true) installs chromium with apt-get."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from beyond_imagenet.across_models import across_models
from beyond_imagenet.results_page import write_results_page

REFERENCE = "top-1 % (imagenet_val)"


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI") == "true" and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update"], check=True, env=env, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "chromium"], check=True, env=env,
                       capture_output=True)
        return shutil.which("chromium")
    pytest.skip("chromium is not installed (apt-get install -y chromium); CI installs it as root with CI=true")


def _profile(n=30, seed=0):
    rng = np.random.default_rng(seed)
    top1 = rng.uniform(60, 88, n)
    paradigm = rng.choice(["supervised", "clip", "self_supervised"], n)
    rows = []
    for headline, evaluation, values in [(REFERENCE, "accuracy", top1),
                                         ("ECE (imagenet_val)", "calibration", rng.uniform(0.01, 0.1, n)),
                                         ("shape bias (cue_conflict)", "shape_bias", rng.uniform(0.2, 0.8, n))]:
        for i in range(n):
            rows.append({"model": f"model-{i:02d}", "label": f"Model <{i}>", "family": "vit", "paradigm": paradigm[i],
                         "paper_key": "", "training_data": "LAION-2B" if i % 2 else "IN-1k", "evaluation": evaluation,
                         "headline": headline, "value": values[i], "ci_low": values[i] * 0.95,
                         "ci_high": values[i] * 1.05 if i != 3 else np.nan})
    return pd.DataFrame(rows)


def _load(chromium: str, page) -> tuple[str, str]:
    result = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                             "--v=0", "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
                            check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout, result.stderr


def test_the_page_loads_in_chromium_without_console_messages_and_shows_every_model(tmp_path):
    chromium = _chromium()
    profile = _profile()
    across = across_models(profile, REFERENCE, {"level": 0.95, "resamples": 100, "seed": 0})
    page = tmp_path / "results.html"
    write_results_page(profile, page, title="Results: study test", reference=REFERENCE, across=across)
    dom, log = _load(chromium, page)
    console = [line for line in log.splitlines() if "CONSOLE" in line]
    assert console == [], console
    # plotly ran: one drawn chart per headline (its SVG), the table has every model
    assert len(re.findall(r'class="main-svg"', dom)) >= 3
    for i in range(30):
        assert f"model-{i:02d}" in dom
    assert "Model &lt;3&gt;" in dom  # labels are escaped, not markup
    assert "Spearman rho with top-1" in dom


def test_a_page_with_a_script_error_is_caught(tmp_path):
    """The check above can fail: a page whose script throws logs a console line."""
    chromium = _chromium()
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><body><script>notDefined();</script></body></html>")
    _, log = _load(chromium, page)
    assert any("CONSOLE" in line and "notDefined" in line for line in log.splitlines())


def test_the_table_rows_are_the_models_and_sortable_cells_carry_numbers(tmp_path):
    profile = _profile(n=5)
    page = tmp_path / "results.html"
    write_results_page(profile, page, title="t", reference=None)
    text = page.read_text()
    body = text.split('<table id="profile">', 1)[1].split("</table>", 1)[0]
    assert body.count("<tr>") == 1 + 5  # header + one row per model
    values = [float(v) for v in re.findall(r'data-value="([^"]+)"', body)]
    assert len(values) == 5 * 3
    assert "plotly" in text.split("</head>", 1)[0].lower()  # plotly.js embedded: opens offline

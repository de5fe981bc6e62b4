"""The published numbers load and are internally consistent with the printed averages."""

from __future__ import annotations

import numpy as np
import pytest

from beyond_imagenet.metrics.imagenet_x import FACTORS
from beyond_imagenet.metrics.pug import PUG_SUBSETS
from beyond_imagenet.paper_results import PAPER_MODELS, load_paper_results

SECTIONS = ("calibration", "imagenet_x", "shape_bias", "robustness", "vtab", "pug", "invariance")


@pytest.fixture(scope="module")
def results() -> dict:
    return load_paper_results()


def test_sections_and_sources(results: dict) -> None:
    assert set(results["models"]) == set(PAPER_MODELS)
    for section in SECTIONS:
        assert isinstance(results[section].get("source"), str) and results[section]["source"]


def test_returns_a_copy() -> None:
    """Callers (report scripts) may edit what they get; the cached parse must not change."""
    mine = load_paper_results()
    mine["vtab"]["top1"]["vit_sup"]["dtd"] = -1
    assert load_paper_results()["vtab"]["top1"]["vit_sup"]["dtd"] == 67.8


def test_vtab_19_task_means_reproduce_printed_averages(results: dict) -> None:
    vtab = results["vtab"]
    tasks = [t for group in vtab["groups"].values() for t in group]
    assert len(tasks) == len(set(tasks)) == 19
    expected = {"vit_sup": 67.8, "convnext_sup": 71.0, "vit_clip": 72.2, "convnext_clip": 72.2}
    for model in PAPER_MODELS:
        per_task = vtab["top1"][model]
        assert set(per_task) == set(tasks)
        mean = np.mean([per_task[t] for t in tasks])
        assert mean == pytest.approx(expected[model], abs=0.05)
        assert vtab["average_19_printed"][model] == expected[model]


def test_robustness_average_of_7(results: dict) -> None:
    rob = results["robustness"]
    for model in PAPER_MODELS:
        shifted = [v for k, v in rob["top1"][model].items() if k != "imagenet_val"]
        assert len(shifted) == 7
        assert np.mean(shifted) == pytest.approx(rob["average_7_printed"][model], abs=0.05)


def test_imagenet_x_average_is_mean_of_16(results: dict) -> None:
    for model in PAPER_MODELS:
        ratios = results["imagenet_x"]["error_ratio"][model]
        assert set(ratios) == {*FACTORS, "average"}
        assert np.mean([ratios[f] for f in FACTORS]) == pytest.approx(ratios["average"], abs=0.01)


def test_pug_average_is_mean_of_10(results: dict) -> None:
    for model in PAPER_MODELS:
        per_subset = results["pug"]["top1"][model]
        assert list(per_subset) == list(PUG_SUBSETS)
        mean = np.mean(list(per_subset.values()))
        assert mean == pytest.approx(results["pug"]["average_figure"][model], abs=0.15)


def test_invariance_lists_align(results: dict) -> None:
    for kind in ("scale", "shift", "resolution"):
        block = results["invariance"][kind]
        for model in PAPER_MODELS:
            assert len(block["top1"][model]) == len(block["values"]) == 5

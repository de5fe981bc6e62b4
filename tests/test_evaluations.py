"""The evaluation registry, tested entry by entry (as timm's tests iterate over its model registry):
a step forgotten when adding an evaluation fails here, not in a figure."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO, default_config

from beyond_imagenet.evaluations import (
    EVALUATIONS,
    Evaluation,
    Figure,
    get,
    get_figure,
    register,
)
from beyond_imagenet.profile import headline_rows
from beyond_imagenet.study import Study, load_schema, validate_config

NAMES = sorted(EVALUATIONS)
SNAKEFILE = (REPO / "Snakefile").read_text()
DOCS = (REPO / "docs" / "evaluations.md").read_text()


def test_every_built_in_evaluation_is_registered():
    assert set(NAMES) == {"accuracy", "calibration", "robustness", "imagenet_x", "shape_bias", "pug", "transfer",
                          "invariance", "cka"}


@pytest.mark.parametrize("name", NAMES)
def test_one_name_in_every_layer(name):
    """evaluation X: rules/X.smk (included), beyond_imagenet/evaluations/X[.py|/], metrics/X.py,
    its settings schema, a definition in docs/evaluations.md and a report caption per figure."""
    record = EVALUATIONS[name]
    rules = REPO / "rules" / f"{name}.smk"
    assert rules.is_file(), f"evaluation {name} has no rules/{name}.smk"
    assert f'include: "rules/{name}.smk"' in SNAKEFILE, f"rules/{name}.smk is not included in the Snakefile"
    package = REPO / "beyond_imagenet" / "evaluations"
    assert (package / f"{name}.py").is_file() or (package / name / "__init__.py").is_file()
    assert (REPO / "beyond_imagenet" / "metrics" / f"{name}.py").is_file(), f"no beyond_imagenet/metrics/{name}.py"
    assert (REPO / "schemas" / "evaluations" / f"{name}.schema.yaml").is_file()
    assert name in load_schema()["properties"]["evaluations"]["properties"]
    assert re.search(r"^## \d+\. .*$", DOCS, re.M)
    assert f"`{name}`" in DOCS or record.title.lower() in DOCS.lower(), f"docs/evaluations.md does not define {name}"
    for figure in record.figures:
        assert (REPO / "report" / f"{figure.caption}.rst").is_file(), f"{name}/{figure.name}: no report caption"
    if record.figures:  # one job draws all of an evaluation's figures
        assert f"rule plot_{name}:" in rules.read_text(), f"rules/{name}.smk has no rule plot_{name}"
    assert re.search(rf"rule compute_{name}(_summary)?:", rules.read_text())


@pytest.mark.parametrize("name", NAMES)
def test_record_is_complete(name):
    record = EVALUATIONS[name]
    assert record.table is not None and record.title and record.description
    assert record.headlines, f"{name} has no profile headline"
    assert all(h.table == name for h in record.headlines)
    assert record.reads in ("logits", "features", "images")
    names = [f.name for f in record.figures]
    assert len(names) == len(set(names))
    for figure in record.figures:
        assert get_figure(f"{name}/{figure.name}") == (record, figure)
    # its settings are keys its schema knows
    schema = load_schema()["properties"]["evaluations"]["properties"][name]["properties"]
    for key in record.settings:
        assert key in schema, f"{name}.settings names {key!r}, which its schema does not define"


def test_registering_twice_or_an_unknown_name_is_refused():
    with pytest.raises(ValueError, match="registered twice"):
        register(Evaluation(name="accuracy", title="x", description="x"))
    with pytest.raises(KeyError, match="unknown evaluation 'imagenet_9'"):
        get("imagenet_9")
    with pytest.raises(KeyError, match="has no figure"):
        get_figure("calibration/heatmap")


def test_figure_file_names():
    fig = Figure("reliability", draw=print, caption="reliability")
    assert fig.stem("imagenet_val") == "reliability_imagenet_val"
    assert fig.pattern() == "reliability_{dataset}"
    heat = Figure("cka", draw=print, caption="cka", variants=lambda s: ["within"], variant_wildcard="kind")
    assert heat.pattern() == "cka_{kind}_{dataset}" and heat.stem("v", "cross") == "cka_cross_v"
    assert Figure("robustness", draw=print, caption="r", per_dataset=False).pattern() == "robustness"


@pytest.mark.parametrize("name", [n for n in NAMES if EVALUATIONS[n].class_spaces])
def test_class_spaces_are_enforced_at_validation(name, tmp_path):
    """A dataset of a label space the evaluation does not accept is refused, naming both."""
    config = default_config()
    record = EVALUATIONS[name]
    wrong = next(d for d, e in config["datasets"].items()
                 if Study(validate_config(default_config())).datasets[d].class_space not in record.class_spaces)
    config["evaluations"][name] = {**config["evaluations"].get(name, {}), "datasets": [wrong]}
    from beyond_imagenet.study import ConfigError

    with pytest.raises(ConfigError, match=rf"evaluations\.{name}\.datasets: '{wrong}'"):
        validate_config(config)


@pytest.fixture(scope="module")
def default_tables(default_study):
    """The metric tables of the default study (which runs every registered evaluation)."""
    return {name: pd.read_csv(Path(default_study[0]) / "results" / "metrics" / f"{name}.csv",
                              keep_default_na=False, na_values=[""]) for name in NAMES}


def test_the_default_study_runs_every_evaluation():
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    assert set(config["evaluations"]) == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_table_has_its_grouping_columns_and_every_model(name, default_tables):
    table = default_tables[name]
    record = EVALUATIONS[name]
    for column in ("model", "label", "family", "paradigm", "paper_key", "metric", "value", *record.group_columns):
        assert column in table.columns, f"{name}.csv has no column {column!r}"
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    models = list(dict.fromkeys(table["model"]))
    if record.sort_by:  # rows sorted (e.g. accuracy by dataset, model, metric): every model, in that order
        assert models == sorted(config["models"])
    else:  # the study's order
        assert models == list(config["models"])


@pytest.mark.parametrize("name", NAMES)
def test_headline_selects_one_row_per_model(name, default_tables):
    record = EVALUATIONS[name]
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    selected = [headline_rows(name, headline, default_tables[headline.table]) for headline in record.headlines]
    assert any(selected), f"no {name} headline selects a row of its table"
    for rows in selected:
        # A headline of a dataset kind the default study lacks (transfer's on a labelled folder of
        # one's own classes) selects nothing here; tests/test_own_data.py checks it.
        if rows:
            assert {r["model"] for r in rows} == set(config["models"])


@pytest.mark.parametrize("name", NAMES)
def test_every_figure_is_drawn(name, default_study):
    study = Study(validate_config(default_config()))
    record = EVALUATIONS[name]
    figures = Path(default_study[0]) / "results" / "figures"
    for figure in record.figures:
        datasets = study.evaluation_datasets(name) if figure.per_dataset else [None]
        variants = figure.variants(study) if figure.variants else [None]
        for d in datasets:
            for v in variants:
                for ext in ("png", "pdf"):
                    path = figures / f"{figure.stem(d, v)}.{ext}"
                    assert path.is_file() and path.stat().st_size > 1000, f"{path} missing"

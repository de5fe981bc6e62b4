"""Issue 15 (config): study files that YAML or the schema used to accept silently or name badly.

Each study goes through the real workflow (Snakemake's API or its CLI) and must stop while the
Snakefile is read, naming the file, key and line(s); nothing under results/ or resources/.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from beyond_imagenet.study import ConfigError, load_config, read_config_file
from conftest import REPO, run_snakemake, write_config

pytestmark = pytest.mark.workflow


def _duplicate_model(text: str) -> str:
    """The default study with its third model renamed to the second's key: two `vit_sup:` entries."""
    assert "\n  convnet_clip:" in text
    return text.replace("\n  convnet_clip:", "\n  vit_sup:", 1)


def _line_of(text: str, needle: str, nth: int) -> int:
    lines = [i + 1 for i, line in enumerate(text.splitlines()) if line.startswith(needle)]
    return lines[nth]


def test_a_duplicate_model_key_is_refused_naming_both_lines(tmp_path):
    """Guards: YAML keeps the last of two equal keys, so a model silently dropped out of the study."""
    text = _duplicate_model((REPO / "config.yaml").read_text())
    first, second = _line_of(text, "  vit_sup:", 0), _line_of(text, "  vit_sup:", 1)
    study = tmp_path / "dup.yaml"
    study.write_text(text)
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(Exception) as err:
        run_snakemake(study, work, dryrun=True)
    message = str(err.value)
    assert str(study) in message and "duplicate key 'vit_sup'" in message
    assert f"first on line {first}, again on line {second}" in message
    assert not (work / "results").exists() and not (work / "resources").exists()


def test_a_repeated_top_level_block_is_refused(tmp_path):
    """Guards: a second `evaluations:` block replaced the first one wholesale."""
    text = (REPO / "config.yaml").read_text() + "\nevaluations:\n  accuracy:\n    datasets: [imagenet_val]\n"
    study = tmp_path / "dup.yaml"
    study.write_text(text)
    with pytest.raises(ConfigError, match=r"duplicate key 'evaluations': first on line \d+, again on line \d+"):
        load_config(study)


def test_merge_keys_may_still_override(tmp_path):
    """YAML merge keys (<<:) are not duplicates: an entry may override what it merges."""
    study = tmp_path / "merge.yaml"
    study.write_text("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  x: 3\n")
    assert read_config_file(study)["other"] == {"x": 3, "y": 2}


def test_an_evaluation_without_datasets_is_refused(tiny_config, tmp_path):
    """Guards: `calibration: {}` (no datasets: key) was accepted and wrote an empty table, while an
    empty list was refused."""
    tiny_config["evaluations"]["calibration"].pop("datasets")
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(Exception) as err:
        run_snakemake(write_config(tmp_path / "bad.yaml", tiny_config), work, dryrun=True)
    assert "evaluations.calibration: 'datasets' is a required property" in str(err.value)


def _snakemake_cli(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([str(Path(sys.executable).with_name("snakemake")), "-s", str(REPO / "Snakefile"),
                           "-d", str(workdir), "-n", *args], capture_output=True, text=True, env=env, timeout=300)


def test_a_yaml_syntax_error_in_the_default_study_names_file_and_line(tmp_path):
    """Guards: Snakemake's 'Config file is not valid JSON or YAML' named neither file nor line.
    Through the real CLI: the default study file (config.yaml in the working directory)."""
    text = (REPO / "config.yaml").read_text().splitlines()
    line = next(i for i, l in enumerate(text) if l.startswith("  vit_sup:"))
    text[line] = "  vit_sup: [unclosed"
    (tmp_path / "config.yaml").write_text("\n".join(text) + "\n")
    done = _snakemake_cli(tmp_path)
    assert done.returncode != 0
    assert f"config.yaml, line {line + 2}" in done.stderr + done.stdout  # the parser stops on the next line
    assert "not valid JSON or YAML" not in done.stderr + done.stdout
    assert not (tmp_path / "results").exists()


def test_the_study_checker_names_file_and_line_of_a_syntax_error(tmp_path):
    """A --configfile is parsed by Snakemake before the workflow is read, so its syntax error is
    generic there; `python -m beyond_imagenet.study FILE` names the file and the line."""
    study = tmp_path / "study.yaml"
    study.write_text("models:\n  a: {source: timm\n  b: 1\n")
    done = subprocess.run([sys.executable, "-m", "beyond_imagenet.study", str(study)], capture_output=True,
                          text=True, cwd=REPO)
    assert done.returncode == 1 and f"{study}, line 3" in done.stderr
    assert subprocess.run([sys.executable, "-m", "beyond_imagenet.study", str(REPO / "config.yaml")],
                          capture_output=True, text=True, cwd=REPO).returncode == 0

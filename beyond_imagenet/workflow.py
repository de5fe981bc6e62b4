"""Glue for Snakemake ``script:`` adapters: logging to the rule's log file, and the study object."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from beyond_imagenet.study import Study


def setup(snakemake: Any) -> Study:
    """Log to the rule's ``log:`` file and to stderr; return the (already validated) study."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if snakemake.log:
        Path(snakemake.log[0]).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(snakemake.log[0], mode="w"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=handlers, force=True)
    sys.excepthook = _log_uncaught
    return Study(snakemake.config)


def _log_uncaught(kind, error, trace) -> None:
    """Write a job's fatal error (bad images, checksum, stale cache...) into the rule's log too, so
    Snakemake's failed-log display says why, not only the job's stderr."""
    logging.getLogger("job").critical("%s: %s", kind.__name__, error, exc_info=(kind, error, trace))


def evaluation_outputs(study: Study, evaluation: str, fields: tuple[str, ...] = ("logits", "labels", "ids")):
    """``(dataset, model, manifest, outputs)`` for every (dataset, model) of an evaluation, in
    config order, each output checked against what the study expects (a stale file is refused)."""
    from beyond_imagenet.datasets.manifest import load_manifest
    from beyond_imagenet.extract import read_outputs

    for dataset in study.evaluation_datasets(evaluation):
        manifest = load_manifest(study.manifest(dataset))
        for model in study.models:
            out = read_outputs(study.output(model, dataset), study.expected_attrs(model, dataset, manifest), fields)
            yield dataset, model, manifest, out


def skipped_row(out: dict[str, Any], **groups: Any) -> dict[str, Any]:
    """The ``n_skipped`` row of one output (images left out under ``on_bad_image: skip``), with the
    table's grouping columns; the ids themselves are listed in ``skipped.csv``."""
    return {**groups, "metric": "n_skipped", "value": int(out["attrs"].get("n_skipped", 0))}

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

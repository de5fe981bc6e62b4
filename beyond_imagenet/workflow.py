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
    return Study(snakemake.config)

"""Human shape bias on the cue-conflict stimuli: the reference band the shape-bias figure draws.

The numbers live in ``beyond_imagenet/data/human_shape_bias.yaml`` (summary only, never the raw
decisions). They are computed from the raw decisions of model-vs-human's 10 observers
(github.com/bethgelab/model-vs-human, ``raw-data/cue-conflict/cue-conflict_subject-NN_session_1.csv``;
columns subj, session, trial, rt, object_response, category, condition, imagename) by
:func:`summarise`, with the same formula the project applies to a model's decisions
(:func:`beyond_imagenet.metrics.shape_bias.shape_bias`: shape / (shape + texture) over the
images whose shape and texture differ; a response outside the 16 categories, e.g. ``na``, counts
as neither). Per observer: the overall and per-category shape bias; the file stores their mean,
min and max (overall and per category) and each observer's overall value.

Recompute (and rewrite the file) with ``python scripts/human_shape_bias.py <folder of the csv files>``.
"""

from __future__ import annotations

import csv
import os
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from beyond_imagenet.metrics.shape_bias import CATEGORIES, shape_bias

__all__ = ["HUMAN_FILE", "load_human_shape_bias", "read_subject", "summarise"]

HUMAN_FILE = "human_shape_bias.yaml"
SOURCE = ("model-vs-human (github.com/bethgelab/model-vs-human) raw-data/cue-conflict, "
          "cue-conflict_subject-NN_session_1.csv, 10 observers")


def read_subject(path: str | os.PathLike) -> tuple[str, list[str], list[str]]:
    """(subject, responses, image names) of one observer's decision file."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    missing = {"subj", "object_response", "imagename"} - set(rows[0] if rows else {})
    if not rows or missing:
        raise ValueError(f"{path}: not a model-vs-human decision file (missing columns {sorted(missing)} or no rows)")
    subjects = {r["subj"] for r in rows}
    if len(subjects) != 1:
        raise ValueError(f"{path}: decisions of several observers {sorted(subjects)}; expected one per file")
    return subjects.pop(), [r["object_response"] for r in rows], [r["imagename"] for r in rows]


def _stats(values: list[float]) -> dict[str, float]:
    kept = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    return {"mean": round(float(kept.mean()), 4), "min": round(float(kept.min()), 4),
            "max": round(float(kept.max()), 4), "n_subjects": int(len(kept))}


def summarise(folder: str | os.PathLike) -> dict[str, Any]:
    """The summary stored in :data:`HUMAN_FILE`, from the raw decision files in ``folder``."""
    paths = sorted(Path(folder).glob("cue-conflict_subject-*_session_*.csv"))
    if not paths:
        raise FileNotFoundError(f"{folder}: no cue-conflict_subject-*_session_*.csv decision files")
    per_subject, overall, per_category = {}, [], {c: [] for c in CATEGORIES}
    n_images = set()
    for path in paths:
        subject, responses, names = read_subject(path)
        result = shape_bias(responses, names)
        overall.append(float(result["shape_bias"]))
        per_subject[subject] = round(overall[-1], 4)
        n_images.add(int(result["n_images"]))
        for category in CATEGORIES:
            per_category[category].append(result["per_category"].get(category, np.nan))
    return {
        "source": SOURCE,
        "computed_by": "scripts/human_shape_bias.py (beyond_imagenet.human_reference.summarise): per observer "
                       "shape / (shape + texture) over the conflict images, then mean / min / max over observers",
        "n_images_per_subject": sorted(n_images),
        "overall": _stats(overall),
        # A category no observer saw a conflict image of (only in partial files) is left out.
        "per_category": {c: _stats(v) for c, v in per_category.items() if np.isfinite(v).any()},
        "per_subject": per_subject,
    }


@lru_cache(maxsize=None)
def _load() -> dict[str, Any]:
    return yaml.safe_load(files("beyond_imagenet").joinpath("data", HUMAN_FILE).read_text("utf-8"))


def load_human_shape_bias() -> dict[str, Any]:
    """The stored summary (a fresh copy)."""
    import copy

    return copy.deepcopy(_load())

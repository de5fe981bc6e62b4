"""ImageNet-X error ratios: which kinds of images a model gets wrong more often than average.

Definitions (docs/evaluations.md §2), matching the ``imagenet-x`` package exactly:

* annotations: the package's "top factor" val file, prototype images removed (46,110 images);
* predictions are inner-joined to the annotations on the val file name, so annotated images
  without a prediction are ignored and predictions for unannotated images are ignored;
* acc = accuracy over all joined images (including the 2 images with no factor set);
  acc_f = accuracy over joined images whose top factor is f;
* error ratio ER_f = (1 − acc_f) / (1 − acc);
* "average" = unweighted mean of the 16 ratios (the paper's "Average" bar; not the package's
  ``average`` column, which is the overall accuracy).

The ground truth is the annotation's ``class`` field, so callers pass only file names and predicted
class indices.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import PurePath

import numpy as np
import pandas as pd

from beyond_imagenet.classes import val_file_name

__all__ = ["FACTORS", "load_annotations", "factor_table", "error_ratios"]

#: The 16 factors in ``imagenet_x.FACTORS`` order (checked against the package at import time).
FACTORS: tuple[str, ...] = (
    "pose",
    "background",
    "pattern",
    "color",
    "smaller",
    "shape",
    "partial_view",
    "subcategory",
    "texture",
    "larger",
    "darker",
    "object_blocking",
    "person_blocking",
    "style",
    "brighter",
    "multiple_objects",
)


#: Rows of the package's annotation files (docs/datasets.md §3): a different count means another
#: release or a damaged install, whose error ratios would not be comparable.
ANNOTATED_IMAGES = {("val", True): 46_110, ("val", False): 48_868, ("train", False): 11_233}


@lru_cache(maxsize=4)
def _annotations(which_factor: str, partition: str, filter_prototypes: bool) -> pd.DataFrame:
    import imagenet_x

    if tuple(imagenet_x.FACTORS) != FACTORS:
        raise RuntimeError("imagenet_x.FACTORS changed; update beyond_imagenet.metrics.imagenet_x")
    ann = imagenet_x.load_annotations(
        which_factor=which_factor, partition=partition, filter_prototypes=filter_prototypes
    )
    if not ann["file_name"].is_unique:
        raise RuntimeError("ImageNet-X annotations list some file more than once")
    expected = ANNOTATED_IMAGES.get((partition, filter_prototypes))
    if expected is not None and len(ann) != expected:
        raise RuntimeError(
            f"ImageNet-X {partition} annotations ({which_factor}, prototypes "
            f"{'removed' if filter_prototypes else 'kept'}) have {len(ann)} rows, expected {expected} "
            "(imagenet-x 0.0.7, docs/datasets.md §3); reinstall the pinned imagenet-x"
        )
    table = ann.set_index("file_name")[["class", *FACTORS]].astype(np.int64)
    return table


def load_annotations(
    which_factor: str = "top", partition: str = "val", filter_prototypes: bool = True
) -> pd.DataFrame:
    """Annotations indexed by file name with columns ``class`` and the 16 factors (0/1 ints).

    Loaded through the installed ``imagenet-x`` package (so filtering matches it exactly) and cached:
    parsing the 17 MB jsonl takes seconds. Returns a copy, so callers may modify it freely.
    """
    return _annotations(which_factor, partition, filter_prototypes).copy()


def _join(
    file_names: Sequence[str | PurePath],
    predicted_classes: Sequence[int] | np.ndarray,
    which_factor: str,
) -> pd.DataFrame:
    names = [val_file_name(f) for f in file_names]
    preds = np.asarray(predicted_classes)
    if preds.ndim != 1 or len(names) != len(preds):
        raise ValueError(
            f"need one predicted class per file name; got {len(names)} names and shape {preds.shape}"
        )
    if preds.size and not np.issubdtype(preds.dtype, np.integer):
        raise ValueError(f"predicted_classes must be integer class indices, got dtype {preds.dtype}")
    predictions = pd.Series(preds.astype(np.int64), index=pd.Index(names, name="file_name"))
    if not predictions.index.is_unique:
        dup = predictions.index[predictions.index.duplicated()][0]
        raise ValueError(f"more than one prediction for {dup}")
    ann = _annotations(which_factor, "val", True)
    joined = ann.join(predictions.rename("predicted_class"), how="inner")
    if joined.empty:
        raise ValueError("no prediction matches an ImageNet-X annotated val image")
    return joined


def factor_table(
    file_names: Sequence[str | PurePath],
    predicted_classes: Sequence[int] | np.ndarray,
    which_factor: str = "top",
) -> pd.DataFrame:
    """Per-factor accuracy, image count and error ratio, plus an ``overall`` row.

    Rows: the 16 factors then ``overall`` (all joined images; its error ratio is 1 by definition).
    Columns: ``acc``, ``count``, ``n_correct``, ``error_ratio``. A factor with no joined image gets
    NaN accuracy and ratio (as the package does); with perfect overall accuracy the ratios are inf
    or NaN, since the ratio is undefined.
    """
    joined = _join(file_names, predicted_classes, which_factor)
    correct = (joined["predicted_class"] == joined["class"]).to_numpy()
    factors = joined[list(FACTORS)].to_numpy()
    # Same arithmetic as imagenet_x.compute_factor_accuracies: integer sums, then one division.
    count = factors.sum(axis=0)
    n_correct = factors[correct].sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        acc_f = n_correct / count
        acc = correct.mean()
        ratio = (1 - acc_f) / (1 - acc)
        overall_ratio = (1 - acc) / (1 - acc)
    return pd.DataFrame(
        {
            "acc": np.append(acc_f, acc),
            "count": np.append(count, len(correct)).astype(np.int64),
            "n_correct": np.append(n_correct, correct.sum()).astype(np.int64),
            "error_ratio": np.append(ratio, overall_ratio),
        },
        index=pd.Index([*FACTORS, "overall"], name="factor"),
    )


def error_ratios(
    file_names: Sequence[str | PurePath],
    predicted_classes: Sequence[int] | np.ndarray,
    which_factor: str = "top",
) -> pd.Series:
    """ImageNet-X error ratio per factor (``FACTORS`` order) plus ``average`` (mean of the 16).

    ``file_names`` may be paths; the basename (wnid suffix stripped) is joined to the annotations.
    Factors with no joined image are NaN and left out of the average, so that a partial run (a small
    study on a subset of val) still yields a number; compare such averages only between runs on the
    same images.
    """
    ratios = factor_table(file_names, predicted_classes, which_factor)["error_ratio"]
    out = ratios.loc[list(FACTORS)].copy()
    out.loc["average"] = out.mean(skipna=True)
    out.name = "error_ratio"
    return out

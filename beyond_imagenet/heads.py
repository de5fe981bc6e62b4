"""The cached CLIP zero-shot head: built once per model, checked against the model's identity.

No job of its own builds it: the first extraction job of a CLIP model that builds its network (and
the model's CKA pass) builds the head on its leased device and leaves it at
``results/heads/<model>.h5`` (``Study.head``), where every later job of the model reads it
(:func:`cached_head`). Several jobs of a model may run at once (``extraction.group: dataset``,
``extraction.groups``, ``extraction.split``): each that finds no head builds one, the first to put
its file in place wins, and every job uses the file on disk, so all of a model's outputs are made
with the same head bytes.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from beyond_imagenet.extract import CorruptOutputError, StaleOutputError, check_attrs
from beyond_imagenet.io import atomic_path, tmp_name, write_h5_attrs

log = logging.getLogger(__name__)


def _write_h5(path: str | os.PathLike, head: torch.Tensor, attrs: dict[str, Any]) -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset("weights", data=head.numpy().astype(np.float32), track_times=False)
        write_h5_attrs(f.attrs, attrs)


def write_head(path: str | os.PathLike, head: torch.Tensor, attrs: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        _write_h5(tmp, head, attrs)


def read_head(path: str | os.PathLike, expected: dict[str, Any]) -> torch.Tensor:
    check_attrs(path, expected)
    with h5py.File(path, "r") as f:
        return torch.from_numpy(f["weights"][()])


def _current_head(path: Path, identity: dict[str, Any]) -> torch.Tensor | None:
    """The head at ``path`` if there is one recording ``identity``; None if there is none, or one
    made for something else (other weights or templates) or unreadable: it is built again."""
    try:
        return read_head(path, identity)
    except FileNotFoundError:
        return None
    except (StaleOutputError, CorruptOutputError, OSError, KeyError) as err:
        log.info("%s is not this model's zero-shot head (%s): building it again", path,
                 str(err).splitlines()[0])
        return None


def cached_head(path: str | os.PathLike, spec, identity: dict[str, Any], templates: int | str | list[str],
                device: torch.device) -> torch.Tensor:
    """The zero-shot head of ``spec`` (``Study.head_identity``: ``identity``; ``templates``: the
    study's ``zero_shot.templates``), as recorded at ``path``: read where the file records
    ``identity``, else built on ``device`` (:func:`beyond_imagenet.models.build_zero_shot_head`) and
    written there.

    The new file is written whole to a temporary file beside ``path`` and then hard-linked to
    ``path``, which fails where another job put its head there meanwhile: that one is used if it
    records ``identity``; one that does not (a stale head, of other weights or templates) is replaced.
    What is returned is always read back from ``path``: every job of a model uses the same bytes,
    whichever job built them."""
    from beyond_imagenet.models import build_zero_shot_head

    path = Path(path)
    head = _current_head(path, identity)
    if head is not None:
        log.info("zero-shot head of %s: reused %s %s", identity.get("model", spec.name), path, tuple(head.shape))
        return head
    built = build_zero_shot_head(spec, templates, device)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)  # per process; removed below whatever happens (nothing half-written is left)
    try:
        _write_h5(tmp, built, identity)
        try:
            os.link(tmp, path)
            outcome = "built"
        except FileExistsError:
            # Another job's file appeared since the first look: a head of this identity is used as
            # it is (its bytes, not ours); a stale one is replaced. (Two jobs that both replace one
            # stale file within the same moment each read back the file they put there.)
            head = _current_head(path, identity)
            if head is not None:
                log.info("zero-shot head of %s: another job wrote %s meanwhile: using it", identity.get(
                    "model", spec.name), path)
                return head
            os.replace(tmp, path)
            outcome = "built (replacing a stale one)"
        except OSError as err:
            # A filesystem without hard links (some network and FUSE mounts): an atomic rename
            # instead, which would replace a file another job wrote in the same moment; each job
            # then uses the file it reads back below (heads of one identity are the same numbers).
            log.info("cannot hard-link %s (%s): renaming it into place", tmp, err)
            os.replace(tmp, path)
            outcome = "built"
    finally:
        tmp.unlink(missing_ok=True)
    head = read_head(path, identity)
    log.info("zero-shot head of %s: %s, %s %s", identity.get("model", spec.name), outcome, path, tuple(head.shape))
    return head

"""Glue for Snakemake ``script:`` adapters: logging to the rule's log file, and the job's view.

A script sees its job through :class:`Job`: input, output, params, wildcards, threads, resources
and log, never the study config. Everything a job uses is therefore a param (or an input) of its
rule, and Snakemake's ``params`` rerun trigger reruns it exactly when a setting it uses changes.
Execution settings that do not change a result (device, GPU lock folder, loader workers) are
``resources:`` of the model-running rules instead, so moving a study onto a GPU reruns nothing.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np


class Job:
    """What one script job may read (``snakemake.config`` deliberately not among it)."""

    def __init__(self, snakemake: Any):
        self.input = snakemake.input
        self.output = snakemake.output
        self.params = snakemake.params
        self.wildcards = snakemake.wildcards
        self.threads = snakemake.threads
        self.resources = snakemake.resources
        self.log = snakemake.log
        self.rule = snakemake.rule

    def figure_paths(self) -> list[str]:
        """The png and pdf a figure job writes."""
        return [self.output.png, self.output.pdf]


class FigureJob(Job):
    """One figure of a plot job that draws all of an evaluation's figures, seen as a job of its
    own: its input files, its png and pdf, its wildcards (dataset, variant) and params (chance,
    layout, data) from its record (rules/common.smk: plot_items)."""

    def __init__(self, job: Job, item: dict[str, Any]):
        from types import SimpleNamespace

        self.input = list(item["input"])
        self.output = SimpleNamespace(png=item["png"], pdf=item["pdf"])
        self.params = SimpleNamespace(**{k: item[k] for k in ("chance", "layout", "data") if k in item})
        self.wildcards = SimpleNamespace(**item["wildcards"])
        self.threads, self.resources, self.log, self.rule = job.threads, job.resources, job.log, job.rule


def setup(snakemake: Any) -> Job:
    """Log to the rule's ``log:`` file and to stderr; return the job's view (no config)."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if snakemake.log:
        Path(snakemake.log[0]).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(snakemake.log[0], mode="w"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=handlers, force=True)
    sys.excepthook = _log_uncaught
    return Job(snakemake)


def _log_uncaught(kind, error, trace) -> None:
    """Write a job's fatal error (bad images, checksum, stale cache...) into the rule's log too, so
    Snakemake's failed-log display says why, not only the job's stderr."""
    logging.getLogger("job").critical("%s: %s", kind.__name__, error, exc_info=(kind, error, trace))


def expected_attrs(identity: dict[str, Any], manifest: dict[str, Any]) -> dict[str, Any]:
    """What an output must record: its identity (``Study.output_identity``) and its manifest's."""
    return {**identity, "manifest_fingerprint": manifest["fingerprint"], "n_manifest": manifest["n_images"],
            # a seeded slice of the dataset (datasets.<name>.subset), "" for all of it
            "subset": manifest.get("subset", "")}


def read_item(item: dict[str, Any], fields: Sequence[str] = ("logits", "labels", "ids")):
    """``(manifest, outputs)`` of one ``Study.item`` record, the output checked against its identity
    (a stale file is refused)."""
    from beyond_imagenet.datasets.manifest import load_manifest
    from beyond_imagenet.extract import read_outputs

    manifest = load_manifest(item["manifest"])
    return manifest, read_outputs(item["output"], expected_attrs(item["expect"], manifest), fields)


def read_items(job: Job, per_image: PerImage | None = None, finish: Finish | None = None,
               fields: Sequence[str] = ("logits", "labels", "ids")) -> Iterator[tuple]:
    """``(item, manifest, outputs)`` for every record of the job's ``cached`` param, in its order
    (datasets in config order, models in config order within each).

    With ``per_image`` (what a metric job uses): each output is streamed once in row blocks
    (:func:`beyond_imagenet.extract.stream_outputs`) and ``outputs`` holds ``attrs``, ``labels``,
    ``ids`` and the per-image arrays ``per_image(item, manifest, block)`` made of its blocks,
    never the whole logits matrix; ``finish(item, manifest, outputs)`` may then reduce them
    further (e.g. drop what only a scalar needed). The result is kept for the job, so its table
    and its bootstrap samples read each output once. Without it: the whole ``fields`` arrays."""
    for item in job.params.cached:
        if per_image is None:
            manifest, out = read_item(item, fields)
        else:
            manifest, out = reduced_item(job, item, per_image, finish)
        yield item, manifest, out


PerImage = Callable[[dict[str, Any], dict[str, Any], dict[str, Any]], dict[str, Any]]
Finish = Callable[[dict[str, Any], dict[str, Any], dict[str, Any]], dict[str, Any]]


def reduced_item(job: Job, item: dict[str, Any], per_image: PerImage, finish: Finish | None = None,
                 arrays: Sequence[str] = ("logits",), samples: bool = False):
    """``(manifest, outputs)`` of one item as :func:`read_items` makes them with ``per_image``:
    read once per job and reduction (the same function again is served from memory). The
    manifest is one per dataset for the job, without its per-image ``samples`` unless asked for
    (ImageNet-C's are 3.75 M pairs)."""
    from beyond_imagenet.datasets.manifest import load_manifest
    from beyond_imagenet.extract import stream_outputs

    memo = job.__dict__.setdefault("_reduced", {"ids": {}, "manifests": {}})
    key = (per_image, finish, item["output"], tuple(arrays), samples)
    if key not in memo:
        manifests = memo["manifests"]
        if (item["manifest"], samples) not in manifests:
            manifest = load_manifest(item["manifest"])
            if not samples:
                manifest = {k: v for k, v in manifest.items() if k != "samples"}
            manifests[(item["manifest"], samples)] = manifest
        manifest = manifests[(item["manifest"], samples)]
        out = stream_outputs(item["output"], lambda block: per_image(item, manifest, block),
                             expected_attrs(item["expect"], manifest), arrays=arrays, ids_cache=memo["ids"])
        memo[key] = (manifest, finish(item, manifest, out) if finish else out)
    return memo[key]


def reduce_outputs(out: dict[str, Any], item: dict[str, Any], manifest: dict[str, Any], per_image: PerImage,
                   finish: Finish | None = None, arrays: Sequence[str] = ("logits",)) -> dict[str, Any]:
    """What :func:`read_items` makes of an output already in memory (``logits``, ``labels``,
    ``ids``, ``attrs``): the library's way to score outputs of your own, and the tests'."""
    block = {"start": 0, "labels": np.asarray(out["labels"]), "ids": np.asarray(out["ids"], dtype=object),
             **{name: np.asarray(out[name]) for name in arrays}}
    reduced = {"attrs": out.get("attrs", {}), "labels": block["labels"], "ids": block["ids"],
               **per_image(item, manifest, block)}
    return finish(item, manifest, reduced) if finish else reduced


def skipped_row(out: dict[str, Any], **groups: Any) -> dict[str, Any]:
    """The ``n_skipped`` row of one output (images left out under ``on_bad_image: skip``), with the
    table's grouping columns; the ids themselves are listed in ``skipped.csv``."""
    return {**groups, "metric": "n_skipped", "value": int(out["attrs"].get("n_skipped", 0))}


def versions() -> dict[str, str]:
    """Package versions recorded in every output and CKA file."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("torch", "torchvision", "timm", "open_clip_torch", "numpy", "h5py", "pillow"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "absent"
    from beyond_imagenet import __version__

    out["beyond_imagenet"] = __version__
    return out


def dataset_spec(record: dict[str, Any]):
    """The DatasetSpec of a ``Study.dataset_entry`` record (a job's ``dataset`` param)."""
    from beyond_imagenet.datasets import resolve_dataset
    from beyond_imagenet.datasets.vtab import expand_dataset

    spec = resolve_dataset(record.get("parent") or record["name"], record["entry"], record["resources"])
    return expand_dataset(spec, record["entry"])[record["name"]]  # a vtab entry stands for its task splits too


def model_spec(entry: dict[str, Any], identity: dict[str, Any] | None = None):
    """The ModelSpec of a ``Study.model_entry`` record (a job's ``model`` param). ``identity``: the
    model's identity the job was planned with (``Study.head_identity``/``model_identity``): its
    ``checkpoint_sha256`` is checked when the checkpoint is loaded (a file replaced since is refused),
    and a python loader's ``loader_sha256`` when its module is imported."""
    from beyond_imagenet.models import ModelSpec

    return ModelSpec(**{**entry, "label": entry["name"], "paper_key": None,
                        "checkpoint_sha256": (identity or {}).get("checkpoint_sha256"),
                        "loader_sha256": (identity or {}).get("loader_sha256")})

"""One extraction job per (model, group): its fixed cost (imports, model build, device lease,
compilation) is paid once for every output of the group.

Each output is still written on its own by :func:`beyond_imagenet.extract.extract` (own checkpoint
shards, own atomic rename), under ``results/extracted/<model>/``, where every reader finds it
(their Snakemake input is the group's marker). Snakemake deletes a job's outputs before rerunning
it, but only the group's marker is the job's output: the files survive, and a rerun of the group
(one of its datasets changed, or a killed job) reuses each file whose extraction key still matches
and recomputes only the others. The marker records each file's size and time: a file deleted or
replaced since makes the group rerun (:func:`group_damage`, checked when the workflow is planned).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from beyond_imagenet.io import atomic_write_text

log = logging.getLogger(__name__)

#: where ``extraction.compile`` keeps torch inductor's caches (FX graph and kernel caches)
COMPILE_CACHE = "torch_compile_cache"


def process_age() -> float:
    """Seconds since this process started (Linux ``/proc``; 0 where it cannot be read)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def enable_compile_cache(folder: str | os.PathLike) -> Path:
    """Point torch inductor's on-disk caches (FX graph cache, compiled kernels) at ``folder``, so
    every job of the same model and input shape after the first loads instead of compiling."""
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "1")
    import torch._inductor.config as inductor_config

    inductor_config.fx_graph_cache = True
    return folder


def run_group(job) -> dict[str, Any]:
    """Extract every output of one (model, group) job in one process; write the marker listing them.

    Everything comes from the job (``rules/extract.smk``: ``extract_outputs``): the model's build
    entry and identity, the protocol, each output's dataset, variant, manifest, destination and
    expected identity (``items``), the extraction settings (params) and the device, lock folder and
    loader workers (resources). A part job of a split dataset (``extraction.split``: one item with
    ``part`` and ``parts``) computes its slice's checkpoint shards (:func:`extract.extract_part`) and
    records them in its marker for the merge job (:func:`merge_split`), which writes the file."""
    import torch

    from beyond_imagenet.datasets.manifest import load_manifest
    from beyond_imagenet.devices import lease_device
    from beyond_imagenet.evaluations import EVALUATIONS
    from beyond_imagenet.extract import empty_part_record, extract, extract_part, part_shards
    from beyond_imagenet.heads import cached_head
    from beyond_imagenet.models import build_model
    from beyond_imagenet.workflow import expected_attrs, model_spec, versions

    params, resources = job.params, job.resources
    torch.set_num_threads(forward_threads(job))
    model, group, marker = job.wildcards.model, job.wildcards.group, job.output[0]
    items = params.cached
    spec = model_spec(params.model, params.head_identity)  # the checkpoint is checked against its planned sha256
    # A CLIP model's zero-shot head (params.head: its cached file, "" for a model without one) is
    # built or read (heads.cached_head) on the leased device when the job first builds the model.
    head_path, templates = params.head, params.templates
    heads: dict[str, Any] = {}

    def zero_shot_head(device):
        if head_path and "head" not in heads:
            heads["head"] = cached_head(head_path, spec, params.head_identity, templates, device)
        return heads.get("head")

    compile_cache = params.compile_cache
    if params.compile:
        enable_compile_cache(compile_cache)
    built: dict[str, Any] = {}  # standard transforms share one network per input transform

    def standard_network(key: str, device):
        """The model for the study's protocol with input transform ``key``, built once per job."""
        if key not in built:
            built[key] = _maybe_compile(build_model(spec, params.protocol, head=zero_shot_head(device),
                                                    logit_scale=params.logit_scale, input_transform=key),
                                        params.compile)
        return built[key]

    timing = {"items": len(items), "forward_s": 0.0, "computed": 0, "reused": 0}
    written = []
    part_record = None  # a part job of a split dataset (extraction.split): what its merge needs
    recorded_versions = versions()
    if len(items) == 1 and items[0].get("part"):
        item = items[0]
        manifest = load_manifest(item["manifest"], images=True)
        n_images = len(manifest["samples"])
        first, end = part_shards(n_images, params.batch_size, params.shard_size, item["part"], item["parts"])
        if first == end:  # fewer checkpoint shards than parts: no model built, no device leased
            log.info("part %d of %d of %s has no images (%d images make fewer shards than parts)", item["part"],
                     item["parts"], item["extracted"], n_images)
            part_record = empty_part_record(item["extracted"], item["part"], item["parts"], n_images,
                                            params.batch_size, params.shard_size)
            items = []
    passes = list(getattr(params, "passes", None) or [])
    to_run = [p for p in passes if not _pass_reusable(p, spec)]
    timing["passes"] = len(passes)
    with lease_device(resources.device, resources.lock_dir or None) if items or to_run else \
            contextlib.nullcontext() as device:
        for item in items:
            dataset, variant = item["dataset"], item["variant"] or None
            manifest = load_manifest(item["manifest"], images=True)
            attrs = expected_attrs(item["expect"], manifest)
            if variant is None:
                samples = manifest["samples"]
                loaded = standard_network(attrs["input_transform"], device)
            else:
                # The evaluation that asked for the variant builds it (its registry record's hook),
                # on the image subset the variant's identity records.
                hook = EVALUATIONS[item["evaluation"]].variants
                samples = hook.subset(manifest["samples"], item["expect"]) if hook.subset else manifest["samples"]
                log.info("%s on %d of %d images of %s", variant, len(samples), manifest["n_images"], dataset)
                loaded = _maybe_compile(hook.build(spec, variant, params.protocol, head=zero_shot_head(device),
                                                   logit_scale=params.logit_scale), params.compile)
            attrs.update(preprocessing=loaded.preprocessing, versions=recorded_versions)
            if params.compile:
                attrs["compiled"] = "torch.compile (inductor)"
            out = item["extracted"]
            # Not the head: its identity (weights, templates) is part of the extraction key, so a new
            # head recomputes the file through the key; a head file merely rebuilt with the same
            # identity (deleted, or first written by another job of the model running now) is a cache
            # of the same head and must not recompute the model's finished files.
            _forget_if_older(out, [item["manifest"], spec.checkpoint_path])
            _forget_if_made_for_something_else(out, expected_attrs(item["expect"], manifest))
            item_timing: dict[str, float] = {}
            settings = dict(device=device, batch_size=params.batch_size, num_workers=resources.num_workers,
                            shard_size=params.shard_size, features_dtype=params.features_dtype,
                            on_bad_image=params.on_bad_image, timings=item_timing)
            if item.get("part"):  # its slice's checkpoint shards; the merge job writes the file
                part_record = extract_part(loaded.network, loaded.transform, manifest["root"], samples, out, attrs,
                                           part=item["part"], parts=item["parts"], **settings)
            else:
                extract(loaded.network, loaded.transform, manifest["root"], samples, out, attrs, reuse=True,
                        **settings)
                written.append(out)
            if "first_batch" in item_timing:
                timing["computed"] += 1
                timing.setdefault("first_batch", item_timing["first_batch"])
            else:
                timing["reused"] += 1
            timing["forward_s"] += item_timing.get("forward_s", 0.0)
            if variant is not None:
                del loaded  # a variant's network (e.g. another resolution) is not needed again
            if device.type == "cuda":
                torch.cuda.empty_cache()
        # The evaluations' own passes over the images (CKA), with the network built above for the
        # study's standard transform (or built now), on the device already held.
        for item in to_run:
            manifest = load_manifest(item["manifest"], images=True)
            loaded = standard_network("protocol", device)
            started = time.perf_counter()
            EVALUATIONS[item["evaluation"]].model_pass.run(
                loaded, spec, manifest, item["output"], item["expect"], device,
                num_workers=resources.num_workers, on_bad_image=params.on_bad_image)
            timing["pass_s"] = timing.get("pass_s", 0.0) + time.perf_counter() - started
    timing["end"] = time.time()
    timing["passes_computed"] = len(to_run)
    written += [item["output"] for item in passes]
    record = {"model": model, "group": group, "outputs": written, "files": {out: file_stamp(out) for out in written}}
    if part_record is not None:
        record["part"] = part_record
    atomic_write_text(marker, json.dumps(record, indent=1) + "\n")
    return timing


def _pass_reusable(item: dict[str, Any], spec) -> bool:
    """Whether a pass file on disk is what the pass would write now: it records the item's ``expect``
    and the manifest's fingerprint (the evaluation's ``current`` hook), and is not older than its
    manifest or the model's checkpoint (as Snakemake would judge an output)."""
    from beyond_imagenet.datasets.manifest import load_manifest
    from beyond_imagenet.evaluations import EVALUATIONS

    out = Path(item["output"])
    if not out.is_file():
        return False
    newer = _newer_inputs(out, [item["manifest"], spec.checkpoint_path])
    if newer:
        log.info("%s is older than %s: computing it again", out, ", ".join(newer))
        return False
    if not EVALUATIONS[item["evaluation"]].model_pass.current(out, item["expect"], load_manifest(item["manifest"])):
        return False
    log.info("reusing %s (%s pass over %s)", out, item["evaluation"], item["dataset"])
    return True


def merge_split(job) -> dict[str, Any]:
    """The merge job of a split dataset (``merge_extraction_parts``): its file from the records of its
    part jobs (their markers), byte-identical to one job's, then its group marker, as a group job
    writes it. Parts whose shards are gone have their markers removed (the next run computes them
    again) and are named in the error."""
    from beyond_imagenet.datasets.manifest import load_manifest
    from beyond_imagenet.extract import PartsMissingError, merge_parts, unmergeable_parts
    from beyond_imagenet.workflow import expected_attrs

    item, model, marker = job.params.item, job.wildcards.model, job.output[0]
    manifest = load_manifest(item["manifest"])
    out = item["extracted"]
    records = []
    for path in job.input.parts:
        try:
            records.append(json.loads(Path(path).read_text())["part"])
        except (OSError, ValueError, KeyError) as err:
            Path(path).unlink(missing_ok=True)
            raise PartsMissingError(f"{path} cannot be read ({type(err).__name__}: {err}); it was removed: rerun the "
                                    "same snakemake command and its part is computed again", []) from None
    _forget_if_made_for_something_else(out, expected_attrs(item["expect"], manifest))
    try:
        reused = merge_parts(records, manifest["samples"], out, expected_attrs(item["expect"], manifest),
                             on_bad_image=job.params.on_bad_image, root=manifest["root"])
    except PartsMissingError as err:
        _drop_part_markers(job.input.parts, err.parts)
        raise
    except Exception:
        # bad images, NaN outputs: the shards were removed with the error; the parts run again
        _drop_part_markers(job.input.parts, unmergeable_parts(records))
        raise
    atomic_write_text(marker, json.dumps({"model": model, "group": job.wildcards.dataset, "outputs": [out],
                                          "files": {out: file_stamp(out)}, "parts": len(records)}, indent=1) + "\n")
    return {"items": 1, "computed": 0 if reused else 1, "reused": int(reused), "end": time.time()}


def _drop_part_markers(markers, parts: list[int]) -> None:
    for path in markers:
        try:
            part = json.loads(Path(path).read_text())["part"]["part"]
        except (OSError, ValueError, KeyError):
            continue
        if part in parts:
            log.info("removing %s: part %d is computed again by the next run", path, part)
            Path(path).unlink(missing_ok=True)


def file_stamp(path: str | os.PathLike) -> list[int]:
    """A file's size and modification time (ns): what a group marker records of each file it lists."""
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def group_damage(marker: str | os.PathLike) -> list[str]:
    """Why a finished group's files are no longer what its job wrote: each listed file that is
    missing, or whose size or time differs from the marker's record (deleted to be recomputed, as
    the error messages say; replaced by a copy). Empty for a sound group or no marker. Reads only
    the marker and stats the files: cheap enough for every parse of the workflow."""
    try:
        record = json.loads(Path(marker).read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as err:
        return [f"{marker} cannot be read ({err})"]
    stamps = record.get("files", {})
    problems = []
    for out in record.get("outputs", []):
        try:
            stamp = file_stamp(out)
        except FileNotFoundError:
            problems.append(f"{out} is missing")
            continue
        if out in stamps and list(stamps[out]) != stamp:
            problems.append(f"{out} changed after its job wrote it")
    return problems


def part_needs_rerun(record: dict[str, Any]) -> bool:
    """Whether a part of a split dataset (its marker's ``part`` record) has no shards left for its
    merge: reused (it computed none) or its shards removed (by the merge that used them). Stats only
    (no torch, no numpy): cheap enough for every parse of the workflow; the merge reads them whole."""
    if record.get("empty"):
        return False
    if record.get("reused"):
        return True
    folder = Path(record["folder"])
    try:
        if (folder / "run-key").read_text() != record["run_key"]:
            return True
    except OSError:
        return True
    return not all((folder / name).is_file() for name in record.get("shards", []))


def forward_threads(job) -> int:
    """The forward pass's intra-op threads: the job's threads less its loader workers (at least 1).
    Snakemake would set OMP_NUM_THREADS to all of the job's threads; the loaders use the rest."""
    return max(1, int(job.threads) - int(job.resources.num_workers))


def forget_extracted(output: str | os.PathLike) -> list[str]:
    """A damaged ``results/extracted/<model>/<file>``: removing the file alone is enough for the
    next run (its group's marker then lists a missing file: :func:`group_damage`), but a
    reader that finds it damaged also removes its extraction key and every group marker that lists
    it, so the group reruns even where the marker is not checked. The file itself is the caller's
    to remove. Returns what was removed."""
    output = Path(output)
    if output.parent.parent.name != "extracted":
        return []
    folder = output.parent
    twin = output
    removed = []
    for path in (Path(f"{twin}.key"),):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(str(path))
    for marker in sorted(folder.glob("*.group.json")):
        try:
            listed = {Path(p).resolve() for p in json.loads(marker.read_text()).get("outputs", [])}
        except (OSError, ValueError):
            listed = {twin.resolve()}  # an unreadable marker: drop it too, its job reruns
        if twin.resolve() in listed:
            with contextlib.suppress(FileNotFoundError):
                marker.unlink()
                removed.append(str(marker))
    return removed


def _newer_inputs(path: Path, inputs: list) -> list[str]:
    """The inputs (paths; None or "" skipped) modified after the file at ``path`` was."""
    made = path.stat().st_mtime_ns
    return [str(p) for p in inputs if p and Path(p).is_file() and Path(p).stat().st_mtime_ns > made]


def _forget_if_older(out: str, inputs: list) -> None:
    """As Snakemake would: an extracted file older than an input it was made from (a manifest rebuilt
    because its images changed, a new checkpoint) is recomputed, even under the same key."""
    path = Path(out)
    if not path.is_file():
        return
    newer = _newer_inputs(path, inputs)
    if newer:
        log.info("%s is older than %s: recomputing it", out, ", ".join(newer))
        Path(f"{out}.key").unlink(missing_ok=True)


def _forget_if_made_for_something_else(out: str, expected: dict[str, Any]) -> None:
    """A file replaced since its group last ran (a copy of another model's, say: what made its group
    rerun) keeps a matching extraction key beside it: recompute it unless it records what a reader
    of it expects."""
    from beyond_imagenet.extract import (
        CorruptOutputError,
        StaleOutputError,
        check_attrs,
    )

    if not Path(out).is_file():
        return
    try:
        check_attrs(out, expected)
    except (StaleOutputError, CorruptOutputError, OSError) as err:
        log.info("%s is not what this job wrote (%s): recomputing it", out, str(err).splitlines()[0])
        Path(f"{out}.key").unlink(missing_ok=True)


def _maybe_compile(loaded, compile: bool):
    if compile:
        import torch

        loaded.network = torch.compile(loaded.network)
    return loaded


@contextlib.contextmanager
def job_timing(study_log: logging.Logger | None = None):
    """Log one ``job timing {json}`` line when the job ends: process start to first batch, the
    forward passes, and teardown (last batch to exit), for ``benchmarks/study_walltime.py``."""
    record: dict[str, Any] = {}
    start_age = process_age()
    t_start = time.time() - start_age
    yield record
    t_end = time.time()
    line = {"job_s": round(t_end - t_start, 3), "forward_s": round(record.get("forward_s", 0.0), 3),
            "items": record.get("items", 0), "computed": record.get("computed", 0), "reused": record.get("reused", 0)}
    if "first_batch" in record:
        line["start_to_first_batch_s"] = round(record["first_batch"] - t_start, 3)
    if record.get("pass_s"):
        line["pass_s"] = round(record["pass_s"], 3)  # the evaluations' own passes (CKA), beside forward_s
    if "end" in record:
        line["teardown_s"] = round(t_end - record["end"], 3)
    (study_log or log).info("job timing %s", json.dumps(line, sort_keys=True))

"""Where each model's weights come from, whether they are in the local cache, and fetching them.

A model job loads pretrained weights through its library (timm, open_clip), which reads them from
the Hugging Face hub cache (``HF_HUB_CACHE``, ``HF_HOME``; layout ``models--org--name/snapshots/
<commit>/<file>`` with ``refs/main`` naming the commit) or, for weights published only as a URL,
from torch hub's ``checkpoints/`` (timm) or ``~/.cache/clip`` (open_clip). This module resolves the
same location from the libraries' own pretrained configs, so that

* ``python -m beyond_imagenet.doctor`` says, offline, whether a job would find its weights, and
* ``python -m beyond_imagenet.prefetch`` downloads them on a login node with the libraries' own
  download functions, into exactly the caches the jobs read, and verifies them; compute nodes then
  run with ``HF_HUB_OFFLINE=1``.

Verification: the hub stores each large (LFS) file as ``blobs/<sha256>``; the cached file's sha256
must equal that name. open_clip's URL files carry a sha256 prefix in their name, checked likewise.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from pathlib import Path

from beyond_imagenet.io import sha256_file
from beyond_imagenet.models import ModelSpec

# The names the libraries look for when a hub repository is given without a file, and the
# safetensors alternative they try first (timm and open_clip: _get_safe_alternatives).
TIMM_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


@dataclasses.dataclass(frozen=True)
class WeightSource:
    """Where one model's weights come from. ``kind``: ``hub`` (a Hugging Face repository, the
    first of ``filenames`` found is used), ``url`` (a file in ``cache_dir``), ``file`` (a
    checkpoint on disk) or ``none`` (random weights: nothing to fetch)."""

    model: str
    kind: str
    location: str = ""  # repository id, URL or file path
    filenames: tuple[str, ...] = ()
    revision: str | None = None
    cache_dir: str | None = None  # url: the folder the library downloads into
    sha256_prefix: str = ""  # url: the checksum the file name carries (open_clip)

    def describe(self) -> str:
        if self.kind == "hub":
            return f"hf://{self.location}" + (f"@{self.revision}" if self.revision else "")
        return self.location or "random weights"


def _safe_first(filename: str) -> tuple[str, ...]:
    """The file and the safetensors alternative the libraries try before it."""
    if filename in TIMM_WEIGHTS[1:]:
        return TIMM_WEIGHTS
    if filename in OPEN_CLIP_WEIGHTS[1:]:
        return OPEN_CLIP_WEIGHTS
    if filename.endswith((".bin", ".pth")):
        return (filename[:-4] + ".safetensors", filename)
    return (filename,)


def _hub_repo(repo: str) -> tuple[str, str | None]:
    """``org/name@revision`` -> (``org/name``, revision)."""
    name, _, revision = repo.partition("@")
    return name, revision or None


def weight_source(spec: ModelSpec) -> WeightSource:
    """The weights ``spec`` loads, resolved offline from the library's registry."""
    if spec.checkpoint:
        return WeightSource(spec.name, "file", str(spec.checkpoint_path))
    if spec.source == "python":  # what its loader builds or reads itself: nothing the workflow fetches
        return WeightSource(spec.name, "none", f"the loader {spec.loader}")
    if spec.pretrained is False and not (spec.source == "open_clip" and spec.arch.startswith(("hf-hub:", "local-dir:"))):
        return WeightSource(spec.name, "none")
    if spec.source == "timm":
        return _timm_source(spec)
    if spec.source == "open_clip":
        return _open_clip_source(spec)
    raise ValueError(f"models.{spec.name}: no weight resolver for source {spec.source!r}")


def _timm_source(spec: ModelSpec) -> WeightSource:
    import timm

    # What create_model(pretrained=True) itself uses to pick the hub or a URL.
    from timm.models._builder import _resolve_pretrained_source

    arch = f"{spec.arch}.{spec.pretrained}" if isinstance(spec.pretrained, str) else spec.arch
    if arch.startswith(("hf-hub:", "hf_hub:")):
        repo, revision = _hub_repo(arch.split(":", 1)[1])
        return WeightSource(spec.name, "hub", repo, TIMM_WEIGHTS, revision)
    cfg = timm.models.get_pretrained_cfg(arch)
    if cfg is None:
        raise ValueError(f"models.{spec.name}: timm has no pretrained config for {arch!r}")
    load_from, location = _resolve_pretrained_source(cfg.to_dict())
    if load_from == "hf-hub":
        repo, filename = location if isinstance(location, tuple) else (location, None)
        repo, revision = _hub_repo(repo)
        return WeightSource(spec.name, "hub", repo, _safe_first(filename) if filename else TIMM_WEIGHTS, revision)
    if load_from == "url":
        import torch

        return WeightSource(spec.name, "url", location, (os.path.basename(location),),
                            cache_dir=os.path.join(torch.hub.get_dir(), "checkpoints"))
    return WeightSource(spec.name, "file", str(location))


def _open_clip_source(spec: ModelSpec) -> WeightSource:
    import open_clip

    from beyond_imagenet.models import _register_bundled_open_clip_configs

    if spec.arch.startswith("local-dir:"):
        from beyond_imagenet.model_specs import local_dir_files

        return WeightSource(spec.name, "file", str(local_dir_files(spec.arch)[-1]))
    if spec.arch.startswith("hf-hub:"):
        repo, revision = _hub_repo(spec.arch.split(":", 1)[1])
        return WeightSource(spec.name, "hub", repo, ("open_clip_config.json", *OPEN_CLIP_WEIGHTS), revision)
    _register_bundled_open_clip_configs()
    tag = spec.pretrained if isinstance(spec.pretrained, str) else ""
    if os.path.isfile(tag):
        return WeightSource(spec.name, "file", tag)
    cfg = open_clip.get_pretrained_cfg(spec.arch, tag) or {}
    if cfg.get("file"):
        return WeightSource(spec.name, "file", cfg["file"])
    if cfg.get("hf_hub"):  # open_clip prefers the hub whenever a config names both
        repo, filename = os.path.split(cfg["hf_hub"])
        return WeightSource(spec.name, "hub", repo, _safe_first(filename) if filename else OPEN_CLIP_WEIGHTS)
    if cfg.get("url"):
        url = cfg["url"]
        name = os.path.basename(url)
        prefix = url.split("/")[-2] if "openaipublic" in url else (
            os.path.splitext(name)[0].split("-")[-1] if "mlfoundations" in url else "")
        return WeightSource(spec.name, "url", url, (name,), cache_dir=os.path.expanduser("~/.cache/clip"),
                            sha256_prefix=prefix)
    raise ValueError(f"models.{spec.name}: open_clip has no pretrained weights {tag!r} for {spec.arch!r}")


# ------------------------------------------------------------------------------- the cache
def cached_files(source: WeightSource) -> list[Path] | None:
    """The local files a job would load (no network), or None when they are not all there."""
    if source.kind == "none":
        return []
    if source.kind == "file":
        return [Path(source.location)] if Path(source.location).is_file() else None
    if source.kind == "url":
        path = Path(source.cache_dir or "") / source.filenames[0]
        return [path] if path.is_file() else None
    from huggingface_hub import try_to_load_from_cache

    found = []
    config = [f for f in source.filenames if f.endswith(".json")]
    weights = [f for f in source.filenames if not f.endswith(".json")]
    for group in (config, weights):
        for filename in group:
            hit = try_to_load_from_cache(source.location, filename, revision=source.revision)
            if isinstance(hit, str):
                found.append(Path(hit))
                break
        else:
            if group:
                return None
    return found


def verify(source: WeightSource, path: Path) -> str | None:
    """None if ``path`` checks out; else what is wrong with it."""
    if not path.is_file():
        return f"{path} is missing"
    if source.kind == "hub":
        blob = path.resolve()
        if re.fullmatch(r"[0-9a-f]{64}", blob.name):  # an LFS file: named by its sha256
            found = sha256_file(blob)
            if found != blob.name:
                return f"{path} (blob {blob.name}) has sha256 {found}: damaged; delete it and prefetch again"
        elif path.stat().st_size == 0:
            return f"{path} is empty"
    if source.kind == "url" and source.sha256_prefix:
        found = hashlib.sha256(path.read_bytes()).hexdigest()
        if not found.startswith(source.sha256_prefix):
            return f"{path} has sha256 {found}, expected {source.sha256_prefix}...: delete it and prefetch again"
    return None


def hub_offline() -> bool:
    """Whether huggingface_hub is told to stay offline (as on compute nodes)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


# ------------------------------------------------------------------------------- fetching
def fetch(source: WeightSource) -> list[Path]:
    """Download the weights into the cache the job reads, with the library's own functions."""
    if source.kind in ("none", "file"):
        found = cached_files(source)
        if found is None:
            raise FileNotFoundError(f"models.{source.model}: checkpoint {source.location} does not exist")
        return found
    if source.kind == "url":
        if source.cache_dir and "clip" in Path(source.cache_dir).parts[-1]:
            from open_clip.pretrained import download_pretrained_from_url

            return [Path(download_pretrained_from_url(source.location))]
        import torch

        torch.hub.load_state_dict_from_url(source.location, map_location="cpu", check_hash=True,
                                           weights_only=True)
        return [Path(source.cache_dir or "") / source.filenames[0]]
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    got = []
    config = [f for f in source.filenames if f.endswith(".json")]
    weights = [f for f in source.filenames if not f.endswith(".json")]
    for group in (config, weights):
        misses = []
        for filename in group:
            try:
                got.append(Path(hf_hub_download(source.location, filename, revision=source.revision)))
                break
            except EntryNotFoundError as err:  # the next candidate (the library does the same)
                misses.append(f"{filename}: {type(err).__name__}")
        else:
            if group:
                raise FileNotFoundError(f"models.{source.model}: hf://{source.location} has none of "
                                        f"{', '.join(group)} ({'; '.join(misses)})")
    return got

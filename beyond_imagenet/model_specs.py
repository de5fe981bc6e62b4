"""What a study config says about a model, without torch: the model entry (:class:`ModelSpec`), the
checks of its architecture and pretrained tag, the checkpoint's hash.

The Snakefile imports this (through ``Study``) on every parse, so nothing here imports torch, timm
or open_clip at module level. Checking a name does need the library (timm's and open_clip's
registries); :func:`architecture_facts` asks it once per (library version, architecture) and keeps
the answer in a small cache file, so later parses do not import torch. ``beyond_imagenet.models``
builds the networks and re-exports these names.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from beyond_imagenet.checkpoints import resolve_checkpoint_path
from beyond_imagenet.io import atomic_write_text, sha256_file
from beyond_imagenet.paper_results import paper_key_for

log = logging.getLogger(__name__)

#: The model sources (``models.SOURCES`` has their adapters) and whether each needs a zero-shot head.
NEEDS_HEAD = {"timm": False, "open_clip": True, "python": False}
#: The distribution whose version keys the cache of each source's answers.
_DISTRIBUTIONS = {"timm": "timm", "open_clip": "open_clip_torch", "python": "torch"}
#: ``head:`` values: ``keep`` the checkpoint's classifier (ImageNet-1k, or ``num_classes`` of the
#: user's own), or ``drop`` it (features only: the backbone of a fine-tuned checkpoint).
HEADS = ("keep", "drop")
#: open_clip names that carry their own config and weights: a Hugging Face hub repository, or a
#: folder in the layout open_clip writes for the hub (open_clip_config.json + the weights file).
OPEN_CLIP_SCHEMES = ("hf-hub:", "local-dir:")
#: The weights file open_clip picks in a ``local-dir:`` folder, most preferred first (open_clip 3.x
#: ``factory._find_checkpoint_in_dir``); otherwise the first ``*.safetensors``, ``*.bin``, ``*.pth``.
LOCAL_DIR_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
                     "open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth", "model.safetensors",
                     "pytorch_model.bin", "pytorch_model.pth", "model.pth")


class ModelError(RuntimeError):
    """A model entry cannot be built; the message names the config key and what to do."""


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str
    source: str
    arch: str
    pretrained: bool | str = True
    checkpoint: str | None = None
    seed: int = 0
    family: str = "other"
    paradigm: str = "supervised"
    label: str = ""
    paper_key: str | None = None
    checkpoint_format: str = "auto"
    preprocessing: str | None = None  # None = the study's protocol
    features_only: bool = False  # no ImageNet-1k classifier: empty logits, feature evaluations only
    # In a job: the checkpoint's sha256 the run was planned with (its identity); the file is refused
    # if it differs when loaded. Not part of the job's params (Study.model_entry leaves it out).
    checkpoint_sha256: str | None = None
    training_data: str = ""  # display and grouping only (beyond_imagenet/zoo.py infers it from the tag)
    # A classifier of the user's own classes (a fine-tuned checkpoint's head): logits of that many
    # columns, in the label space of the user's labelled data. None = ImageNet-1k (1,000).
    num_classes: int | None = None
    head: str = "keep"  # drop: load a fine-tuned checkpoint's backbone only (features_only)
    # source python: ``package.module:function`` and its keyword arguments (canonical JSON, "" = none)
    loader: str | None = None
    loader_args: str = ""
    # In a job: the loader module's sha256 the run was planned with (as checkpoint_sha256).
    loader_sha256: str | None = None

    @classmethod
    def from_config(cls, name: str, entry: dict[str, Any]) -> ModelSpec:
        if entry["source"] not in NEEDS_HEAD:
            raise ModelError(f"models.{name}.source: unknown source {entry['source']!r}; known: {sorted(NEEDS_HEAD)}")
        paradigm = entry.get("paradigm") or ("clip" if entry["source"] == "open_clip" else "supervised")
        head = entry.get("head", "keep")
        if head not in HEADS:
            raise ModelError(f"models.{name}.head: {head!r} is not one of {list(HEADS)}")
        return cls(
            name=name,
            source=entry["source"],
            arch=entry.get("name") or entry.get("loader") or "",
            pretrained=entry.get("pretrained", True),
            checkpoint=entry.get("checkpoint"),
            checkpoint_format=entry.get("checkpoint_format", "auto"),
            preprocessing=entry.get("preprocessing"),
            features_only=bool(entry.get("features_only", False)) or head == "drop",
            num_classes=entry.get("num_classes"),
            head=head,
            loader=entry.get("loader"),
            loader_args=canonical_args(entry.get("args")),
            seed=entry.get("seed", 0),
            family=entry.get("family") or _guess_family(entry.get("name") or ""),
            paradigm=paradigm,
            label=entry.get("label") or name,
            training_data=entry.get("training_data") or _guess_training_data(entry),
            # The published numbers are drawn beside a model that *is* a paper model, whatever the
            # study calls it; `paper_key:` names one explicitly (e.g. for a re-hosted copy).
            paper_key=entry.get("paper_key") or paper_key_for(entry["source"], entry.get("name", ""),
                                                              entry.get("pretrained", True), entry.get("checkpoint")),
        )

    @property
    def checkpoint_path(self) -> Path | None:
        """The checkpoint file on this machine (a ``pkg://`` reference resolved here), or None."""
        return resolve_checkpoint_path(self.checkpoint) if self.checkpoint else None

    @property
    def weights_tag(self) -> str:
        """What weights the outputs came from; part of every cache key."""
        if self.checkpoint:
            return f"checkpoint:{Path(self.checkpoint).name}"
        if self.source == "python":
            return f"python:{self.loader}"
        if self.source == "open_clip" and self.arch.startswith(OPEN_CLIP_SCHEMES):
            return self.arch  # the hub repository's or the folder's own weights (`pretrained` is not used)
        if self.pretrained is False:
            return f"random:seed={self.seed}"
        if self.pretrained is True:
            return "pretrained:default"
        return f"pretrained:{self.pretrained}"

    @property
    def needs_zero_shot_head(self) -> bool:
        return NEEDS_HEAD[self.source] and not self.features_only


def canonical_args(args: dict[str, Any] | None) -> str:
    """A python loader's keyword arguments as canonical JSON (sorted keys): part of the model's
    identity, so the same arguments in another order are the same model; "" for none."""
    return json.dumps(args, sort_keys=True, separators=(",", ":")) if args else ""


def _guess_training_data(entry: dict[str, Any]) -> str:
    """The pretraining data the entry's tag names (zoo.infer_training_data), "" for none known,
    random weights or a checkpoint."""
    from beyond_imagenet.zoo import infer_training_data

    if entry.get("checkpoint") or entry.get("pretrained", True) is False or entry["source"] == "python":
        return ""
    tag = entry.get("pretrained", True)
    if not isinstance(tag, str):  # timm's default tag, or one written into the name
        tag = entry["name"].split(".", 1)[1] if "." in entry["name"] else ""
    return infer_training_data(tag)


def _guess_family(arch: str) -> str:
    arch = arch.lower()
    if "vit" in arch or "deit" in arch:
        return "vit"
    if "convnext" in arch or "resnet" in arch:
        return "convnet"
    return "other"


def _cache_file(source: str) -> Path:
    """Where the answers of ``source``'s library are kept: one file per library version (and, for
    open_clip, per set of configs bundled with this package), under the user's cache folder
    (``$BEYOND_IMAGENET_CACHE``, else ``$XDG_CACHE_HOME`` or ``~/.cache``, ``/beyond_imagenet``)."""
    from importlib import metadata, resources

    try:
        version = metadata.version(_DISTRIBUTIONS[source])
    except metadata.PackageNotFoundError:
        version = "missing"
    if source == "open_clip":
        digest = hashlib.sha256()
        for config in sorted(resources.files("beyond_imagenet").joinpath("model_configs").iterdir(),
                             key=lambda p: p.name):
            if config.name.endswith(".json"):
                digest.update(config.name.encode() + b"\0" + config.read_bytes())
        version += "-" + digest.hexdigest()[:12]
    root = os.environ.get("BEYOND_IMAGENET_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "beyond_imagenet")
    return Path(root) / f"architectures-{source}-{version}.json"


def cached_fact(source: str, key: str, compute) -> Any:
    """``compute()`` (which may import the library and torch), remembered per library version under
    ``key`` (a JSON value); a cache that cannot be read or written is only slower."""
    path = _cache_file(source)
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        return known[key]
    value = compute()
    try:  # re-read: another parse may have added answers meanwhile
        known = {**json.loads(path.read_text()), key: value} if path.is_file() else {key: value}
    except (OSError, ValueError):
        known = {key: value}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(known, sort_keys=True))
    except OSError as err:
        log.debug("cannot keep %s: %s", path, err)
    return value


def known_fact(source: str, key: str) -> Any:
    """What :func:`cached_fact` keeps under ``key`` for ``source``, or None if nothing yet (computes nothing)."""
    try:
        return json.loads(_cache_file(source).read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None


def python_features_key(loader: str, sha256: str, args: str) -> str:
    """The fact key of a python model's feature width: learned by the first job that builds it
    (``models.PythonSource``), read by the disk estimate; its code's hash and arguments are in it."""
    return f"features:{loader}:{sha256}:{args}"


@functools.lru_cache(maxsize=1024)
def architecture_facts(source: str, arch: str) -> dict[str, Any]:
    """``models.architecture_facts`` (unknown-architecture message, pretrained tags, open_clip image
    size), asked of the library once per version (see :func:`cached_fact`)."""

    def ask():
        from beyond_imagenet.models import architecture_facts as ask_library

        return ask_library(source, arch)

    return cached_fact(source, f"arch:{arch}", ask)


def unknown_architecture_message(source: str, arch: str) -> str | None:
    """None if ``source`` knows ``arch``; else a message with the closest known names. A python
    source's ``name`` is a free label (its loader is checked by :func:`loader_problem`)."""
    if source == "python":
        return None
    return architecture_facts(source, arch)["unknown"]


def unknown_pretrained_message(source: str, arch: str, pretrained: bool | str) -> str | None:
    """None if the library has the weights ``pretrained`` names for ``arch`` (checked offline in its
    registry, as architectures are); else a message with the closest tags. A tag that is a local
    file is open_clip's own way to load weights and is accepted."""
    import difflib
    import os

    if pretrained is False or source == "python":
        return None
    if source == "open_clip" and isinstance(pretrained, str) and os.path.isfile(pretrained):
        return None
    tags = architecture_facts(source, arch)["tags"]
    if tags is None:
        return None
    if pretrained is True:
        if source == "timm" and not tags:
            return (f"timm has no pretrained weights for {arch!r} (timm would silently use random ones): set "
                    "`pretrained: false` (random, seeded), or `checkpoint:` with your weights")
        return None  # open_clip without a tag is refused with the list of tags elsewhere
    if pretrained in tags:
        return None
    close = difflib.get_close_matches(pretrained, tags, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    shown = ", ".join(tags[:12]) + (f", ... ({len(tags)} in all)" if len(tags) > 12 else "")
    known = f" Known tags: {shown}." if tags else f" {source} has no pretrained weights for {arch!r}."
    return f"{source} has no pretrained tag {pretrained!r} for {arch!r}{hint}{known}"


@functools.lru_cache(maxsize=64)
def _checkpoint_sha256(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def checkpoint_sha256(path: str | Path) -> str:
    """sha256 of a checkpoint file, hashed once per (path, size, mtime) in a process: the content,
    not the name, keys the cache, so replacing the weights under the same name is noticed."""
    stat = Path(path).stat()
    return _checkpoint_sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)




# ------------------------------------------------------------------------------ source: python
#: ``package.module:function``
LOADER_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"


def loader_search_path() -> list[str]:
    """Where a loader module is looked for: the working directory (where snakemake runs, so a
    ``my_models.py`` beside the study file is found), then Python's own path."""
    import sys

    return [os.getcwd(), *[p or os.getcwd() for p in sys.path]]


def loader_file(loader: str) -> Path:
    """The source file of a loader's module, found as ``import`` would find it but without
    importing anything (no package ``__init__`` runs): the Snakefile's parse stays torch-free and
    the user's module is imported by the jobs only. Raises ModelError saying what is missing."""
    from importlib.machinery import PathFinder

    module = loader.partition(":")[0]
    parts = module.split(".")
    path = loader_search_path()
    found = None
    for i, part in enumerate(parts):
        found = PathFinder.find_spec(part, path)
        name = ".".join(parts[: i + 1])
        if found is None:
            raise ModelError(f"module {name!r} is not found in the working directory ({os.getcwd()}) or on "
                             "the Python path (PYTHONPATH, installed packages)")
        if i < len(parts) - 1:
            if not found.submodule_search_locations:
                raise ModelError(f"{name!r} is a module, not a package: it has no submodule {parts[i + 1]!r}")
            path = list(found.submodule_search_locations)
    if not found.origin or not os.path.isfile(found.origin):
        raise ModelError(f"module {module!r} has no source file (a namespace package or a built-in module); "
                         "name a module file that defines the loader")
    return Path(found.origin)


def loader_problem(loader: str) -> str | None:
    """None if ``loader``'s module file exists and defines the function (read with ``ast`` when it
    is Python source, never imported); else what is wrong."""
    import ast

    try:
        path = loader_file(loader)
    except ModelError as err:
        return f"{loader}: {err}"
    function = loader.partition(":")[2]
    if path.suffix != ".py":
        return None  # an extension module: only importing it could tell
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError, OSError) as err:
        return f"{loader}: {path} cannot be read as Python ({type(err).__name__}: {err})"
    defined = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            defined |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            defined |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.If, ast.Try)):
            return None  # definitions under a condition: only importing it could tell
    if function in defined:
        return None
    return f"{loader}: {path} defines no {function!r} at its top level"


def loader_sha256(loader: str) -> str:
    """sha256 of the loader module's source file: part of the model's identity, so editing the code
    recomputes its outputs (the modules it imports in turn are not hashed)."""
    return checkpoint_sha256(loader_file(loader))


# ------------------------------------------------------------------------ open_clip local-dir:
def local_dir_files(arch: str) -> list[Path]:
    """The files a ``local-dir:<folder>`` open_clip model is loaded from: its open_clip_config.json and
    the weights file open_clip picks there (:data:`LOCAL_DIR_WEIGHTS`). Raises ModelError naming
    what is missing."""
    folder = Path(os.path.expanduser(arch[len("local-dir:"):]))
    config = folder / "open_clip_config.json"
    if not folder.is_dir():
        raise ModelError(f"{arch}: folder {folder} does not exist")
    if not config.is_file():
        raise ModelError(f"{arch}: {folder} has no open_clip_config.json (open_clip's layout: "
                         "open_clip_config.json with model_cfg and preprocess_cfg, beside the weights)")
    candidates = sorted([*folder.glob("*.safetensors"), *folder.glob("*.bin"), *folder.glob("*.pth")])
    preferred = [folder / name for name in LOCAL_DIR_WEIGHTS if (folder / name) in candidates]
    candidates.sort(key=lambda p: p.suffix != ".safetensors")
    weights = (preferred or candidates)[:1]
    if not weights:
        raise ModelError(f"{arch}: {folder} has no weights file (open_clip_model.safetensors, "
                         "open_clip_pytorch_model.bin, ...)")
    return [config, *weights]


def local_dir_sha256(arch: str) -> str:
    """One sha256 over a ``local-dir:`` model's config and weights (each file's name and content
    hash): its identity, so new weights in the same folder are noticed."""
    digest = hashlib.sha256()
    for path in local_dir_files(arch):
        digest.update(f"{path.name}\0{checkpoint_sha256(path)}\n".encode())
    return digest.hexdigest()

"""Model lists: ``models_from:`` entries that expand the libraries' pretrained registries into
ordinary ``models:`` entries, and what a pretrained tag says about a model.

A study of 10 to 100 models is written as a few patterns instead of one YAML entry per model::

    models_from:
      - source: timm
        pattern: [convnext_tiny.fb_in22k_ft_in1k, "vit_base_patch16_*.augreg*_in1k"]
        exclude: ["*_384*"]
      - source: open_clip
        pattern: "ViT-B-32:laion2b*"      # ARCH or ARCH:TAG, fnmatch wildcards
      - source: timm
        file: my_models.txt               # one pattern per line (# comments)

A timm pattern is matched against ``timm.list_pretrained()`` (``arch.tag`` names), an open_clip
one against ``open_clip.list_pretrained()`` pairs: both registries are local, so a list is
expanded and checked offline, like a hand-written entry (``study.validate_config``). Every
pattern must match at least one pretrained model.

Each match becomes a ``models:`` entry named after it (``convnext_tiny-fb_in22k_ft_in1k``,
``ViT-B-32-laion2b_s34b_b79k``) with, unless the list entry sets them:

- ``paradigm``, ``family``, ``training_data``: :func:`infer` (the tag's data and objective, the
  architecture's timm module); left to the defaults where the tag says nothing known;
- ``features_only``: true where timm's pretrained config has no 1000-class head (IN-21k-only,
  DINOv2, MAE weights), so those models join the feature evaluations only;
- ``preprocessing: native``: each model's own input size and transform (``paper`` would feed a
  384-px model 224-px crops; the study warns when it does, ``input_size_notes``).

The list entry's ``paradigm`` / ``family`` / ``training_data`` / ``features_only`` /
``preprocessing`` / ``seed`` apply to all its models; a ``models:`` entry of the same name
overrides the keys it gives (e.g. a label, or a paradigm the tag gets wrong).
"""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path
from typing import Any

#: Keys of a ``models_from`` entry copied into every model it expands to.
SHARED_KEYS = ("paradigm", "family", "training_data", "features_only", "preprocessing", "seed")

# ------------------------------------------------------------------ what a tag says
#: (regular expression on the pretrained tag or open_clip name, training data) in priority order:
#: the pretraining set, the largest, comes first (``laion2b_ft_in12k_in1k`` is LAION-2B).
TRAINING_DATA: tuple[tuple[str, str], ...] = (
    (r"laion5b", "LAION-5B"),
    (r"laion2b", "LAION-2B"),
    (r"laion400m", "LAION-400M"),
    (r"laion_?aesthetic|laiona", "LAION-Aesthetics"),
    (r"openai", "OpenAI WIT-400M"),
    (r"datacomp_?xl|datacomp1b|datacomp_s34b", "DataComp-1B"),
    (r"datacomp_l", "DataComp-L"),
    (r"datacomp_m", "DataComp-M"),
    (r"datacomp_s", "DataComp-S"),
    (r"datacompdr", "DataCompDR"),
    (r"commonpool_xl", "CommonPool-XL"),
    (r"commonpool_l", "CommonPool-L"),
    (r"commonpool_m", "CommonPool-M"),
    (r"commonpool_s", "CommonPool-S"),
    (r"dfn5b", "DFN-5B"),
    (r"dfn2b|dfndr2b", "DFN-2B"),
    (r"metaclip_fullcc|metaclip_2pt5b", "MetaCLIP-2.5B"),
    (r"metaclip_400m", "MetaCLIP-400M"),
    (r"metaclip2_worldwide", "MetaCLIP-2 worldwide"),
    (r"merged2b", "Merged-2B"),
    (r"webli", "WebLI"),
    (r"cc12m", "CC12M"),
    (r"yfcc15m", "YFCC-15M"),
    (r"lvd1689m", "LVD-1689M"),
    (r"lvd142m|dinov2", "LVD-142M"),
    (r"ig1b", "IG-1B"),
    (r"yfcc100m", "YFCC-100M"),
    (r"jft", "JFT-300M"),
    (r"m38m", "Merged-38M"),
    (r"in22k|in21k|inw21k", "IN-21k"),
    (r"in12k", "IN-12k"),
    (r"in1k", "IN-1k"),
    (r"seer", "IG-1B"),  # SEER: self-supervised on Instagram images
    (r"^(mae|dino|fcmae|ijepa)$", "IN-1k"),  # timm's self-supervised IN-1k weights name no data
)

#: (regular expression on ``arch.tag`` / ``arch tag``, paradigm) in priority order: the
#: pretraining objective (a CLIP tower fine-tuned on IN-1k is still clip).
PARADIGM_RULES: tuple[tuple[str, str], ...] = (
    (r"clip|siglip|laion|openai|datacomp|commonpool|dfn|metaclip|webli|cc12m|yfcc15m|merged2b", "clip"),
    (r"dinov2|dinov3|lvd142m|lvd1689m|dino|mae|fcmae|ijepa|\bmim_|[._]mim|seer|beitv2|_beit", "self_supervised"),
)

#: timm modules by family (architecture, for markers and grouping); others are ``other``.
FAMILY_MODULES = {
    "vit": {"vision_transformer", "deit", "beit", "eva", "swin_transformer", "swin_transformer_v2",
            "swin_transformer_v2_cr", "vision_transformer_relpos", "vision_transformer_sam", "cait", "xcit",
            "pvt_v2", "twins", "volo", "tnt", "crossvit", "hiera", "naflexvit", "pit", "mvitv2", "davit", "nest"},
    "convnet": {"convnext", "resnet", "resnetv2", "efficientnet", "regnet", "mobilenetv3", "mobilenetv5",
                "densenet", "vgg", "inception_v3", "inception_v4", "inception_resnet_v2", "inception_next", "rexnet",
                "ghostnet", "dla", "dpn", "nfnet", "byobnet", "senet", "res2net", "resnest", "xception",
                "xception_aligned", "hrnet", "cspnet", "tresnet", "vovnet", "sknet", "selecsls", "hgnet", "repvit",
                "repghost", "rdnet", "fasternet", "starnet", "nasnet", "pnasnet", "hardcorenas", "convmixer"},
}


def infer_training_data(tag: str) -> str:
    """The pretraining data a pretrained tag (timm's after the dot, open_clip's name) names, or
    "" where it names none we know."""
    tag = tag.lower()
    for pattern, data in TRAINING_DATA:
        if re.search(pattern, tag):
            return data
    return ""


def infer_paradigm(source: str, arch: str, tag: str) -> str:
    """clip / self_supervised / supervised, from the source, architecture and tag: open_clip
    weights are CLIP; timm weights by their tag and name (``.clip_laion2b``, ``_dinov2.lvd142m``,
    ``.mae``, ``.fcmae_ft_in1k``), supervised otherwise."""
    if source == "open_clip":
        return "clip"
    text = f"{arch}.{tag}".lower()
    for pattern, paradigm in PARADIGM_RULES:
        if re.search(pattern, text):
            return paradigm
    return "supervised"


def infer_family(source: str, arch: str) -> str:
    """vit / convnet / other: timm's module of the architecture; open_clip's vision tower name."""
    if source == "timm":
        module = _timm_module(arch.split(".", 1)[0])
        for family, modules in FAMILY_MODULES.items():
            if module in modules:
                return family
        return "other"
    lower = arch.lower()  # open_clip names its vision tower: ViT-B-32, EVA02-B-16, RN50, convnext_base...
    if lower.startswith("mobileclip"):
        return "other"  # hybrid conv / attention towers
    if lower.startswith(("vit", "eva", "pe-core")) or "-vit-" in lower:
        return "vit"
    if lower.startswith(("rn", "convnext", "timm-resnet", "timm-efficientnet", "timm-convnext")):
        return "convnet"
    return "other"


def _timm_module(arch: str) -> str:
    from timm.models import _registry

    return _registry._model_to_module.get(arch, "")


def infer(source: str, arch: str, tag: str | bool) -> dict[str, str]:
    """``paradigm``, ``family`` and ``training_data`` of (source, architecture, pretrained tag)."""
    tag = tag if isinstance(tag, str) else ""
    return {"paradigm": infer_paradigm(source, arch, tag), "family": infer_family(source, arch),
            "training_data": infer_training_data(tag)}


# ------------------------------------------------------------------ expansion
class ModelListError(ValueError):
    """A ``models_from`` entry is invalid or matches nothing; the message names it."""


def model_name(source: str, arch: str, tag: str) -> str:
    """The ``models:`` key of an expanded model: ``arch-tag`` in the characters a key allows."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", f"{arch}-{tag}")


def _patterns(entry: dict[str, Any], where: str, base: str | os.PathLike) -> list[str]:
    patterns = entry.get("pattern", [])
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    if entry.get("file"):
        path = Path(entry["file"])
        path = path if path.is_absolute() else Path(base) / path
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as err:
            raise ModelListError(f"{where}.file: cannot read {path} ({err.strerror or err}); give a text file "
                                 "with one model pattern per line") from None
        patterns += [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]
    if not patterns:
        raise ModelListError(f"{where}: give `pattern:` (one or a list) or `file:` (one pattern a line)")
    return patterns


def _close(pattern: str, names: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(pattern, names, n=3, cutoff=0.6)
    return f"; did you mean {', '.join(close)}?" if close else ""


def _matches(source: str, pattern: str, exclude: list[str], where: str) -> list[tuple[str, str]]:
    """(architecture, tag) pairs of the registry that ``pattern`` matches, in registry order."""
    if source == "timm":
        import timm

        names = timm.list_pretrained(pattern, exclude_filters=exclude or "")
        if not names:
            raise ModelListError(f"{where}: timm has no pretrained model matching {pattern!r}"
                                 f"{_close(pattern, timm.list_pretrained())} (timm.list_pretrained('{pattern}') "
                                 "lists what it knows)")
        return [tuple(n.split(".", 1)) if "." in n else (n, "") for n in names]
    import open_clip

    from beyond_imagenet.models import _register_bundled_open_clip_configs

    _register_bundled_open_clip_configs()
    arch_pattern, _, tag_pattern = pattern.partition(":")
    tag_pattern = tag_pattern or "*"
    pairs = [(a, t) for a, t in open_clip.list_pretrained()
             if fnmatch.fnmatchcase(a, arch_pattern) and fnmatch.fnmatchcase(t, tag_pattern)
             and not any(fnmatch.fnmatchcase(f"{a}:{t}", x) or fnmatch.fnmatchcase(a, x) for x in exclude)]
    if not pairs:
        known = [f"{a}:{t}" for a, t in open_clip.list_pretrained()]
        raise ModelListError(f"{where}: open_clip has no pretrained model matching {pattern!r} (ARCH or ARCH:TAG)"
                             f"{_close(pattern, known)} (open_clip.list_pretrained() lists what it knows)")
    return pairs


def expand_entry(entry: dict[str, Any], where: str, base: str | os.PathLike = ".") -> dict[str, dict[str, Any]]:
    """The ``models:`` entries one ``models_from`` entry stands for (name -> entry)."""
    source = entry["source"]
    exclude = entry.get("exclude", [])
    exclude = [exclude] if isinstance(exclude, str) else list(exclude)
    out: dict[str, dict[str, Any]] = {}
    for pattern in _patterns(entry, where, base):
        for arch, tag in _matches(source, pattern, exclude, where):
            name = model_name(source, arch, tag)
            model: dict[str, Any] = {"source": source, "name": arch, "pretrained": tag or True,
                                     **{k: v for k, v in infer(source, arch, tag).items() if v},
                                     "preprocessing": "native",
                                     "label": f"{arch}.{tag}" if source == "timm" else f"{arch} {tag}"}
            if source == "timm" and _timm_classes(arch, tag) != 1000:
                model["features_only"] = True  # no ImageNet-1k head: feature evaluations only
            model.update({k: entry[k] for k in SHARED_KEYS if k in entry})
            out.setdefault(name, model)
    return out


def _timm_classes(arch: str, tag: str) -> int | None:
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(f"{arch}.{tag}" if tag else arch)
    return getattr(cfg, "num_classes", None) if cfg else None


def expand_model_lists(config: dict[str, Any], base: str | os.PathLike = ".") -> list[str]:
    """Expand ``config['models_from']`` into ``config['models']`` in place; the problems (lines
    naming the key) are returned, nothing is changed where there is one. A ``models:`` entry of an
    expanded name overrides the keys it gives. Expanding twice changes nothing."""
    lists = config.get("models_from") or []
    if not lists:
        return []
    if not isinstance(lists, list):
        return [f"  models_from: a list of entries (source:, pattern: or file:), not a {type(lists).__name__}"]
    problems, expanded = [], {}
    for i, entry in enumerate(lists):
        where = f"models_from[{i}]"
        if not isinstance(entry, dict) or entry.get("source") not in ("timm", "open_clip"):
            problems.append(f"  {where}.source: timm or open_clip")
            continue
        unknown = sorted(set(entry) - {"source", "pattern", "file", "exclude", *SHARED_KEYS})
        if unknown:
            problems.append(f"  {where}: unknown key(s) {unknown}; known: source, pattern, file, exclude, "
                            f"{', '.join(SHARED_KEYS)}")
            continue
        try:
            for name, model in expand_entry(entry, where, base).items():
                expanded.setdefault(name, model)
        except ModelListError as err:
            problems.append(f"  {err}")
    explicit = config.get("models") or {}
    if not isinstance(explicit, dict):
        problems.append("  models: a mapping of model entries (or leave it out with models_from:), not a "
                        f"{type(explicit).__name__}")
    if problems:
        return problems
    merged = {name: {**model, **(explicit.get(name) or {})} for name, model in expanded.items()}
    config["models"] = {**merged, **{n: e for n, e in explicit.items() if n not in merged}}
    return []


def _pretrained_input_size(arch: str) -> int | None:
    """The input side timm's pretrained config of ``arch`` (``name.tag``) gives, None if unknown;
    asked of timm once per timm version (model_specs.cached_fact: a parse imports no torch)."""
    from beyond_imagenet.model_specs import cached_fact

    def ask():
        from timm.models import get_pretrained_cfg

        try:
            cfg = get_pretrained_cfg(arch)
        except (RuntimeError, KeyError, ValueError):  # a name / tag timm does not know: reported by validation
            return None
        size = tuple(getattr(cfg, "input_size", None) or ())
        return int(size[-1]) if size else None

    return cached_fact("timm", f"input_size:{arch}", ask)


def input_size_notes(config: dict[str, Any]) -> list[str]:
    """One line per timm model whose ``paper`` protocol changes its input size: the paper feeds
    224-px crops, so a 384-px model's position embeddings are resampled (a ViT) or it sees
    smaller objects than it was trained on (a ConvNet)."""
    notes = []
    for name, entry in config["models"].items():
        protocol = entry.get("preprocessing") or config.get("preprocessing", "paper")
        if entry["source"] != "timm" or protocol != "paper" or entry.get("checkpoint"):
            continue
        tag = entry.get("pretrained", True)
        arch = entry["name"] if not isinstance(tag, str) or "." in entry["name"] else f"{entry['name']}.{tag}"
        size = _pretrained_input_size(arch)
        if size and size != 224:
            notes.append(f"models.{name}: preprocessing paper feeds 224-px crops to {arch}, pretrained at "
                         f"{size} px (a ViT's position embeddings are resampled to 224); set "
                         "`preprocessing: native` on the model for its own input size")
    return notes

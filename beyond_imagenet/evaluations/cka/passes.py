"""Online CKA over a dataset (docs/evaluations.md §9): forward hooks, one pass, minibatch unbiased HSIC.

Every model of a study sees the same images (each through its own preprocessing) in the same
batches. A forward hook on each selected layer turns the layer's output into its (B, B) Gram
matrix on the spot, so no activation outlives its layer's forward call; per batch only
``n_layers`` Gram matrices per model exist, and across batches only the running HSIC sums of
:class:`~beyond_imagenet.metrics.cka.MinibatchCKA`. Memory is therefore independent of the
number of images (tests/test_cka_pass.py checks this on a real process).

In the workflow each model runs alone (:func:`gram_pass`) and its Grams are written per batch to
its pass file (:func:`write_grams`); the pairs are formed later, without any model, from those
files (:func:`pairs_from_grams`), with exactly the arithmetic of a joint pass (:func:`cka_pass`,
which runs several models in one process, as the tests do).

Which layers (:func:`select_layers`): a *selector* (``blocks``, ``stages``) resolved for any
architecture, first by the regular expressions of :data:`LAYER_SELECTORS` over module names of the
image tower (:data:`IMAGE_TOWERS`, per model source), else by timm's own stage metadata
(``feature_info``, :func:`generic_layers`); or a list of such expressions from the config. Study
validation resolves them on the tower built on the meta device (:func:`layer_names_on_meta`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import h5py
import numpy as np
import torch
from torch import nn

# model_pairs is pure Python and the Snakefile plans with it: it lives in the torch-free package.
from beyond_imagenet.evaluations.cka import model_pairs  # noqa: F401
from beyond_imagenet.io import atomic_path, h5_attr, read_h5_attrs, write_h5_attrs
from beyond_imagenet.metrics.cka import MinibatchCKA, gram_linear

log = logging.getLogger(__name__)

#: The image tower inside a LoadedModel.network, per model source (models.py adapters).
IMAGE_TOWERS: dict[str, Callable[[nn.Module], nn.Module]] = {
    "timm": lambda network: network.model,
    "open_clip": lambda network: network.model.visual,
    "python": lambda network: network.network,  # the loader's own network (torchvision ResNets: layerN.M)
}

_VIT_BLOCKS = (r"^blocks\.\d+$", r"^transformer\.resblocks\.\d+$", r"^trunk\.blocks\.\d+$")

#: selector -> family -> module-name patterns, tried in order; the first that matches any module
#: of the tower wins (timm models, open_clip native towers, open_clip timm towers under trunk.).
LAYER_SELECTORS: dict[str, dict[str, tuple[str, ...]]] = {
    # every transformer block / ConvNeXt block (ResNet bottleneck) output
    "blocks": {
        "vit": _VIT_BLOCKS,
        "convnet": (r"^stages\.\d+\.blocks\.\d+$", r"^trunk\.stages\.\d+\.blocks\.\d+$",
                    r"^layer\d\.\d+$", r"^trunk\.layer\d\.\d+$",
                    r"^blocks\.\d+\.\d+$"),  # timm EfficientNet / MobileNet blocks
    },
    # every stage output (a plain ViT has no stages: each block is one)
    "stages": {
        "vit": _VIT_BLOCKS,
        "convnet": (r"^stages\.\d+$", r"^trunk\.stages\.\d+$", r"^layer\d$", r"^trunk\.layer\d$",
                    r"^blocks\.\d+$"),
    },
}


class LayerSelectionError(ValueError):
    """No layer of a model matches the configured selector; the message lists what exists."""


def select_layers(tower: nn.Module, family: str, layers: str | Sequence[str]) -> list[tuple[str, nn.Module]]:
    """(name, module) of the layers to hook, in forward (definition) order.

    A selector (``blocks``, ``stages``) resolves in two steps (docs/evaluations.md §9):

    1. the regular expressions of :data:`LAYER_SELECTORS` (the model's family's first, then the
       other families'; first matching pattern wins), kept only if the layers they find reach the tower's last feature level
       (:func:`feature_modules`): ``layer1.0`` alone in an HRNet is not its blocks;
    2. otherwise timm's own stage metadata, :func:`generic_layers`.

    A list of regular expressions takes every module whose name matches one of them.
    """
    named = [(name, module) for name, module in tower.named_modules() if name]
    if isinstance(layers, str):
        if layers not in LAYER_SELECTORS:
            raise LayerSelectionError(f"unknown layer selector {layers!r}; known: {sorted(LAYER_SELECTORS)}")
        by_family = LAYER_SELECTORS[layers]
        # the family's own patterns first, then the others' (a family label is the user's; a ViT
        # labelled convnet still finds its blocks), then timm's metadata
        candidates = ([by_family[family]] if family in by_family else []) + \
            [patterns for name, patterns in by_family.items() if name != family]
        order = {name: i for i, (name, _) in enumerate(named)}
        features = feature_modules(tower)
        for pattern in itertools.chain.from_iterable(candidates):
            found = _called([(n, m) for n, m in named if re.search(pattern, n)])
            if found and (not features or order[found[-1][0]] >= order[features[-1]]):
                return found
        found = generic_layers(tower, layers)
        if found:
            return found
        what = f"selector {layers!r} (family {family!r}; no timm feature_info either)"
    else:
        found = _called([(n, m) for n, m in named if any(re.search(p, n) for p in layers)])
        if found:
            return found
        what = f"patterns {list(layers)}"
    sample = ", ".join([n for n, _ in named if n.count(".") <= 2][:40])  # the outer modules
    raise LayerSelectionError(f"{what} match no module of {type(tower).__name__}; modules include: {sample}")


def feature_modules(tower: nn.Module) -> list[str]:
    """timm's feature levels of ``tower`` as names of its modules, in timm's (forward) order: the
    ``module`` of each entry of the ``feature_info`` of the tower or, failing that, of its first
    submodule that has one (open_clip's timm towers: ``trunk``). [] where there is none."""
    names = dict(tower.named_modules())
    for prefix, module in tower.named_modules():
        info = getattr(module, "feature_info", None)
        if info is None:
            continue
        if isinstance(info, (list, tuple)):
            modules = [entry.get("module") for entry in info if isinstance(entry, Mapping)]
        elif hasattr(info, "module_name"):  # timm's FeatureInfo
            modules = list(info.module_name())
        else:
            continue
        full = [f"{prefix}.{m}" if prefix else m for m in modules if isinstance(m, str) and m]
        found = list(dict.fromkeys(m for m in full if m in names))
        if found:
            return found
    return []


def _called(layers: Sequence[tuple[str, nn.Module]]) -> list[tuple[str, nn.Module]]:
    """``layers`` with each one that is never called itself (an ``nn.ModuleList`` / ``ModuleDict``
    iterated by its owner, as CoaT's ``serial_blocks1``: a hook on it would never fire) replaced by
    its last child, whose output it stands for; duplicates dropped, order kept."""
    out = []
    for name, module in layers:
        while type(module).forward is nn.Module.forward and _has_children(module):
            child, module = list(module.named_children())[-1]
            name = f"{name}.{child}"
        out.append((name, module))
    return list({n: (n, m) for n, m in out}.values())


def _has_children(module: nn.Module) -> bool:
    return next(module.children(), None) is not None


def _numbered(names: Sequence[str]) -> bool:
    """``b1, b2, b3``: one prefix and consecutive numbers (not Inception's ``branch1x1, branch3x3_1``)."""
    parts = [re.fullmatch(r"(.*?)(\d+)", n) for n in names]
    if not all(parts) or len({p.group(1) for p in parts}) != 1:
        return False
    numbers = [int(p.group(2)) for p in parts]
    return numbers == list(range(numbers[0], numbers[0] + len(numbers)))


def _block_children(module: nn.Module) -> list[tuple[str, nn.Module]] | None:
    """The blocks (children with modules of their own) of a *block container*, None for any other
    module: an ``nn.Sequential`` / ``ModuleList`` / ``ModuleDict`` at least half of whose children
    are blocks (a stage's blocks beside a plain downsampling conv or final norm; not a DenseNet
    transition's norm, conv and pool), or a module with two or more children, all blocks of one
    class and numbered in order (timm's RegNet stages: ``b1``, ``b2``, ...)."""
    children = list(module.named_children())
    blocks = [(n, m) for n, m in children if _has_children(m)]
    if isinstance(module, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
        return blocks if blocks and 2 * len(blocks) >= len(children) else None
    if (len(children) >= 2 and len(blocks) == len(children) and len({type(m) for _, m in children}) == 1
            and _numbered([n for n, _ in children])):
        return blocks
    return None


def generic_layers(tower: nn.Module, selector: str) -> list[tuple[str, nn.Module]]:
    """The layers of ``selector`` from timm's stage metadata (:func:`feature_modules`), for any timm
    architecture and open_clip's timm towers; [] where the tower has none.

    * ``stages``: the feature levels themselves.
    * ``blocks``: the feature levels, with the siblings timm's list skips between two of them put
      back (its list has one module per reduction: EfficientNet's ``blocks.3``), each level
      replaced by its blocks: the children of the level if it is a block container
      (:func:`_block_children`), else those of its first child that is one (a ConvNeXt or Swin
      stage's ``blocks``), else the level itself (a ViT block, a stem, a stage of one block).
    """
    names = dict(tower.named_modules())
    levels = feature_modules(tower)
    if selector == "stages" or not levels:
        return _called([(n, names[n]) for n in levels])
    filled: list[str] = []
    for previous, level in zip([None, *levels], levels):
        if previous is not None and previous.rpartition(".")[0] == level.rpartition(".")[0]:
            parent = level.rpartition(".")[0]
            siblings = [f"{parent}.{n}" if parent else n for n, _ in names[parent].named_children()]
            start, stop = siblings.index(previous), siblings.index(level)
            filled += [s for s in siblings[start + 1:stop]  # blocks, not a ModuleList a stage draws from
                       if _has_children(names[s]) and type(names[s]).forward is not nn.Module.forward]
        filled.append(level)
    out: list[tuple[str, nn.Module]] = []
    for level in filled:
        module = names[level]
        blocks = _block_children(module)
        if blocks is None:
            for child_name, child in module.named_children():
                inner = _block_children(child)
                if inner:
                    blocks = [(f"{child_name}.{n}", m) for n, m in inner]
                    break
        out += [(f"{level}.{n}", m) for n, m in blocks] if blocks else [(level, module)]
    return _called(out)


def meta_tower(source: str, arch: str) -> nn.Module:
    """The image tower :data:`IMAGE_TOWERS` gives for ``arch``, built with random weights on the
    ``meta`` device (no memory, no download): its module names are those of the job's tower.
    timm: the model; open_clip: the ``visual`` tower of the architecture's config (open_clip's own
    builder: a timm trunk, a ViT or a ModifiedResNet). Raises where it cannot be built offline."""
    with torch.device("meta"):
        if source == "timm":
            import timm

            return timm.create_model(arch, pretrained=False)
        if source == "open_clip":
            import open_clip
            from open_clip.model import _build_vision_tower

            from beyond_imagenet.models import _register_bundled_open_clip_configs

            _register_bundled_open_clip_configs()
            cfg = open_clip.get_model_config(arch)
            if not cfg:
                raise ValueError(f"open_clip has no local config for {arch!r}")
            return _build_vision_tower(cfg["embed_dim"], cfg["vision_cfg"])
    raise ValueError(f"unknown source {source!r}")


def layer_names_on_meta(source: str, arch: str, family: str, layers: str | Sequence[str]) -> dict[str, Any]:
    """``{"layers": [...], "error": None}``: the layers :func:`select_layers` hooks in ``arch``'s
    tower (built on the meta device, :func:`meta_tower`), or ``{"layers": None, "error": why}``
    where it finds none (what study validation refuses, ``evaluations.cka.check``). Raises where
    the tower cannot be built offline."""
    tower = meta_tower(source, arch)
    try:
        found = select_layers(tower, family, layers)
    except LayerSelectionError as err:
        return {"layers": None, "error": str(err)}
    error = meta_forward_problem(tower, found)
    return {"layers": None if error else [name for name, _ in found], "error": error}


def meta_forward_problem(tower: nn.Module, layers: Sequence[tuple[str, nn.Module]], batch: int = 5) -> str | None:
    """Why the Gram hooks would fail on ``layers`` of a meta-device ``tower``, from a shape-only
    forward pass at its input size: a layer that does not run, or whose output has no batch
    dimension; None if none (or if the tower cannot be traced on the meta device: the pass job
    reports what happens then)."""
    ran: dict[str, tuple] = {}

    def hook(name):
        def record(_module, _inputs, output):
            out = layer_output(output, batch)
            ran.setdefault(name, tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__)
        return record

    # open_clip towers: image_size (int or pair); timm models: their data config's input size
    size = getattr(tower, "image_size", None) or (getattr(tower, "pretrained_cfg", None) or {}).get(
        "input_size", (3, 224, 224))
    size = (size, size) if isinstance(size, int) else tuple(size)[-2:]
    handles = [module.register_forward_hook(hook(name)) for name, module in layers]
    try:
        with torch.no_grad(), torch.device("meta"):
            tower.eval()(torch.empty(batch, 3, *size))
    except Exception as err:  # an operation without a meta kernel, an unusual input: cannot tell
        log.debug("cannot trace %s on the meta device (%s); its layers are not run here", type(tower).__name__, err)
        return None
    finally:
        for handle in handles:
            handle.remove()
    silent = [name for name, _ in layers if name not in ran]
    if silent:
        return f"the selected layer(s) {silent[:5]} of {type(tower).__name__} do not run in its forward pass"
    for name, shape in ran.items():
        if not isinstance(shape, tuple) or not (shape[:1] == (batch,) or shape[1:2] == (batch,)):
            return f"the output of layer {name} of {type(tower).__name__} ({shape}) has no batch dimension"
    return None


def layer_output(output: Any, batch: int) -> Any:
    """The activation of a layer's output: the output itself, or of a tuple / list the first
    tensor with a batch dimension (dim 0, or 1 if sequence-first), else its first element (TNT's
    blocks return the inner pixel tokens, (B·N, 16, D), before the outer tokens, (B, N + 1, D))."""
    if not isinstance(output, (tuple, list)):
        return output
    for out in output:
        if isinstance(out, torch.Tensor) and out.ndim and (out.shape[0] == batch
                                                          or (out.ndim >= 2 and out.shape[1] == batch)):
            return out
    return output[0]


def _batch_first(out: torch.Tensor, batch: int) -> torch.Tensor:
    """Activations with the batch on dim 0 (sequence-first transformers put it on dim 1)."""
    if out.shape[0] == batch:
        return out
    if out.ndim >= 2 and out.shape[1] == batch:
        return out.transpose(0, 1)
    raise ValueError(f"cannot find the batch dimension ({batch}) in an activation of shape {tuple(out.shape)}")


class GramRecorder:
    """Forward hooks that replace each hooked layer's output by its Gram matrix, per batch."""

    def __init__(self, layers: Sequence[tuple[str, nn.Module]]):
        self.names = [name for name, _ in layers]
        self._modules = [module for _, module in layers]
        self._handles: list[Any] = []
        self.batch = 0
        self.grams: list[torch.Tensor | None] = [None] * len(layers)

    def _hook(self, index: int):
        def hook(_module, _inputs, output):
            out = layer_output(output, self.batch)
            # float64 Gram now; the activation itself is dropped when the layer's caller is done.
            self.grams[index] = gram_linear(_batch_first(out.detach(), self.batch))

        return hook

    def __enter__(self) -> "GramRecorder":
        self._handles = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(self._modules)]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def take(self) -> list[torch.Tensor]:
        """The Gram matrices of the last forward pass (and forget them)."""
        missing = [n for n, g in zip(self.names, self.grams) if g is None]
        if missing:
            raise RuntimeError(f"layers {missing} did not run in the forward pass")
        grams, self.grams = self.grams, [None] * len(self.names)
        return grams  # type: ignore[return-value]


@dataclasses.dataclass
class HookedModel:
    """A network (called on a batch; outputs ignored) and the layers whose Grams are recorded."""

    network: nn.Module
    layers: list[tuple[str, nn.Module]]

    @property
    def layer_names(self) -> list[str]:
        return [name for name, _ in self.layers]


@torch.no_grad()
def cka_pass(models: Mapping[str, HookedModel], batches: Iterable[Any], pairs: Sequence[tuple[str, str]],
             device: torch.device = torch.device("cpu")) -> dict[tuple[str, str], MinibatchCKA]:
    """One pass over ``batches``, updating one :class:`MinibatchCKA` per pair.

    A batch is either one tensor (every model gets it) or a mapping model name -> tensor (the same
    images through each model's own preprocessing). Only the models named in ``pairs`` run.
    """
    used = list(dict.fromkeys(itertools.chain.from_iterable(pairs)))
    accumulators = {pair: MinibatchCKA() for pair in pairs}
    with contextlib.ExitStack() as stack:
        recorders = {m: stack.enter_context(GramRecorder(models[m].layers)) for m in used}
        for m in used:
            models[m].network.eval().to(device)
        for batch in batches:
            grams = {}
            for m in used:
                images = batch[m] if isinstance(batch, Mapping) else batch
                recorders[m].batch = images.shape[0]
                models[m].network(images.to(device, non_blocking=True))
                grams[m] = recorders[m].take()
            for (a, b), acc in accumulators.items():
                acc.update(grams[a], None if a == b else grams[b], grams=True)
            del grams
    return accumulators


# ------------------------------------------------- one model's pass, and the pairs from its file
@torch.no_grad()
def gram_pass(model: HookedModel, batches: Iterable[torch.Tensor],
              device: torch.device | None = None) -> Iterator[list[torch.Tensor]]:
    """One model over ``batches`` (on ``device``, default the CPU): per batch, the float64 (B, B)
    Gram matrix of each selected layer (what every pair with this model needs from it;
    :func:`pairs_from_grams` forms the pairs)."""
    device = device or torch.device("cpu")
    with GramRecorder(model.layers) as recorder:
        model.network.eval().to(device)
        for images in batches:
            recorder.batch = images.shape[0]
            model.network(images.to(device, non_blocking=True))
            yield recorder.take()


#: What a pass file holds (``format`` attribute); a reader refuses any other.
GRAMS_FORMAT = "cka-grams-1"


def write_grams(path: str | os.PathLike, layer_names: Sequence[str], grams: Iterable[Sequence[torch.Tensor]],
                finish: Callable[[], tuple[Mapping[str, Any], Sequence[str], Sequence[str]]]) -> int:
    """One model's pass file, written while ``grams`` (per batch, one Gram per layer) is consumed:
    ``grams/<batch:05d>`` (n_layers, B, B) float64, so only one batch is ever held. ``finish()``,
    called once the batches are done, gives ``(attrs, ids, skipped_ids)``; if it raises (bad images
    under ``on_bad_image: error``) nothing is written. Atomic: a file at ``path`` is whole.
    Returns the number of batches."""
    string = h5py.string_dtype("utf-8")
    n = 0
    with atomic_path(path) as tmp, h5py.File(tmp, "w", track_order=True) as f:
        group = f.create_group("grams", track_order=True)
        for layers in grams:
            if len(layers) != len(layer_names):
                raise ValueError(f"{len(layers)} Gram matrices for {len(layer_names)} layers")
            # float64 as formed: the pairs job replays exactly the arithmetic of a joint pass.
            stacked = torch.stack([g.detach().to("cpu", torch.float64) for g in layers]).numpy()
            group.create_dataset(f"{n:05d}", data=stacked, track_times=False)
            n += 1
        attrs, ids, skipped_ids = finish()
        write_h5_attrs(f.attrs, {**attrs, "format": GRAMS_FORMAT, "layer_names": list(layer_names),
                                 "n_batches": n})
        for name, values in (("ids", ids), ("skipped_ids", skipped_ids)):
            f.create_dataset(name, data=np.asarray(list(values), dtype=object), dtype=string,
                             shape=(len(values),), track_times=False)
    return n


def _strings(dataset: h5py.Dataset) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in dataset[()]]


@dataclasses.dataclass
class CkaPairs:
    """What :func:`pairs_from_grams` forms: the pairs, and what the pass files recorded."""

    results: dict[tuple[str, str], MinibatchCKA]
    layer_names: dict[str, list[str]]  # by model
    attrs: dict[str, dict[str, Any]]  # each model's pass-file attributes
    ids: list[str]  # the images, in batch order (the same in every file)
    skipped_ids: list[str]


def pairs_from_grams(files: Mapping[str, str | os.PathLike], pairs: Sequence[tuple[str, str]],
                     expected: Mapping[str, Mapping[str, Any]]) -> CkaPairs:
    """Every pair's :class:`MinibatchCKA` from the models' pass files (no model is built).

    ``files``: model -> pass file; ``expected``: model -> the attributes its file must record (its
    identity, the pass settings, the manifest fingerprint): a file made for anything else is
    refused (:class:`~beyond_imagenet.extract.StaleOutputError`, naming it), as are files whose
    images or batches differ from the first model's (the pairs need the same images in the same
    batches). Batch by batch, as a joint pass would: memory is one batch's Gram matrices of the
    models (models x layers x B^2 float64) plus the pairs' per-batch HSIC terms (pairs x batches x
    layers_a x layers_b), whatever the models' sizes."""
    from beyond_imagenet.extract import StaleOutputError, check_attrs

    used = list(dict.fromkeys(itertools.chain.from_iterable(pairs)))
    missing = [m for m in used if m not in files]
    if missing:
        raise ValueError(f"no pass file for model(s) {missing} named in the pairs")
    attrs = {m: check_attrs(files[m], {**expected[m], "format": GRAMS_FORMAT}) for m in used}
    with contextlib.ExitStack() as stack:
        handles = {m: stack.enter_context(h5py.File(files[m], "r")) for m in used}
        def images(m: str) -> tuple:  # the image ids, the left-out ones, each batch's size
            f = handles[m]
            return _strings(f["ids"]), _strings(f["skipped_ids"]), [f["grams"][k].shape[1] for k in f["grams"]]

        first = used[0]
        reference = images(first)
        for m in used[1:]:
            if images(m) != reference:
                raise StaleOutputError(
                    f"{files[m]} and {files[first]} do not hold the same images in the same batches "
                    "(different image lists, unreadable images or batch sizes); CKA pairs need both. "
                    f"Delete both (rm {files[m]} {files[first]}) and rerun the workflow.")
        layer_names = {m: json.loads(attrs[m]["layer_names"]) for m in used}
        batches = list(handles[first]["grams"])
        accumulators = {pair: MinibatchCKA(expected_batches=len(batches)) for pair in pairs}
        for key in batches:
            grams = {m: list(torch.from_numpy(handles[m]["grams"][key][()])) for m in used}
            for (a, b), acc in accumulators.items():
                acc.update(grams[a], None if a == b else grams[b], grams=True)
            del grams
    return CkaPairs(accumulators, layer_names, attrs, *reference[:2])


# ------------------------------------------------------------------------------- data and file
class SameImages(torch.utils.data.Dataset):
    """Each image decoded once and passed through every model's own transform.

    Items are ``(images by model, index, error)``; an unreadable image gives ``(None, index,
    reason)`` so that the pass can name every bad file (or skip them), as the extraction does."""

    def __init__(self, root: str | os.PathLike, ids: Sequence[str], transforms: Mapping[str, Callable]):
        self.root = Path(root)
        self.ids = list(ids)
        self.transforms = dict(transforms)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int):
        from beyond_imagenet.extract import load_rgb

        try:
            image = load_rgb(self.root / self.ids[index])
            return {name: transform(image) for name, transform in self.transforms.items()}, index, ""
        except Exception as err:  # any decode/transform failure is reported per file
            return None, index, f"{type(err).__name__}: {err}"


def collate_same_images(items):
    """``(images by model stacked over the readable items, [(index, reason) of the others])``."""
    good = [images for images, _, _ in items if images is not None]
    bad = [(index, reason) for images, index, reason in items if images is None]
    stacked = {name: torch.stack([g[name] for g in good]) for name in good[0]} if good else {}
    return stacked, bad


def readable_batches(loader: Iterable[Any], bad: list[tuple[int, str]], min_batch: int = 4) -> Iterator[Any]:
    """The batches of a :class:`SameImages` loader without their unreadable images (collected into
    ``bad``); a batch left with fewer than ``min_batch`` images (the unbiased HSIC's minimum) is
    dropped whole, for every model alike."""
    for images, failed in loader:
        bad.extend(failed)
        n = next(iter(images.values())).shape[0] if images else 0
        if n >= min_batch:
            yield images
        elif failed:
            log.warning("a CKA batch kept %d readable image(s), fewer than %d: left out", n, min_batch)


def cka_sample(samples: Sequence, n_images: int, batch_size: int, seed: int = 0) -> tuple[list, int]:
    """``(images, dropped)``: a seeded random draw of ``min(n_images, len(samples))`` images in
    random order, cut to whole batches of ``batch_size`` (``dropped`` = how many that cut).

    Random order matters: the average of per-batch unbiased HSICs estimates the population HSIC
    only when each batch is a random sample. Manifests are sorted by class, so consecutive images
    share classes and sequential batches would inflate CKA (tests/test_cka_pass.py shows it).
    Every model sees this same list, so cross-model CKA compares the same images in the same
    batches."""
    wanted = min(int(n_images), len(samples))
    n_batches, dropped = batch_plan(wanted, batch_size)
    order = np.random.default_rng(seed).permutation(len(samples))[: n_batches * batch_size]
    return [samples[i] for i in order], dropped


def batch_plan(n_images: int, batch_size: int) -> tuple[int, int]:
    """(number of full batches, images dropped): the last incomplete batch is not used."""
    if batch_size < 4:
        raise ValueError(f"batch_size must be >= 4 for the unbiased HSIC, got {batch_size}")
    n_batches, dropped = divmod(n_images, batch_size)
    if n_batches == 0:
        raise ValueError(f"{n_images} images make no full batch of {batch_size}")
    return n_batches, dropped


def write_cka(path: str | os.PathLike, results: Mapping[tuple[str, str], MinibatchCKA],
              layer_names: Mapping[str, Sequence[str]], attrs: Mapping[str, Any], ids: Sequence[str] = (),
              skipped_ids: Sequence[str] = ()) -> None:
    """One HDF5 file: group ``<a>__<b>`` per pair with dataset ``cka`` (n_layers_a, n_layers_b) and
    the per-batch HSIC terms ``batch_hsic_ab`` / ``_aa`` / ``_bb`` (first axis: the minibatches,
    for the bootstrap); datasets ``ids`` (the images, in batch order) and ``skipped_ids``."""
    string = h5py.string_dtype("utf-8")
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", track_order=True) as f:
            write_h5_attrs(f.attrs, attrs)
            for name, values in (("ids", ids), ("skipped_ids", skipped_ids)):
                f.create_dataset(name, data=np.asarray(list(values), dtype=object), dtype=string,
                                 shape=(len(values),), track_times=False)
            for (a, b), acc in results.items():
                group = f.create_group(f"{a}__{b}", track_order=True)
                group.create_dataset("cka", data=acc.compute(), track_times=False)
                for term, values in acc.batch_terms().items():
                    group.create_dataset(f"batch_hsic_{term}", data=values, track_times=False)
                group.attrs.update(model_a=a, model_b=b, kind="within" if a == b else "cross",
                                   layers_a=h5_attr(list(layer_names[a])), layers_b=h5_attr(list(layer_names[b])),
                                   n_batches=acc.n_batches, n_samples=acc.n_samples)


@dataclasses.dataclass
class CkaMatrix:
    model_a: str
    model_b: str
    kind: str
    layers_a: list[str]
    layers_b: list[str]
    cka: np.ndarray
    # Per-batch HSIC terms {"ab", "aa", "bb"} (None: a file written before they were kept).
    batches: dict[str, np.ndarray] | None = None


def read_cka(path: str | os.PathLike) -> tuple[list[CkaMatrix], dict[str, Any]]:
    """The matrices of a CKA file (in file order) and its attributes."""
    out = []
    with h5py.File(path, "r") as f:
        attrs = read_h5_attrs(f.attrs)
        for name in f:
            g = f[name]
            if not isinstance(g, h5py.Group):  # ids, skipped_ids
                continue
            batches = ({t: g[f"batch_hsic_{t}"][()] for t in ("ab", "aa", "bb")}
                       if "batch_hsic_ab" in g else None)
            out.append(CkaMatrix(str(g.attrs["model_a"]), str(g.attrs["model_b"]), str(g.attrs["kind"]),
                                 json.loads(g.attrs["layers_a"]), json.loads(g.attrs["layers_b"]), g["cka"][()],
                                 batches))
    return out, attrs


def cka_summary_rows(matrices: Sequence[CkaMatrix], model_columns: Mapping[str, Mapping[str, Any]],
                     dataset: str) -> list[dict[str, Any]]:
    """Tidy numbers from the CKA matrices, one row per (model, partner, metric):

    * within-model (partner = the model): ``mean_layer_similarity``, the mean off-diagonal CKA
      (how alike its layers are), and ``first_last``, CKA between the first and last hooked layer;
    * cross-model: ``last_layer``, CKA between the two models' last hooked layers, written for
      both models of the pair.
    """
    rows = []
    for m in matrices:
        rows += matrix_rows(m, m.cka, model_columns, dataset)
    return rows


def matrix_rows(m: CkaMatrix, cka: np.ndarray, model_columns: Mapping[str, Mapping[str, Any]], dataset: str,
                model: str | None = None) -> list[dict[str, Any]]:
    """The summary rows of one matrix (``cka``: its values, or a bootstrap replicate's); ``model``:
    only the rows of that model (a cross matrix gives rows for both)."""

    def row(owner: str, partner: str, kind: str, metric: str, value: float) -> dict[str, Any]:
        return {**model_columns[owner], "dataset": dataset, "partner": partner,
                "partner_label": model_columns[partner].get("label", partner), "kind": kind,
                "metric": metric, "value": float(value)}

    cka = np.asarray(cka, dtype=float)
    if m.kind == "within":
        off = cka[~np.eye(cka.shape[0], dtype=bool)]
        rows = [row(m.model_a, m.model_a, "within", "mean_layer_similarity", off.mean() if off.size else np.nan),
                row(m.model_a, m.model_a, "within", "first_last", cka[0, -1])]
    else:
        rows = [row(m.model_a, m.model_b, "cross", "last_layer", cka[-1, -1]),
                row(m.model_b, m.model_a, "cross", "last_layer", cka[-1, -1])]
    return [r for r in rows if model is None or r["model"] == model]


def iterate_batches(loader: Iterable[Any], progress_every: int = 10) -> Iterator[Any]:
    for i, batch in enumerate(loader, 1):
        if i % progress_every == 0:
            log.info("CKA batch %d", i)
        yield batch


# ------------------------------------------------- the pass inside a model's extraction job
def pass_is_current(path: str | os.PathLike, expect: Mapping[str, Any], manifest: Mapping[str, Any]) -> bool:
    """Whether the pass file at ``path`` is whole and records ``expect`` (model, identity, settings,
    dataset) and the manifest's fingerprint: what the pairs job will ask of it. Anything else (no
    file, another format, a file made for other weights, settings or images) is computed again."""
    from beyond_imagenet.extract import CorruptOutputError, StaleOutputError, check_attrs

    if not Path(path).is_file():
        return False
    try:
        check_attrs(path, {**expect, "manifest_fingerprint": manifest["fingerprint"], "format": GRAMS_FORMAT})
    except (StaleOutputError, CorruptOutputError, OSError, KeyError, ValueError) as err:
        log.info("%s is not this pass's file (%s): computing it again", path, str(err).splitlines()[0])
        return False
    return True


def run_pass(loaded: Any, spec: Any, manifest: Mapping[str, Any], out: str | os.PathLike,
             expect: Mapping[str, Any], device: torch.device, num_workers: int = 0,
             on_bad_image: str = "error") -> int:
    """One model's CKA pass over one dataset (docs/evaluations.md §9), with the network its
    extraction job built (``loaded``: a ``LoadedModel`` of the study's standard transform; hooks are
    removed afterwards, a ``torch.compile`` wrapper is looked through): the seeded CKA batches (the
    same for every model) through the model's own preprocessing, each selected layer's Gram matrix
    formed in a forward hook and written per batch to ``out`` (:func:`write_grams`). Under
    ``on_bad_image: error`` unreadable images are named and nothing is written. Returns the batches."""
    from beyond_imagenet.extract import BadImagesError
    from beyond_imagenet.workflow import versions

    settings, dataset, name = expect["settings"], expect["dataset"], expect["model"]
    # The same seeded draw and batches in every model's job (a function of the manifest and the
    # settings only), so the pairs job can pair any two models' batches.
    samples, dropped = cka_sample(manifest["samples"], settings["n_images"], settings["batch_size"], settings["seed"])
    if dropped:
        log.warning("CKA on %s: %d of the %d drawn images do not fill a batch of %d and are dropped",
                    dataset, dropped, len(samples) + dropped, settings["batch_size"])
    network = getattr(loaded.network, "_orig_mod", loaded.network)  # hooks go on the modules themselves
    layers = select_layers(IMAGE_TOWERS[spec.source](network), spec.family, settings["layers"])
    log.info("CKA pass of %s on %s: %d layers (%s ... %s)", name, dataset, len(layers), layers[0][0], layers[-1][0])
    model = HookedModel(network, layers)
    ids = [sid for sid, _ in samples]
    loader = torch.utils.data.DataLoader(
        SameImages(manifest["root"], ids, {name: loaded.transform}), batch_size=settings["batch_size"],
        shuffle=False, drop_last=True, num_workers=num_workers, collate_fn=collate_same_images)
    bad: list[tuple[int, str]] = []

    def finish():
        """After the last batch: every bad file named and nothing written, or the file's record."""
        if bad and on_bad_image == "error":
            raise BadImagesError(manifest["root"], [(ids[i], reason) for i, reason in sorted(bad)])
        if bad:
            log.warning("CKA on %s: %d unreadable image(s) skipped", dataset, len(bad))
        attrs = {**expect, "preprocessing": loaded.preprocessing, "manifest_fingerprint": manifest["fingerprint"],
                 "n_images": len(samples), "n_dropped": dropped, "batch_size": settings["batch_size"],
                 "sample_seed": settings["seed"], "n_skipped": len(bad), "versions": versions()}
        return attrs, ids, [ids[i] for i, _ in sorted(bad)]

    batches = (images[name] for images in readable_batches(loader, bad))
    n = write_grams(out, model.layer_names, gram_pass(model, iterate_batches(batches), device), finish)
    log.info("wrote %s (%d batches of %d layers)", out, n, len(layers))
    return n

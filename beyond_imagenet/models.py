"""Model registry: one config entry -> a network that returns ImageNet-1k logits and features.

Two sources, each a small adapter registered in ``SOURCES`` (no if/else over model names):
- ``timm``: logits from the model's own head; features = ``forward_head(pre_logits=True)``.
- ``open_clip``: features = the image embedding before normalisation; logits =
  ``logit_scale * normalize(features) @ W`` with W the zero-shot head built by open_clip's own
  ``build_zero_shot_classifier`` (IMAGENET_CLASSNAMES x OPENAI_IMAGENET_TEMPLATES).

A ``features_only: true`` entry (IN-21k-only or self-supervised weights without an ImageNet-1k
classifier) is built without one (timm ``num_classes=0``; open_clip without a zero-shot head): its
logits are an empty ``(N, 0)`` array, so its outputs keep the same layout; only the feature
evaluations (``reads: features`` / ``images``) ever see it (``Study.evaluation_models``).

Weights: the libraries' hub loading (``pretrained``), a local checkpoint (``torch.load`` with
``weights_only=True``), or random weights under a seed. Preprocessing protocols ``paper`` and
``native`` follow docs/evaluations.md §0 and are recorded with every output.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

# The torch-free part (what a study config names), re-exported: the Snakefile imports only that.
from beyond_imagenet.model_specs import (  # noqa: F401
    NEEDS_HEAD,
    OPEN_CLIP_SCHEMES,
    ModelError,
    ModelSpec,
    checkpoint_sha256,
    unknown_architecture_message,
    unknown_pretrained_message,
)

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass
class LoadedModel:
    """A network in eval mode whose ``forward`` returns ``(logits, features)``, plus its transform."""

    spec: ModelSpec
    network: nn.Module
    transform: Callable
    preprocessing: dict[str, Any]


def _load_checkpoint(network: nn.Module, spec: ModelSpec, drop_head: tuple[str, ...] = ()) -> None:
    """The checkpoint through its format (``checkpoint_format``, beyond_imagenet/checkpoints.py);
    ``drop_head``: the classifier's module names, whose tensors ``head: drop`` leaves out."""
    from beyond_imagenet.checkpoints import CheckpointError, load_checkpoint_into

    try:
        used = load_checkpoint_into(network, spec.checkpoint_path, spec.arch, spec.checkpoint_format,
                                    where=f"models.{spec.name}.checkpoint", expected_sha256=spec.checkpoint_sha256,
                                    drop_head=drop_head)
    except CheckpointError as err:
        raise ModelError(f"models.{spec.name}: {err}" if not str(err).startswith("models.") else str(err)) from err
    log.info("loaded %s for %s as checkpoint_format %s", spec.checkpoint, spec.name, used)


def _is_fetch_error(err: BaseException) -> bool:
    """A download failure: huggingface_hub's (LocalEntryNotFoundError when offline, HTTP errors),
    urllib's and socket errors are OSErrors; newer huggingface_hub HTTP errors may not be. open_clip
    re-raises them as a RuntimeError ("Failed to download weights ..."): the chain is followed."""
    try:
        from huggingface_hub.errors import HfHubHTTPError
    except ImportError:  # pragma: no cover
        HfHubHTTPError = OSError
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, (OSError, HfHubHTTPError)):
            return True
        err = err.__cause__ or err.__context__
    return False


def weights_unavailable(spec: ModelSpec, weights: str, err: BaseException) -> ModelError:
    """The pretrained weights could not be fetched (no network, a hub outage, a proxy): name the
    model entry and the offline alternatives instead of a huggingface_hub traceback."""
    return ModelError(
        f"models.{spec.name}: the pretrained weights {weights} could not be fetched "
        f"({type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else 'no detail'}). "
        "Without network access: give the weights as a file with `checkpoint: /path/to/weights.pth` (a state "
        "dict saved where the hub can be reached), fill the Hugging Face cache there and copy it here "
        "(HF_HOME, then HF_HUB_OFFLINE=1), or set `pretrained: false` for random weights."
    )


def _transform_record(transform: Callable, **params: Any) -> dict[str, Any]:
    return {"transform": repr(transform), **params}


# ----------------------------------------------------------------------------------------- timm
def _fp32(device_type: str):
    """Autocast off: the classifier runs in float32 even inside a bf16 forward pass, since bf16
    logits (steps of 0.125 between 16 and 32) would shift softmax ratios and so the ECE."""
    return torch.autocast(device_type, enabled=False)


def _no_logits(features: torch.Tensor) -> torch.Tensor:
    """The logits of a features-only model: an empty (N, 0) array (same output layout)."""
    return features.new_zeros((features.shape[0], 0), dtype=torch.float32)


class _TimmNet(nn.Module):
    def __init__(self, model: nn.Module, features_only: bool = False):
        super().__init__()
        self.model = model
        self.features_only = features_only
        # timm's forward_head(pre_logits=True) is the classifier's input for its models; where a
        # model's head does more than that (checked once here), its own forward_head gives logits.
        self.classifier = (model.get_classifier() if not features_only and _classifier_takes_pre_logits(model)
                           else None)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.model.forward_features(x)
        features = self.model.forward_head(tokens, pre_logits=True)
        if self.features_only:
            return _no_logits(features), features
        if self.classifier is None:
            return self.model.forward_head(tokens), features
        with _fp32(x.device.type):
            logits = self.classifier(features.float())
        return logits, features


def _classifier_takes_pre_logits(model: nn.Module) -> bool:
    classifier = model.get_classifier()
    if not isinstance(classifier, nn.Linear):
        return False
    img_size = getattr(getattr(model, "patch_embed", None), "img_size", None)  # after a resolution change
    size = img_size[-1] if img_size else getattr(model, "pretrained_cfg", {}).get("input_size", (3, 224, 224))[-1]
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            tokens = model.forward_features(x)
            return torch.allclose(classifier(model.forward_head(tokens, pre_logits=True)),
                                  model.forward_head(tokens), rtol=1e-4, atol=1e-5)
    except Exception as err:  # an unusual model: keep its own forward_head
        log.warning("cannot check the classifier of %s (%s); its logits follow the forward pass's precision",
                    type(model).__name__, err)
        return False


def _timm_classifier_names(model: nn.Module) -> tuple[str, ...]:
    """The module name(s) of a timm model's classifier (its pretrained config's ``classifier``:
    ``head``, ``head.fc``, ``classifier``, two for distilled models), what ``head: drop`` leaves out."""
    names = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or "head"
    return tuple(names) if isinstance(names, (list, tuple)) else (names,)


def _native_size(model: nn.Module) -> int | None:
    """The square input size a timm ViT's position embedding is built for (None: no fixed size)."""
    if getattr(model, "pos_embed", None) is None:
        return None
    size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if not size or len(set(size)) != 1:
        return None
    return int(size[0])


class TimmSource:
    needs_head = False

    @staticmethod
    def architectures() -> list[str]:
        import timm

        return timm.list_models()

    @staticmethod
    def has_architecture(arch: str) -> bool:
        import timm

        return timm.is_model(arch)

    @staticmethod
    def build(spec: ModelSpec, protocol: str, image_size: int | None = None, input_transform: str = "protocol",
              **_: Any) -> LoadedModel:
        import timm
        from timm.data import create_transform, resolve_model_data_config

        arch = spec.arch
        if isinstance(spec.pretrained, str) and not spec.checkpoint:
            arch = f"{arch}.{spec.pretrained}"
        pretrained = bool(spec.pretrained) and not spec.checkpoint
        torch.manual_seed(spec.seed)
        # features_only: no classifier (timm drops a pretrained head of another size when loading);
        # num_classes: a classifier of the user's own classes, loaded from the checkpoint.
        kwargs = {"num_classes": 0} if spec.features_only else (
            {"num_classes": spec.num_classes} if spec.num_classes else {})
        try:
            model = timm.create_model(arch, pretrained=pretrained, **kwargs)
        except Exception as err:
            if pretrained and _is_fetch_error(err):
                raise weights_unavailable(spec, f"timm {arch}", err) from None
            raise ModelError(f"models.{spec.name}: timm cannot create {arch!r}: {err}") from err
        if spec.checkpoint:
            _load_checkpoint(model, spec, _timm_classifier_names(model) if spec.head == "drop" else ())
        if image_size is not None:
            # Another input resolution (docs/evaluations.md §8): ViT position embeddings resampled bicubically;
            # ConvNets run at any size unchanged. The caller supplies the matching transform.
            from beyond_imagenet.evaluations.invariance.transforms import resize_vit_pos_embed

            resize_vit_pos_embed(model, image_size)
        elif protocol == "paper" and _native_size(model) not in (None, 224):
            # The paper protocol feeds 224-px crops: a ViT built for another size (DINOv2: 518)
            # gets its position embedding resampled to 224 px, as for a resolution variant.
            from beyond_imagenet.evaluations.invariance.transforms import resize_vit_pos_embed

            resize_vit_pos_embed(model, 224)
        if not spec.features_only and model.num_classes != (spec.num_classes or 1000):
            raise ModelError(
                f"models.{spec.name}: {arch} has {model.num_classes} output classes; the logit evaluations need "
                "ImageNet-1k logits (choose an in1k fine-tuned tag, or set `features_only: true` to use it in "
                "the feature evaluations only: transfer, cka; a checkpoint with a head of your own classes: "
                "`num_classes:`)"
            )
        model.eval()
        if protocol == "paper":
            # Paper protocol for supervised models: Resize(256, bilinear) -> CenterCrop(224) -> ImageNet mean/std.
            params = dict(input_size=(3, 224, 224), crop_pct=224 / 256, interpolation="bilinear",
                          mean=IMAGENET_MEAN, std=IMAGENET_STD, crop_mode="center")
        else:
            params = resolve_model_data_config(model)
        if input_transform == "protocol":
            transform = create_transform(**params, is_training=False)
        else:
            transform = _dataset_transform(input_transform, params["mean"], params["std"])
            params = {**params, "input_transform": input_transform}
        return LoadedModel(spec, _TimmNet(model, spec.features_only), transform, _transform_record(transform, protocol=protocol, **params))


#: Per-dataset transforms for supervised models that replace the protocol's resize and crop
#: (``Study.input_transform``); CLIP models always keep their own transform.
INPUT_TRANSFORMS = ("protocol", "normalize_only", "center_crop_256_resize_224")


def _dataset_transform(name: str, mean, std) -> Callable:
    """``normalize_only``: sets already at the input size (ImageNet-C, cue-conflict: 224 px), which
    Resize(256) + CenterCrop(224) would crop (docs/workflow-notes.md §1.2). ``center_crop_256_resize_224``: the
    paper code's PUG-ImageNet transform (docs/evaluations.md §3), CenterCrop(256) -> Resize((224, 224)) bilinear."""
    from torchvision import transforms as T

    if name not in INPUT_TRANSFORMS[1:]:
        raise ModelError(f"unknown input transform {name!r}; known: {INPUT_TRANSFORMS}")
    geometry = [] if name == "normalize_only" else [
        T.CenterCrop(256), T.Resize((224, 224), interpolation=T.InterpolationMode.BILINEAR)]
    return T.Compose([*geometry, T.ToTensor(), T.Normalize(mean=mean, std=std)])


# ------------------------------------------------------------------------------------ open_clip
@functools.lru_cache(maxsize=1)
def _register_bundled_open_clip_configs() -> None:
    """Make the small CLIP configs of the default study known to open_clip by name."""
    import open_clip

    folder = resources.files("beyond_imagenet").joinpath("model_configs")
    open_clip.add_model_config(Path(str(folder)))


class _ClipNet(nn.Module):
    """``head`` None: a features-only model (no zero-shot head), logits an empty (N, 0) array."""

    def __init__(self, model: nn.Module, head: torch.Tensor | None, logit_scale: float):
        super().__init__()
        self.model = model
        self.register_buffer("head", None if head is None else head.float())
        self.logit_scale = float(logit_scale)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.model.encode_image(x)
        if self.head is None:
            return _no_logits(features), features
        with _fp32(x.device.type):
            logits = self.logit_scale * F.normalize(features.float(), dim=-1) @ self.head
        return logits, features


def _create_open_clip(spec: ModelSpec, image_size: int | None = None):
    import open_clip

    _register_bundled_open_clip_configs()
    schemed = spec.arch.startswith(OPEN_CLIP_SCHEMES)  # hf-hub: / local-dir: bring their own weights
    if spec.pretrained is True and not spec.checkpoint and not schemed:
        tags = open_clip.list_pretrained_tags_by_model(spec.arch)
        raise ModelError(
            f"models.{spec.name}.pretrained: open_clip needs a pretrained tag for {spec.arch}, "
            f"one of {tags}, or false for random weights"
        )
    tag = spec.pretrained if isinstance(spec.pretrained, str) and not spec.checkpoint and not schemed else None
    if image_size is not None:
        model, preprocess = _open_clip_at_resolution(spec, tag, image_size)
        return model, preprocess, open_clip.get_tokenizer(spec.arch)
    torch.manual_seed(spec.seed)
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(spec.arch, pretrained=tag)
    except Exception as err:
        if tag is not None and _is_fetch_error(err):
            raise weights_unavailable(spec, f"open_clip {spec.arch} {tag}", err) from None
        raise ModelError(f"models.{spec.name}: open_clip cannot create {spec.arch!r} ({tag}): {err}") from err
    if spec.checkpoint:
        _load_checkpoint(model, spec)
    model.eval()
    return model, preprocess, open_clip.get_tokenizer(spec.arch)


def _open_clip_at_resolution(spec: ModelSpec, tag: str | None, image_size: int):
    """The model created at ``image_size`` (open_clip ``force_image_size``), same weights as at 224.

    A pretrained tag is loaded by open_clip itself, which resamples the ViT position embedding
    bicubically. Random or checkpoint weights are first built exactly as for the standard
    evaluation (same seed, so the same network) and then handed to open_clip as a file, so they go
    through the same resampling instead of a fresh random position embedding.
    """
    import tempfile

    from beyond_imagenet.evaluations.invariance.transforms import create_open_clip_at_resolution

    if tag is not None:
        try:
            return create_open_clip_at_resolution(spec.arch, tag, image_size)
        except Exception as err:
            if _is_fetch_error(err):
                raise weights_unavailable(spec, f"open_clip {spec.arch} {tag}", err) from None
            raise
    base, _, _ = _create_open_clip(spec)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "weights.pt"
        torch.save(base.state_dict(), path)
        return create_open_clip_at_resolution(spec.arch, str(path), image_size)


class OpenClipSource:
    needs_head = True

    @staticmethod
    def architectures() -> list[str]:
        import open_clip

        _register_bundled_open_clip_configs()
        return open_clip.list_models()

    @staticmethod
    def has_architecture(arch: str) -> bool:
        return arch.startswith(("hf-hub:", "local-dir:")) or arch in OpenClipSource.architectures()

    @staticmethod
    def image_size(arch: str) -> int | None:
        """The input size the architecture's config builds (None if only known online)."""
        import open_clip

        _register_bundled_open_clip_configs()
        size = (open_clip.get_model_config(arch) or {}).get("vision_cfg", {}).get("image_size")
        if isinstance(size, (list, tuple)):
            return int(size[0]) if len(set(size)) == 1 else None
        return int(size) if size else None

    @staticmethod
    def build(spec: ModelSpec, protocol: str, head: torch.Tensor | None = None,
              logit_scale: float = 100.0, image_size: int | None = None, **_: Any) -> LoadedModel:
        if head is None and not spec.features_only:
            raise ModelError(f"models.{spec.name}: open_clip models need their zero-shot head")
        if spec.features_only:
            head = None  # features only: no zero-shot head, empty logits
        model, preprocess, _ = _create_open_clip(spec, image_size)
        # Both protocols use open_clip's own eval transform for CLIP weights (Resize(224, bicubic),
        # CenterCrop, OpenAI mean/std): the weights' own config is the native one.
        cfg = model.visual.preprocess_cfg if hasattr(model.visual, "preprocess_cfg") else {}
        record = _transform_record(preprocess, protocol=protocol, **{k: v for k, v in cfg.items()})
        return LoadedModel(spec, _ClipNet(model, head, logit_scale), preprocess, record)

    @staticmethod
    def build_head(spec: ModelSpec, n_templates: int | str | list[str], device: torch.device,
                   class_names: list[str] | None = None) -> torch.Tensor:
        """The (D, 1000) zero-shot ImageNet head, via open_clip's own builder; with ``class_names``
        (a labelled folder's), the (D, len(class_names)) head of those. ``n_templates``: how many of
        the OpenAI ImageNet templates, "all", or the templates themselves (strings with ``{}``)."""
        import open_clip

        model, _, tokenizer = _create_open_clip(spec)
        if isinstance(n_templates, (list, tuple)):
            templates = [t.format for t in n_templates]
        else:
            templates = open_clip.OPENAI_IMAGENET_TEMPLATES
            if n_templates != "all":
                templates = templates[: int(n_templates)]
        model.to(device)
        with torch.no_grad():
            head = open_clip.build_zero_shot_classifier(
                model, tokenizer, class_names or open_clip.IMAGENET_CLASSNAMES, templates,
                num_classes_per_batch=50, device=device, use_tqdm=True,
            )
        return head.float().cpu()


# --------------------------------------------------------------------------------------- python
class _PythonNet(nn.Module):
    """A user's network (``source: python``) as ``(logits, features)``.

    ``features_fn(x)``: the loader's ``features`` function; None = the input of the network's last
    ``nn.Linear`` (its classifier) during ``network(x)``, caught by a forward hook. ``logits_fn(features)``:
    the loader's ``logits`` function; None = ``network(x)`` (one pass with the hook; with a ``features``
    function of the loader, a second pass). Features-only: empty logits, no classifier run."""

    def __init__(self, network: nn.Module, features_fn: Callable | None, logits_fn: Callable | None,
                 features_only: bool, hook_module: nn.Module | None):
        super().__init__()
        self.network = network
        self.features_fn = features_fn
        self.logits_fn = logits_fn
        self.features_only = features_only
        self._caught: list[torch.Tensor] = []
        if features_fn is None:
            hook_module.register_forward_hook(lambda module, args, output: self._caught.append(args[0]))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.features_fn is not None:
            features = self.features_fn(x)
            if self.features_only:
                return _no_logits(features), features
            logits = self.logits_fn(features) if self.logits_fn is not None else self.network(x)
        else:
            self._caught.clear()
            logits = self.network(x)
            features = self._caught[-1]
            self._caught.clear()
            if self.features_only:
                return _no_logits(features), features.flatten(1)
        return _as_tensor(logits), features.flatten(1)


def _as_tensor(logits: Any) -> torch.Tensor:
    """A network's output as the logits tensor: Hugging Face models return an output object."""
    if isinstance(logits, torch.Tensor):
        return logits
    for name in ("logits", "last_hidden_state"):
        if getattr(logits, name, None) is not None:
            return getattr(logits, name)
    raise ModelError(f"the network returned {type(logits).__name__}, not a tensor of logits; give the loader's "
                     "`logits` function")


def import_loader(spec: ModelSpec) -> Callable:
    """The loader function of a ``source: python`` entry, imported from the file the run was planned
    with: the module is found as at planning (working directory first), and a file changed since
    (its sha256, ``spec.loader_sha256``) is refused, as a replaced checkpoint is."""
    import importlib
    import sys

    from beyond_imagenet.model_specs import loader_file

    where = f"models.{spec.name}.loader"
    module_name, _, function = spec.loader.partition(":")
    try:
        path = loader_file(spec.loader)
    except ModelError as err:
        raise ModelError(f"{where}: {spec.loader}: {err}") from None
    if spec.loader_sha256:
        found = checkpoint_sha256(path)
        if found != spec.loader_sha256:
            raise ModelError(
                f"{where}: {path} changed after this run was planned (its sha256 is now {found[:16]}..., planned "
                f"with {spec.loader_sha256[:16]}...); nothing was computed. Rerun the same snakemake command: it "
                "plans again with the file as it is then.")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as err:
        raise ModelError(f"{where}: importing {module_name} ({path}) failed: {type(err).__name__}: {err}") from err
    if Path(getattr(module, "__file__", "") or "").resolve() != path.resolve():
        raise ModelError(f"{where}: {module_name} was imported from {getattr(module, '__file__', None)}, not from "
                         f"{path} as planned (another module of that name came first); rename your module")
    loader = getattr(module, function, None)
    if not callable(loader):
        raise ModelError(f"{where}: {path} has no function {function!r}")
    return loader


def _unpack_loaded(made: Any, spec: ModelSpec) -> tuple[nn.Module, Callable, Callable | None, Callable | None]:
    where = f"models.{spec.name}.loader: {spec.loader}"
    if isinstance(made, dict):
        unknown = sorted(set(made) - {"network", "transform", "features", "logits"})
        if unknown or "network" not in made or "transform" not in made:
            raise ModelError(f"{where} returned a dict with keys {sorted(made)}; it needs `network` and "
                             "`transform`, and may have `features` and `logits` (nothing else)")
        network, transform, features, logits = (made["network"], made["transform"], made.get("features"),
                                                made.get("logits"))
    elif isinstance(made, (tuple, list)) and len(made) == 2:
        (network, transform), features, logits = made, None, None
    else:
        raise ModelError(f"{where} returned {type(made).__name__}; return (network, transform) or a dict "
                         "{network, transform, features, logits}")
    if not isinstance(network, nn.Module):
        raise ModelError(f"{where}: its network is a {type(network).__name__}, not a torch.nn.Module")
    for name, fn in (("transform", transform), ("features", features), ("logits", logits)):
        if fn is not None and not callable(fn):
            raise ModelError(f"{where}: its {name} is a {type(fn).__name__}, not a function")
    if logits is not None and features is None:
        raise ModelError(f"{where}: a `logits` function (features -> logits) needs the `features` function too")
    return network, transform, features, logits


def _last_linear(network: nn.Module) -> tuple[str, nn.Module] | None:
    found = None
    for name, module in network.named_modules():
        if isinstance(module, nn.Linear):
            found = (name, module)
    return found


class PythonSource:
    """``source: python``: ``loader: package.module:function`` called with ``args`` under the model's
    seed; it returns ``(network, transform)`` or a dict with ``network``, ``transform`` and optionally
    ``features`` / ``logits`` functions. ``checkpoint:`` then loads weights into the network as for
    timm (formats, strict check, sha256 in the identity). Its own transform is used for every
    dataset (as for CLIP models); logits must have 1,000 columns (ImageNet-1k) or ``num_classes``."""

    needs_head = False

    @staticmethod
    def build(spec: ModelSpec, protocol: str, image_size: int | None = None, **_: Any) -> LoadedModel:
        import json

        if image_size is not None:
            raise ModelError(f"models.{spec.name}: a python-source model has no resolution variants")
        loader = import_loader(spec)
        torch.manual_seed(spec.seed)
        try:
            made = loader(**(json.loads(spec.loader_args) if spec.loader_args else {}))
        except ModelError:
            raise
        except Exception as err:
            raise ModelError(f"models.{spec.name}.loader: {spec.loader} failed: {type(err).__name__}: {err}") from err
        network, transform, features_fn, logits_fn = _unpack_loaded(made, spec)
        hook = None
        if features_fn is None:
            found = _last_linear(network)
            if found is None:
                raise ModelError(
                    f"models.{spec.name}.loader: {spec.loader}: the network has no nn.Linear whose input would be "
                    "its features; return a dict with a `features` function (images -> (N, D) features)")
            hook = found[1]
        if spec.checkpoint:
            _load_checkpoint(network, spec)
        network.eval()
        net = _PythonNet(network, features_fn, logits_fn, spec.features_only, hook)
        dim = _check_python_outputs(net, transform, spec)
        # The feature width, for the disk estimate of later runs (a parse does not import the loader).
        from beyond_imagenet.model_specs import cached_fact, loader_sha256, python_features_key

        cached_fact("python", python_features_key(spec.loader, spec.loader_sha256 or loader_sha256(spec.loader),
                                                  spec.loader_args), lambda: dim)
        record = _transform_record(transform, protocol="python", loader=spec.loader)
        return LoadedModel(spec, net, transform, record)


def _check_python_outputs(net: _PythonNet, transform: Callable, spec: ModelSpec) -> int:
    """One image through the transform and the network: the shapes are what the outputs need.
    Returns the feature width."""
    from PIL import Image

    where = f"models.{spec.name}.loader: {spec.loader}"
    try:
        x = transform(Image.new("RGB", (320, 256), (124, 116, 104)))
    except Exception as err:
        raise ModelError(f"{where}: its transform fails on a PIL image: {type(err).__name__}: {err}") from err
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        raise ModelError(f"{where}: its transform must turn a PIL image into a (C, H, W) tensor, not "
                         f"{type(x).__name__} {tuple(getattr(x, 'shape', ()))}")
    try:
        with torch.no_grad():
            logits, features = net(x[None])
    except ModelError:
        raise
    except Exception as err:
        raise ModelError(f"{where}: the forward pass fails: {type(err).__name__}: {err}") from err
    if features.dim() != 2 or features.shape[0] != 1:
        raise ModelError(f"{where}: features of one image have shape {tuple(features.shape)}, not (1, D)")
    expected = 0 if spec.features_only else (spec.num_classes or 1000)
    if logits.dim() != 2 or logits.shape != (1, expected):
        raise ModelError(
            f"{where}: logits of one image have shape {tuple(logits.shape)}, expected (1, {expected}): "
            + ("set `num_classes:` to its number of classes (logits in your own label space), or `head: drop` to "
               "use its features only" if not spec.num_classes else "check `num_classes:`"))
    return int(features.shape[1])


SOURCES: dict[str, Any] = {"timm": TimmSource, "open_clip": OpenClipSource, "python": PythonSource}
assert {name: source.needs_head for name, source in SOURCES.items()} == NEEDS_HEAD


def architecture_facts(source: str, arch: str) -> dict[str, Any]:
    """What the library says about ``arch`` offline (imports it): None or a message for an unknown
    architecture, its pretrained tags (None where it cannot say) and, for open_clip, the image
    size it is built at. Cached per library version by :func:`model_specs.architecture_facts`."""
    import difflib

    adapter = SOURCES[source]
    if not adapter.has_architecture(arch):
        close = difflib.get_close_matches(arch, adapter.architectures(), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        return {"unknown": f"{source} has no architecture {arch!r}{hint}", "tags": None, "image_size": None}
    return {"unknown": None, "tags": _pretrained_tags(source, arch),
            "image_size": OpenClipSource.image_size(arch) if source == "open_clip" else None}


def _pretrained_tags(source: str, arch: str) -> list[str] | None:
    """The pretrained tags the library knows offline for ``arch``; None where it cannot say (a
    Hugging Face hub or local architecture, a timm name that already carries a tag)."""
    if source == "timm":
        import timm

        if "." in arch or arch.startswith(("hf-hub:", "hf_hub:", "local-dir:")):
            return None
        return [name.split(".", 1)[1] for name in timm.list_pretrained(f"{arch}.*") if name.split(".", 1)[0] == arch]
    if source == "open_clip":
        import open_clip

        if arch.startswith(("hf-hub:", "local-dir:")):
            return None
        _register_bundled_open_clip_configs()
        return list(open_clip.list_pretrained_tags_by_model(arch))
    return None


def build_model(spec: ModelSpec, protocol: str = "paper", head: torch.Tensor | None = None,
                logit_scale: float = 100.0, image_size: int | None = None,
                input_transform: str = "protocol") -> LoadedModel:
    """``image_size``: build for another input resolution (invariance variants, docs/evaluations.md §8).
    ``input_transform``: one of ``INPUT_TRANSFORMS``; other than ``protocol``, supervised models
    take the dataset's own resize/crop (CLIP models keep their own transform, whose resize and crop
    are no-ops on 224-px sets)."""
    protocol = spec.preprocessing or protocol  # a model's own `preprocessing:` overrides the study's
    loaded = SOURCES[spec.source].build(spec, protocol, head=head, logit_scale=logit_scale, image_size=image_size,
                                        input_transform=input_transform)
    log.info("built %s (%s %s, %s)", spec.name, spec.source, spec.arch, spec.weights_tag)
    return loaded


def build_zero_shot_head(spec: ModelSpec, n_templates: int | str | list[str], device: torch.device,
                         class_names: list[str] | None = None) -> torch.Tensor:
    """A CLIP model's zero-shot classifier: ImageNet-1k's, or that of ``class_names`` (a labelled
    folder's own classes), from ``n_templates`` (a count, "all", or template strings)."""
    if class_names is None:
        return SOURCES[spec.source].build_head(spec, n_templates, device)
    return SOURCES[spec.source].build_head(spec, n_templates, device, class_names=class_names)

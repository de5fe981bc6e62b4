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
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

# The torch-free part (what a study config names), re-exported: the Snakefile imports only that.
from beyond_imagenet.model_specs import (  # noqa: F401
    NEEDS_HEAD,
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


def _load_checkpoint(network: nn.Module, spec: ModelSpec) -> None:
    """The checkpoint through its format (``checkpoint_format``, beyond_imagenet/checkpoints.py)."""
    from beyond_imagenet.checkpoints import CheckpointError, load_checkpoint_into

    try:
        used = load_checkpoint_into(network, spec.checkpoint_path, spec.arch, spec.checkpoint_format,
                                    where=f"models.{spec.name}.checkpoint", expected_sha256=spec.checkpoint_sha256)
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
        # features_only: no classifier (timm drops a pretrained head of another size when loading).
        kwargs = {"num_classes": 0} if spec.features_only else {}
        try:
            model = timm.create_model(arch, pretrained=pretrained, **kwargs)
        except Exception as err:
            if pretrained and _is_fetch_error(err):
                raise weights_unavailable(spec, f"timm {arch}", err) from None
            raise ModelError(f"models.{spec.name}: timm cannot create {arch!r}: {err}") from err
        if spec.checkpoint:
            _load_checkpoint(model, spec)
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
        if not spec.features_only and model.num_classes != 1000:
            raise ModelError(
                f"models.{spec.name}: {arch} has {model.num_classes} output classes; the logit evaluations need "
                "ImageNet-1k logits (choose an in1k fine-tuned tag, or set `features_only: true` to use it in "
                "the feature evaluations only: transfer, cka)"
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
    if spec.pretrained is True and not spec.checkpoint:
        tags = open_clip.list_pretrained_tags_by_model(spec.arch)
        raise ModelError(
            f"models.{spec.name}.pretrained: open_clip needs a pretrained tag for {spec.arch}, "
            f"one of {tags}, or false for random weights"
        )
    tag = spec.pretrained if isinstance(spec.pretrained, str) and not spec.checkpoint else None
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


SOURCES: dict[str, Any] = {"timm": TimmSource, "open_clip": OpenClipSource}
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

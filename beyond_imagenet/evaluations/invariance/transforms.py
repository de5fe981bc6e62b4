"""Transformation-invariance variants (docs/evaluations.md §8): scale, shift and resolution.

Each variant is a torchvision-style callable on a PIL image returning a normalised (3, H, W)
tensor, plus the model-side changes a resolution variant needs (ViT position embeddings, CLIP
image size). ``mean``/``std`` are always passed explicitly (keyword-only, no default) because a
wrong normalisation for CLIP weights is the most common silent bug in this kind of evaluation;
the caller takes them from the model's preprocessing protocol (docs/evaluations.md §0).

Variant names (``scale-1.25``, ``shift-30``, ``res-336``) are what the workflow puts in file
paths; :func:`is_standard` tells it which variant equals the standard evaluation so that
extraction can be reused instead of recomputed.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

# Names, standard levels and paradigms are torch-free, in names.py (the Snakefile plans with them).
from beyond_imagenet.evaluations.invariance.names import (
    PARADIGM_NAMES,
    STANDARD_VALUES,
    VARIANTS,
    _check_paradigm,
    is_standard,
    parse_variant,
    variant_name,
)

__all__ = [
    "VARIANTS",
    "PARADIGMS",
    "STANDARD_VALUES",
    "variant_name",
    "parse_variant",
    "is_standard",
    "scale_transform",
    "shift_transform",
    "shift_window",
    "resolution_transform",
    "variant_transform",
    "resize_vit_pos_embed",
    "create_open_clip_at_resolution",
]

logger = logging.getLogger(__name__)

#: Per-paradigm settings of the paper protocol, as the authors' Beyond-INet code has them
#: (utils/transforms.py CropScale / CropShift, inference/invariance.py): the short-side resize
#: before the 224 centre crop (R in docs/evaluations.md §8), the scale and shift interpolation
#: (torchvision's default, bilinear, for CLIP models too: CropScale and CropShift replace the
#: CLIP transform's bicubic resize) and the resolution interpolation (supervised: the bilinear
#: Resize(256) pipeline; CLIP: open_clip's own eval transform, bicubic).
PARADIGMS: dict[str, dict[str, Any]] = {
    "supervised": {"base_resize": 256, "interpolation": InterpolationMode.BILINEAR,
                   "resolution_interpolation": InterpolationMode.BILINEAR},
    "clip": {"base_resize": 224, "interpolation": InterpolationMode.BILINEAR,
             "resolution_interpolation": InterpolationMode.BICUBIC},
}

assert tuple(PARADIGMS) == PARADIGM_NAMES

Transform = Callable[[Image.Image], torch.Tensor]




# --- transforms -------------------------------------------------------------------------------

def _to_tensor_normalize(mean: Sequence[float], std: Sequence[float]) -> list[Callable]:
    return [T.ToTensor(), T.Normalize(mean=list(mean), std=list(std))]


def scale_transform(
    scale: float,
    base_resize: int,
    crop: int = 224,
    *,
    interpolation: InterpolationMode,
    mean: Sequence[float],
    std: Sequence[float],
) -> T.Compose:
    """Zoom-in variant: Resize(short side -> int(scale·base_resize)) -> CenterCrop(crop).

    ``base_resize`` is R of the paradigm (256 supervised, 224 CLIP), so ``scale=1`` is the
    standard evaluation and larger scales show a smaller central part of the image. ``int()``
    truncates, as the authors' ``CropScale`` does.
    """
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    size = int(scale * base_resize)
    if size < crop:
        raise ValueError(f"resize {size} smaller than crop {crop}: the crop would be padded")
    return T.Compose([T.Resize(size, interpolation=interpolation), T.CenterCrop(crop), *_to_tensor_normalize(mean, std)])


def shift_window(width: int, height: int, shift_px: int, base_resize: int, crop: int = 224) -> tuple[int, int, int, int]:
    """The (left, top, right, bottom) box, in original pixels, of the shifted centre crop.

    The standard Resize(base_resize) + CenterCrop(crop) sees a centred square of side
    ``crop·short/base_resize`` original pixels. The arithmetic is the authors' ``CropShift``
    (Beyond-INet utils/transforms.py) expression for expression, floats truncated by ``int()``
    only at the end (R = base_resize, for w > h; w and h swap roles otherwise)::

        top  = int((R - crop) / 2 · h / R)
        left = int(((w / h · R) - crop) / 2 · h / R + shift_px)
        side = int(crop · h / R)

    i.e. ``left += shift_px`` if ``w > h`` (landscape: move right, along the long side), else
    ``top += shift_px`` (portrait or square: move down), as docs/evaluations.md §8 words it ("right if w > h,
    else down"). A 500 x 375 image at R = 256: (left, top, side) = (85, 23, 328) at shift 0.
    The box may extend past the image; that part is zero-padded by :func:`shift_transform`.
    """
    w, h, r = width, height, base_resize
    if w > h:
        top = ((r - crop) / 2 * h) / r
        left = ((w / h * r) - crop) / 2 * h / r + shift_px
        side = crop * h / r
    else:
        top = ((h / w * r) - crop) / 2 * w / r + shift_px
        left = ((r - crop) / 2 * w) / r
        side = crop * w / r
    left, top, side = int(left), int(top), int(side)
    return left, top, left + side, top + side


class _ShiftedCrop:
    """Crop the shifted window with zero padding outside the image, resized to crop×crop.

    PIL's ``Image.crop`` with a box outside the image fills the outside with 0 (black for RGB,
    checked in the tests), which is exactly the zero padding docs/evaluations.md §8 asks for. Padding happens
    before normalisation, so padded pixels become ``-mean/std`` like real black pixels.
    """

    def __init__(self, shift_px: int, base_resize: int, crop: int, interpolation: InterpolationMode) -> None:
        self.shift_px = int(shift_px)
        self.base_resize = int(base_resize)
        self.crop = int(crop)
        self.resize = T.Resize((self.crop, self.crop), interpolation=interpolation)

    def __call__(self, img: Image.Image) -> Image.Image:
        box = shift_window(img.width, img.height, self.shift_px, self.base_resize, self.crop)
        return self.resize(img.crop(box))

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(shift_px={self.shift_px}, base_resize={self.base_resize}, "
                f"crop={self.crop}, interpolation={self.resize.interpolation.value})")


def shift_transform(
    shift_px: int,
    base_resize: int,
    crop: int = 224,
    *,
    interpolation: InterpolationMode,
    mean: Sequence[float],
    std: Sequence[float],
) -> T.Compose:
    """Shift variant: the standard centre-crop window moved by ``shift_px`` *original* pixels.

    Working in original coordinates (rather than shifting after the resize) makes the shift
    independent of the resize factor, as docs/evaluations.md §8 defines it; the window is then resized once to
    crop×crop, so only one resampling happens. See :func:`shift_window` for the arithmetic.
    """
    return T.Compose([_ShiftedCrop(shift_px, base_resize, crop, interpolation), *_to_tensor_normalize(mean, std)])


def resolution_transform(
    resolution: int,
    paradigm: str,
    interpolation: InterpolationMode | None = None,
    *,
    mean: Sequence[float],
    std: Sequence[float],
) -> T.Compose:
    """Input pipeline for evaluating at ``resolution`` px (the model must be resized to match).

    supervised: Resize(int(r·(256/224))) -> CenterCrop(r), i.e. the standard 0.875 crop ratio
    kept at every resolution (bilinear unless told otherwise; truncated as the authors'
    inference/invariance.py does).
    clip: Resize(r) -> CenterCrop(r), bicubic, i.e. open_clip's eval transform at image size r.
    """
    _check_paradigm(paradigm)
    if interpolation is None:
        interpolation = PARADIGMS[paradigm]["resolution_interpolation"]
    if paradigm == "supervised":
        resize = int(resolution * (256 / 224))
    else:
        resize = resolution
    return T.Compose([T.Resize(resize, interpolation=interpolation), T.CenterCrop(resolution),
                      *_to_tensor_normalize(mean, std)])


def variant_transform(
    kind: str,
    value: float,
    paradigm: str,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    interpolation: InterpolationMode | None = None,
    crop: int = 224,
) -> T.Compose:
    """The transform of one variant with the paradigm's paper-protocol R and interpolation
    (``interpolation`` given: that one for every kind instead, e.g. the model's own under ``native``)."""
    _check_paradigm(paradigm)
    interp = interpolation if interpolation is not None else PARADIGMS[paradigm]["interpolation"]
    base = PARADIGMS[paradigm]["base_resize"]
    builders: dict[str, Callable[[], T.Compose]] = {
        "scale": lambda: scale_transform(float(value), base, crop, interpolation=interp, mean=mean, std=std),
        "shift": lambda: shift_transform(int(value), base, crop, interpolation=interp, mean=mean, std=std),
        "resolution": lambda: resolution_transform(int(value), paradigm, interpolation, mean=mean, std=std),
    }
    if kind not in builders:
        raise ValueError(f"unknown variant kind {kind!r}")
    return builders[kind]()


# --- models at another resolution -------------------------------------------------------------

def _as_hw(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def _resample_pos_embed_manually(model: torch.nn.Module, new_hw: tuple[int, int]) -> None:
    """Fallback for ViT-like timm models without ``set_input_size``: bicubic resampling of the
    patch part of ``pos_embed`` with timm's own helper, and the patch embed's size bookkeeping."""
    from timm.layers import resample_abs_pos_embed

    patch_embed = model.patch_embed
    old_grid = tuple(patch_embed.grid_size)
    patch = _as_hw(patch_embed.patch_size)
    new_grid = (new_hw[0] // patch[0], new_hw[1] // patch[1])
    num_prefix = 0 if getattr(model, "no_embed_class", False) else getattr(model, "num_prefix_tokens", 1)
    model.pos_embed = torch.nn.Parameter(
        resample_abs_pos_embed(model.pos_embed.data, new_size=list(new_grid), old_size=list(old_grid),
                               num_prefix_tokens=num_prefix, interpolation="bicubic", antialias=True),
        requires_grad=model.pos_embed.requires_grad,
    )
    patch_embed.img_size = new_hw
    patch_embed.grid_size = new_grid
    patch_embed.num_patches = new_grid[0] * new_grid[1]


def resize_vit_pos_embed(model: torch.nn.Module, new_size: int | Sequence[int]) -> torch.nn.Module:
    """Make a timm model accept ``new_size`` inputs, resampling ViT position embeddings bicubically.

    timm >= 1.0 ``VisionTransformer.set_input_size`` calls ``timm.layers.resample_abs_pos_embed``
    with its defaults (bicubic, antialias=True, prefix/class tokens untouched) and updates the
    patch embed's expected size, the same resampling timm applies when loading a checkpoint at
    another ``img_size`` and open_clip applies in ``resize_pos_embed``; we use it when present.
    Models without absolute position embeddings are resized with their own ``set_input_size`` if
    they have one (Swin), else returned unchanged (ConvNets run at any resolution). Modifies
    ``model`` in place and returns it.
    """
    hw = _as_hw(new_size)
    if getattr(model, "pos_embed", None) is None:
        if hasattr(model, "set_input_size"):  # e.g. Swin: window and relative-position tables
            model.set_input_size(img_size=hw)
            logger.info("Resized %s to input %s (set_input_size)", type(model).__name__, hw)
        else:
            logger.info("%s has no absolute position embedding; nothing to resample for %s",
                        type(model).__name__, hw)
        return model
    if hasattr(model, "set_input_size"):
        model.set_input_size(img_size=hw)
    else:
        logger.info("%s has no set_input_size; resampling pos_embed manually", type(model).__name__)
        _resample_pos_embed_manually(model, hw)
    logger.info("Resized %s to input %s (pos_embed %s)", type(model).__name__, hw, tuple(model.pos_embed.shape))
    return model


def create_open_clip_at_resolution(
    name: str,
    pretrained: str | None,
    resolution: int,
    **kwargs: Any,
) -> tuple[torch.nn.Module, Callable[[Image.Image], torch.Tensor]]:
    """An open_clip model built for ``resolution`` px inputs; returns ``(model.eval(), preprocess_val)``.

    ``force_image_size`` rewrites the vision config's image size before the model is built, so:

    * native open_clip ViTs get a position embedding for the new grid, and when weights are
      loaded (tag or file) ``open_clip.factory.load_checkpoint`` calls
      ``open_clip.model.resize_pos_embed``, which resamples the checkpoint's grid bicubically
      (antialias=True, class token kept) before ``load_state_dict``;
    * timm-based towers (e.g. ``convnext_base``) are built and loaded at their native size and then
      ``visual.set_input_size`` is called; timm ConvNeXt has none (nothing to resample, it is
      fully convolutional), timm ViTs resample as in :func:`resize_vit_pos_embed`;
    * with ``pretrained=None`` (random weights) nothing is resampled: the position embedding is
      simply initialised at the new grid size, so such a model says nothing about resolution
      robustness; it is only useful for smoke tests;
    * OpenAI ModifiedResNet (RN50 etc.) is *not* handled by open_clip: its attention-pool
      position embedding is not resampled, so loading weights at another size fails with a
      shape mismatch.

    ``preprocess_val`` is open_clip's Resize(r, bicubic) -> CenterCrop(r) with the weights' mean/std,
    identical to :func:`resolution_transform` for ``clip``. Extra ``kwargs`` go to
    ``open_clip.create_model_and_transforms``.
    """
    import open_clip

    model, _, preprocess_val = open_clip.create_model_and_transforms(
        name, pretrained=pretrained, force_image_size=resolution, **kwargs
    )
    if not pretrained:
        logger.warning("open_clip %s at %d px with random weights: position embedding initialised, not resampled",
                       name, resolution)
    return model.eval(), preprocess_val

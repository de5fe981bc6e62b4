"""Tests for the invariance variants of docs/evaluations.md §8 (transforms, names, model resizing)."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import InterpolationMode

from beyond_imagenet.evaluations.invariance.transforms import (
    VARIANTS,
    create_open_clip_at_resolution,
    is_standard,
    parse_variant,
    resize_vit_pos_embed,
    resolution_transform,
    scale_transform,
    shift_transform,
    shift_window,
    variant_name,
    variant_transform,
)
from beyond_imagenet.evaluations.invariance.transforms import _resample_pos_embed_manually

# Identity normalisation and nearest-neighbour resampling keep pixel positions/values exact.
EXACT = dict(interpolation=InterpolationMode.NEAREST, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def _image(w: int, h: int, fill: int = 0, markers: dict[tuple[int, int], tuple[int, int, int]] | None = None,
           block: int = 1) -> Image.Image:
    """RGB image filled with ``fill`` and ``block``×``block`` coloured squares at (x, y) top-left corners."""
    arr = np.full((h, w, 3), fill, dtype=np.uint8)
    for (x, y), colour in (markers or {}).items():
        arr[y:y + block, x:x + block] = colour
    return Image.fromarray(arr)


def _where(t: torch.Tensor, channel: int) -> list[tuple[int, int]]:
    """(x, y) of the pixels where ``channel`` is 1 and the other channels are 0."""
    others = [c for c in range(3) if c != channel]
    mask = (t[channel] == 1.0) & (t[others[0]] == 0.0) & (t[others[1]] == 0.0)
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return sorted(zip(xs.tolist(), ys.tolist()))


# --- names ------------------------------------------------------------------------------------

def test_variant_names_roundtrip() -> None:
    assert variant_name("scale", 1.25) == "scale-1.25"
    assert variant_name("scale", 2) == "scale-2"
    assert variant_name("shift", 30) == "shift-30"
    assert variant_name("resolution", 336) == "res-336"
    for kind, values in VARIANTS.items():
        for v in values:
            name = variant_name(kind, v)
            assert parse_variant(name) == (kind, v)
            assert variant_name(*parse_variant(name)) == name
    assert len({variant_name(k, v) for k, vs in VARIANTS.items() for v in vs}) == 15


@pytest.mark.parametrize("bad", ["scale", "zoom-2", "res-33.5", "res-", "scale-1.50", "shift-x"])
def test_parse_variant_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_variant(bad)


def test_is_standard() -> None:
    """Shift 0 crops in original coordinates, then resizes: its own pipeline, extracted. A CLIP
    model's scale 1 is bilinear (the authors' CropScale) where its standard transform is bicubic."""
    expected = {"supervised": [("scale", 1), ("resolution", 224)], "clip": [("resolution", 224)]}
    for paradigm in ("supervised", "clip"):
        standard = [(k, v) for k, vs in VARIANTS.items() for v in vs if is_standard(k, v, paradigm)]
        assert standard == expected[paradigm]
        assert not is_standard("scale", 1, paradigm, protocol="native")
        assert not is_standard("resolution", 224, paradigm, protocol="native")
    with pytest.raises(ValueError):
        is_standard("scale", 1, "selfsup")


# --- PIL zero padding ---------------------------------------------------------------------------

def test_pil_crop_out_of_bounds_pads_with_zeros() -> None:
    """The shift transform relies on this PIL behaviour for its zero padding."""
    img = _image(10, 8, fill=255)
    out = np.asarray(img.crop((-3, 4, 7, 14)))
    assert out.shape == (10, 10, 3)
    assert (out[:4, 3:] == 255).all()  # inside the image
    assert (out[:, :3] == 0).all() and (out[4:] == 0).all()  # left and bottom outside -> 0


# --- shift ------------------------------------------------------------------------------------

@pytest.mark.parametrize("shift", VARIANTS["shift"])
def test_shift_window_arithmetic(shift: int) -> None:
    """Guards issue 25 item 5: the windows are the authors' CropShift ones, truncated with int()
    (rounding half up moved them by a pixel: (86, 24, 328) instead of (85, 23, 328) at shift 0).
    By hand, 500×375, crop 224:
      R = 256 (supervised): top = int(16·375/256 = 23.4375) = 23,
        left = int(((500/375·256) − 224)/2 · 375/256 = 85.9375 + v) = 85 + v, side = int(328.125) = 328;
      R = 224 (CLIP): top = 0, left = int((298.67 − 224)/2 · 375/224 = 62.5 + v) = 62 + v,
        side = int(375) = 375."""
    assert shift_window(500, 375, shift, 256) == (85 + shift, 23, 85 + shift + 328, 23 + 328)
    assert shift_window(500, 375, shift, 224) == (62 + shift, 0, 62 + shift + 375, 375)
    # portrait: w and h swap roles, the window moves down
    assert shift_window(375, 500, shift, 256) == (23, 85 + shift, 23 + 328, 85 + shift + 328)
    # 300×300, R = 256: left = int(16·300/256 = 18.75) = 18, top = 18 + v, side = int(262.5) = 262;
    # square: down (docs/evaluations.md §8: "right if w > h, else down").
    assert shift_window(300, 300, shift, 256) == (18, 18 + shift, 280, 280 + shift)


@pytest.mark.parametrize("shift", [0, 5, 30])
def test_shift_moves_marker_one_to_one(shift: int) -> None:
    # 300×200, R = 200, crop 100: window side 100 original px -> output 100 px (1:1),
    # window x ∈ [100 + v, 200 + v), y ∈ [50, 150). Marker at (150, 100) -> output (50 - v, 50).
    img = _image(300, 200, markers={(150, 100): (255, 0, 0)})
    out = shift_transform(shift, 200, 100, **EXACT)(img)
    assert out.shape == (3, 100, 100)
    assert _where(out, 0) == [(50 - shift, 50)]


@pytest.mark.parametrize("shift", [0, 30, 74])
def test_shift_in_original_pixels_with_downscale(shift: int) -> None:
    # 600×400, R = 200, crop 100: window side 100·400/200 = 200 original px -> 100 output px (½).
    # window x0 = 200 + v. NEAREST 2:1 samples original 2i+1, so a 2×2 block at even x covers
    # output column (x - x0)/2: the marker moves v/2 output px for a shift of v original px.
    img = _image(600, 400, markers={(300, 200): (0, 255, 0)}, block=2)
    out = shift_transform(shift, 200, 100, **EXACT)(img)
    assert _where(out, 1) == [((300 - 200 - shift) // 2, 50)]


def test_shift_portrait_moves_down() -> None:
    # 200×300 (portrait): window y0 = 100 + v, x0 = 50. Marker (100, 150) -> output (50, 50 - v).
    img = _image(200, 300, markers={(100, 150): (0, 0, 255)})
    out = shift_transform(30, 200, 100, **EXACT)(img)
    assert _where(out, 2) == [(50, 20)]


def test_shift_square_moves_down() -> None:
    img = _image(200, 200, markers={(100, 100): (255, 0, 0)})
    out = shift_transform(30, 200, 100, **EXACT)(img)  # window [50, 150) × [50+30, 150+30)
    assert _where(out, 0) == [(50, 20)]
    # The padding of a square image appears at the bottom, as for a portrait one.
    out = shift_transform(100, 200, 100, **EXACT)(_image(200, 200, fill=255))  # rows [150, 250)
    assert (out[:, :50, :] == 1.0).all() and (out[:, 50:, :] == 0.0).all()


def test_shift_zero_pads_on_the_leaving_side() -> None:
    # All-white 300×200; shift 150 -> window x ∈ [250, 350): 50 columns inside, 50 outside (right).
    out = shift_transform(150, 200, 100, **EXACT)(_image(300, 200, fill=255))
    assert (out[:, :, :50] == 1.0).all()
    assert (out[:, :, 50:] == 0.0).all()
    # Portrait: the padding appears at the bottom.
    out = shift_transform(150, 200, 100, **EXACT)(_image(200, 300, fill=255))
    assert (out[:, :50, :] == 1.0).all()
    assert (out[:, 50:, :] == 0.0).all()
    # Padded pixels are normalised like black pixels: (0 - mean) / std.
    out = shift_transform(150, 200, 100, interpolation=InterpolationMode.NEAREST, **IMAGENET)(
        _image(300, 200, fill=255))
    expected = -torch.tensor(IMAGENET["mean"]) / torch.tensor(IMAGENET["std"])
    torch.testing.assert_close(out[:, 0, 99], expected)


def test_shift_standard_sizes_run() -> None:
    img = _image(500, 375, fill=128)
    for v in VARIANTS["shift"]:
        for paradigm in ("supervised", "clip"):
            assert variant_transform("shift", v, paradigm, **IMAGENET)(img).shape == (3, 224, 224)


# --- scale ------------------------------------------------------------------------------------

def test_scale_two_crops_central_half() -> None:
    # 100×100, R = 100, crop 100, scale 2: Resize(200) doubles each pixel, CenterCrop(100) keeps
    # resized [50, 150) = original [25, 75): the central ½-size region, stretched to the output.
    red, green, blue = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    img = _image(100, 100, markers={(25, 25): red, (74, 74): green, (24, 50): blue})
    out = scale_transform(2, 100, 100, **EXACT)(img)
    assert out.shape == (3, 100, 100)
    assert _where(out, 0) == [(0, 0), (0, 1), (1, 0), (1, 1)]  # region's top-left at output border
    assert _where(out, 1) == [(98, 98), (98, 99), (99, 98), (99, 99)]  # bottom-right corner
    assert _where(out, 2) == []  # just outside the region
    # Scale 1 keeps everything (Resize(100) is the identity here).
    out1 = scale_transform(1, 100, 100, **EXACT)(img)
    assert _where(out1, 0) == [(25, 25)] and _where(out1, 2) == [(24, 50)]


def test_scale_resize_sizes() -> None:
    for paradigm, base in (("supervised", 256), ("clip", 224)):
        for s in VARIANTS["scale"]:
            t = variant_transform("scale", s, paradigm, **IMAGENET)
            assert t.transforms[0].size == int(s * base)
            assert t(_image(500, 375)).shape == (3, 224, 224)
    # int() truncates as the authors' CropScale does: 1.3 · 256 = 332.8 -> 332 (not 333).
    assert scale_transform(1.3, 256, interpolation=InterpolationMode.BILINEAR, **IMAGENET).transforms[0].size == 332


@pytest.mark.parametrize("paradigm", ["supervised", "clip"])
def test_interpolation_per_paradigm(paradigm: str) -> None:
    """Guards issue 25 item 5: the paper protocol's scale and shift resize bilinearly for CLIP
    models too (the authors' CropScale / CropShift use torchvision's default); resolution keeps
    each paradigm's own pipeline (supervised bilinear, CLIP open_clip's bicubic)."""
    kinds = {"scale": 2, "shift": 30, "resolution": 336}
    got = {}
    for kind, value in kinds.items():
        t = variant_transform(kind, value, paradigm, **IMAGENET)
        step = t.transforms[0]
        got[kind] = step.resize.interpolation if kind == "shift" else step.interpolation
    resolution = InterpolationMode.BILINEAR if paradigm == "supervised" else InterpolationMode.BICUBIC
    assert got == {"scale": InterpolationMode.BILINEAR, "shift": InterpolationMode.BILINEAR,
                   "resolution": resolution}
    # A given interpolation (the model's own, under `native`) replaces it for every kind.
    for kind, value in kinds.items():
        t = variant_transform(kind, value, paradigm, interpolation=InterpolationMode.BICUBIC, **IMAGENET)
        assert "bicubic" in repr(t.transforms[0]), kind
    with pytest.raises(ValueError):
        scale_transform(0.5, 256, interpolation=InterpolationMode.BILINEAR, **IMAGENET)


# --- resolution -------------------------------------------------------------------------------

@pytest.mark.parametrize("paradigm", ["supervised", "clip"])
def test_resolution_transform_sizes(paradigm: str) -> None:
    img = _image(500, 375, fill=100)
    expected_resize = {"supervised": {112: 128, 224: 256, 336: 384, 512: 585, 640: 731},
                       "clip": {r: r for r in VARIANTS["resolution"]}}[paradigm]
    for r in VARIANTS["resolution"]:
        t = resolution_transform(r, paradigm, **IMAGENET)
        assert t.transforms[0].size == expected_resize[r]
        want = InterpolationMode.BILINEAR if paradigm == "supervised" else InterpolationMode.BICUBIC
        assert t.transforms[0].interpolation == want
        assert t(img).shape == (3, r, r)


# --- timm ViT position embeddings ---------------------------------------------------------------

def _vit_tiny() -> torch.nn.Module:
    import timm

    return timm.create_model("vit_tiny_patch16_224", pretrained=False).eval()


@pytest.mark.parametrize("res", [112, 336])
def test_timm_vit_resized_runs(res: int) -> None:
    model = _vit_tiny()
    old = model.pos_embed.detach().clone()
    resize_vit_pos_embed(model, res)
    grid = res // 16
    assert model.pos_embed.shape == (1, grid * grid + 1, 192)
    with torch.no_grad():
        assert model(torch.randn(1, 3, res, res)).shape == (1, 1000)
    # Bicubic resampling of the 14×14 patch grid, class token untouched (what timm does).
    patch = old[:, 1:].reshape(1, 14, 14, 192).permute(0, 3, 1, 2)
    want = F.interpolate(patch, size=(grid, grid), mode="bicubic", antialias=True, align_corners=False)
    want = want.permute(0, 2, 3, 1).reshape(1, grid * grid, 192)
    torch.testing.assert_close(model.pos_embed[:, 1:].detach(), want)
    torch.testing.assert_close(model.pos_embed[:, :1].detach(), old[:, :1])


def test_manual_fallback_matches_set_input_size() -> None:
    a, b = _vit_tiny(), _vit_tiny()
    b.load_state_dict(a.state_dict())
    resize_vit_pos_embed(a, 336)
    _resample_pos_embed_manually(b, (336, 336))
    torch.testing.assert_close(a.pos_embed, b.pos_embed)
    with torch.no_grad():
        x = torch.randn(1, 3, 336, 336)
        torch.testing.assert_close(a(x), b(x))


def test_resize_without_pos_embed_is_noop() -> None:
    conv = torch.nn.Conv2d(3, 4, 3)
    assert resize_vit_pos_embed(conv, 336) is conv


# --- open_clip ----------------------------------------------------------------------------------

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
}


@pytest.fixture
def tiny_clip(monkeypatch: pytest.MonkeyPatch) -> str:
    import open_clip.factory

    name = "bi-test-tiny-vit"
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, name, TINY_CLIP)
    return name


def test_open_clip_random_weights_at_112(tiny_clip: str) -> None:
    model, preprocess = create_open_clip_at_resolution(tiny_clip, None, 112)
    assert not model.training
    assert tuple(model.visual.positional_embedding.shape) == (7 * 7 + 1, 64)
    with torch.no_grad():
        assert model.encode_image(torch.randn(2, 3, 112, 112)).shape == (2, 32)
    assert preprocess(_image(500, 375)).shape == (3, 112, 112)


def test_open_clip_resamples_pos_embed_when_loading(tiny_clip: str, tmp_path) -> None:
    """Weights saved at 224 and loaded at 112: open_clip's resize_pos_embed resamples bicubically."""
    import open_clip

    src = open_clip.create_model(tiny_clip)
    path = tmp_path / "tiny.pt"
    torch.save(src.state_dict(), path)
    model, _ = create_open_clip_at_resolution(tiny_clip, str(path), 112)
    old = src.visual.positional_embedding.detach()
    grid = old[1:].reshape(1, 14, 14, 64).permute(0, 3, 1, 2)
    want = F.interpolate(grid, size=(7, 7), mode="bicubic", antialias=True, align_corners=False)
    want = want.permute(0, 2, 3, 1).reshape(49, 64)
    new = model.visual.positional_embedding.detach()
    torch.testing.assert_close(new[1:], want)
    torch.testing.assert_close(new[:1], old[:1])
    torch.testing.assert_close(model.visual.conv1.weight, src.visual.conv1.weight)
    with torch.no_grad():
        assert model.encode_image(torch.randn(1, 3, 112, 112)).shape == (1, 32)


def test_a_model_without_pos_embed_but_with_set_input_size_is_resized() -> None:
    """Swin has no absolute position embedding, but fixed windows: its own set_input_size adapts them."""
    model = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, depths=(1, 1, 1, 1),
                              embed_dim=24, num_heads=(1, 1, 1, 1)).eval()
    resize_vit_pos_embed(model, 448)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 448, 448)).shape == (1, 1000)

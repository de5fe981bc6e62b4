"""The online CKA pass (docs/evaluations.md §9): layer selection, hooks, pairs, files, and constant memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from beyond_imagenet.evaluations.cka.passes import (IMAGE_TOWERS, GramRecorder, HookedModel, LayerSelectionError, batch_plan, cka_pass,
                                 cka_sample, model_pairs, read_cka, select_layers, write_cka)
from beyond_imagenet.metrics.cka import MinibatchCKA, linear_cka
from beyond_imagenet.models import ModelSpec, build_model
from conftest import default_config


class TinyConv(nn.Module):
    """Three conv layers with big feature maps (16×64×64 = 64k floats per image per layer)."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.layers = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1),
                                    nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1))

    def forward(self, x):
        return self.layers(x)


def _hooked(net: nn.Module) -> HookedModel:
    return HookedModel(net, select_layers(net, "convnet", [r"^layers\.[024]$"]))


def _batches(n_batches: int, batch: int = 16, size: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n_batches):
        yield torch.randn(batch, 3, size, size, generator=g)


# --- layer selection ---------------------------------------------------------------------------

@pytest.mark.parametrize("name, blocks, stages", [
    ("convnet_sup", 12, 4),   # timm convnext_atto: stages.i.blocks.j, depths (2, 2, 6, 2)
    ("vit_sup", 12, 12),      # timm vit_tiny: blocks.i
    ("convnet_clip", 12, 4),  # open_clip timm tower: trunk.stages.i.blocks.j
    ("vit_clip", 4, 4),       # open_clip ViT: transformer.resblocks.i (the text tower is not searched)
])
def test_layer_selectors_resolve_on_every_default_model(name, blocks, stages):
    spec = ModelSpec.from_config(name, default_config()["models"][name])
    loaded = build_model(spec, head=torch.zeros(128, 1000) if spec.needs_zero_shot_head else None)
    tower = IMAGE_TOWERS[spec.source](loaded.network)
    found = select_layers(tower, spec.family, "blocks")
    assert len(found) == blocks
    assert len(select_layers(tower, spec.family, "stages")) == stages
    names = [n for n, _ in found]
    assert names == sorted(names, key=lambda n: [int(t) if t.isdigit() else t for t in n.split(".")])  # forward order
    # Every selected layer runs and yields a (B, B) Gram.
    with GramRecorder(found) as rec, torch.no_grad():
        rec.batch = 4
        loaded.network(torch.randn(4, 3, 224, 224))
        grams = rec.take()
    assert len(grams) == blocks and all(g.shape == (4, 4) for g in grams)


def test_layer_selection_errors_name_the_modules():
    with pytest.raises(LayerSelectionError, match="unknown layer selector"):
        select_layers(TinyConv(), "convnet", "everything")
    with pytest.raises(LayerSelectionError, match="layers.0"):
        select_layers(TinyConv(), "convnet", "blocks")  # no stages/blocks: lists what exists
    assert [n for n, _ in select_layers(TinyConv(), "convnet", [r"^layers\.0$", r"^layers\.4$"])] == ["layers.0", "layers.4"]


# --- the pass ------------------------------------------------------------------------------------

def test_update_from_grams_equals_update_from_activations():
    g = torch.Generator().manual_seed(1)
    acts_a = [torch.randn(12, 30, generator=g), torch.randn(12, 5, 4, generator=g)]
    acts_b = [torch.randn(12, 7, generator=g)]
    one, two = MinibatchCKA(), MinibatchCKA()
    one.update(acts_a, acts_b)
    two.update([a.reshape(12, -1).double() @ a.reshape(12, -1).double().T for a in acts_a],
               [b.double() @ b.double().T for b in acts_b], grams=True)
    np.testing.assert_allclose(one.compute(), two.compute(), rtol=1e-12)
    with pytest.raises(ValueError, match="square"):
        MinibatchCKA().update([torch.randn(12, 30)], grams=True)


def test_pass_matches_minibatch_cka_on_stored_activations():
    """Hooks + Grams in the hook give exactly what MinibatchCKA gives on the activations."""
    a, b = TinyConv(0), TinyConv(1)
    batches = list(_batches(3, batch=8, size=16))
    result = cka_pass({"a": _hooked(a), "b": _hooked(b)}, batches, [("a", "a"), ("a", "b")])
    ref_within, ref_cross = MinibatchCKA(), MinibatchCKA()
    with torch.no_grad():
        for x in batches:
            acts_a = [a.layers[:i + 1](x) for i in (0, 2, 4)]
            acts_b = [b.layers[:i + 1](x) for i in (0, 2, 4)]
            ref_within.update(acts_a)
            ref_cross.update(acts_a, acts_b)
    np.testing.assert_allclose(result[("a", "a")].compute(), ref_within.compute(), rtol=1e-10)
    np.testing.assert_allclose(result[("a", "b")].compute(), ref_cross.compute(), rtol=1e-10)
    within = result[("a", "a")].compute()
    np.testing.assert_allclose(np.diag(within), 1.0, rtol=1e-12)
    np.testing.assert_allclose(within, within.T, rtol=1e-12)
    assert result[("a", "b")].n_samples == 24 and result[("a", "b")].n_batches == 3


def test_pass_close_to_full_batch_cka_on_many_images():
    a = TinyConv(0)
    batches = list(_batches(8, batch=32, size=8))
    result = cka_pass({"a": _hooked(a)}, batches, [("a", "a")])[("a", "a")].compute()
    x = torch.cat(batches)
    with torch.no_grad():
        first, last = a.layers[:1](x), a.layers(x)
    assert result[0, 2] == pytest.approx(linear_cka(first, last), abs=0.05)


def test_pass_gives_each_model_its_own_batch_and_handles_sequence_first_outputs():
    class SeqFirst(nn.Module):  # a (T, B, D) transformer-style block, as old open_clip towers
        def __init__(self):
            super().__init__()
            self.block = nn.Linear(8, 8)

        def forward(self, x):
            return self.block(x.flatten(2).permute(2, 0, 1)[:, :, :8])  # (T, B, 8)

    net = SeqFirst()
    hooked = HookedModel(net, select_layers(net, "vit", [r"^block$"]))
    seen = {}
    orig = net.forward

    def spy(x):
        seen.setdefault("shapes", []).append(tuple(x.shape))
        return orig(x)

    net.forward = spy
    batch = {"m": torch.randn(6, 8, 3, 3), "other": torch.randn(6, 1)}
    acc = cka_pass({"m": hooked}, [batch], [("m", "m")])[("m", "m")]
    assert seen["shapes"] == [(6, 8, 3, 3)] and acc.n_samples == 6


def test_model_pairs():
    models = {"cs": {"family": "convnet", "paradigm": "supervised"}, "vs": {"family": "vit", "paradigm": "supervised"},
              "cc": {"family": "convnet", "paradigm": "clip"}, "vc": {"family": "vit", "paradigm": "clip"}}
    assert model_pairs(models, "within") == [("cs", "cs"), ("vs", "vs"), ("cc", "cc"), ("vc", "vc")]
    cross = model_pairs(models, "cross")
    assert cross == [("cs", "vs"), ("cs", "cc"), ("vs", "vc"), ("cc", "vc")]  # the paper's two axes only
    assert len(model_pairs(models, "cross", "all")) == 6
    assert len(model_pairs(models, "both")) == 8


def test_cka_sample_is_a_seeded_random_draw_in_whole_batches():
    samples = [(f"c{k // 20:02d}/img{k}", k // 20) for k in range(200)]  # sorted by class, as manifests
    drawn, dropped = cka_sample(samples, 70, 16)
    assert (len(drawn), dropped) == (64, 6)
    assert len(set(drawn)) == 64 and set(drawn) <= set(samples)
    assert drawn == cka_sample(samples, 70, 16)[0]  # deterministic under its seed
    assert drawn != cka_sample(samples, 70, 16, seed=1)[0]
    # Each batch mixes classes (sequential batches of this list would hold one or two classes).
    assert all(len({label for _, label in drawn[i:i + 16]}) >= 5 for i in range(0, 64, 16))
    everything, _ = cka_sample(samples, 10_000, 8)
    assert len(everything) == len(samples) and set(everything) == set(samples)


def test_minibatch_cka_needs_random_batches_on_class_sorted_data():
    """Why cka_sample shuffles: on data sorted by class, sequential minibatches estimate CKA within
    blocks of related classes, far from the full-batch value; random batches land near it."""
    g = torch.Generator().manual_seed(0)
    n_classes, per = 1000, 2
    n = n_classes * per
    cls = torch.arange(n_classes).repeat_interleave(per)
    # Neighbouring classes are related (as neighbouring wnids are): 20 super-classes of 50.
    means = torch.randn(20, 64, generator=g).repeat_interleave(50, 0) + 0.5 * torch.randn(n_classes, 64, generator=g)
    z = means[cls] + 0.7 * torch.randn(n, 64, generator=g)
    x = (z @ torch.randn(64, 128, generator=g) + 0.5 * torch.randn(n, 128, generator=g)).double()
    y = (torch.tanh(z @ torch.randn(64, 96, generator=g)) + 0.5 * torch.randn(n, 96, generator=g)).double()
    full = linear_cka(x, y)
    samples = list(range(n))

    def minibatch(order, batch=64):
        acc = MinibatchCKA()
        for i in range(0, len(order) - batch + 1, batch):
            idx = torch.as_tensor(order[i:i + batch])
            acc.update([x[idx]], [y[idx]])
        return float(acc.compute()[0, 0])

    shuffled, _ = cka_sample(samples, n, 64)
    assert abs(minibatch(shuffled) - full) < 0.03
    assert abs(minibatch(samples) - full) > 0.08


def test_batch_plan_drops_the_incomplete_batch():
    assert batch_plan(70, 32) == (2, 6)
    assert batch_plan(64, 16) == (4, 0)
    with pytest.raises(ValueError):
        batch_plan(64, 3)
    with pytest.raises(ValueError):
        batch_plan(10, 16)


def test_file_roundtrip(tmp_path):
    a = TinyConv(0)
    result = cka_pass({"a": _hooked(a), "b": _hooked(TinyConv(1))}, _batches(2, batch=8, size=8),
                      [("a", "a"), ("a", "b")])
    path = tmp_path / "cka.h5"
    write_cka(path, result, {"a": ["l0", "l2", "l4"], "b": ["l0", "l2", "l4"]}, {"n_images": 16, "layers": ["x"]})
    matrices, attrs = read_cka(path)
    assert [(m.model_a, m.model_b, m.kind) for m in matrices] == [("a", "a", "within"), ("a", "b", "cross")]
    np.testing.assert_array_equal(matrices[1].cka, result[("a", "b")].compute())
    assert matrices[0].layers_a == ["l0", "l2", "l4"] and attrs["n_images"] == 16 and json.loads(attrs["layers"]) == ["x"]


# --- memory does not grow with the number of images ------------------------------------------

_MEMORY_SCRIPT = textwrap.dedent("""
    import resource, sys, torch
    sys.path.insert(0, {tests!r})
    from test_cka_pass import TinyConv, _hooked, _batches
    from beyond_imagenet.evaluations.cka.passes import cka_pass
    torch.set_num_threads(1)
    n_images, leak = int(sys.argv[1]), sys.argv[2] == "leak"
    model = _hooked(TinyConv())
    kept = []
    if leak:  # the mistake the test must catch: keeping every batch's activations
        for _, module in model.layers:
            module.register_forward_hook(lambda m, i, o: kept.append(o.detach().clone()))
    acc = cka_pass({{"m": model}}, _batches(n_images // 16, batch=16, size=64), [("m", "m")])[("m", "m")]
    state = sum(t.numel() for t in acc.state_dict().values())
    rss = int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize() // 2**20
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, state, acc.n_samples, rss)
""")


def _peak_mb(tmp_path, n_images: int, leak: bool = False) -> tuple[int, int, int, int]:
    script = tmp_path / "memory_probe.py"
    script.write_text(_MEMORY_SCRIPT.format(tests=str(__import__("pathlib").Path(__file__).parent)))
    out = subprocess.run([sys.executable, str(script), str(n_images), "leak" if leak else "ok"], check=True,
                         capture_output=True, text=True).stdout.split()
    return int(out[0]), int(out[1]), int(out[2]), int(out[3])


def test_memory_does_not_grow_with_the_number_of_images(tmp_path):
    """Peak RSS of a real process for 64 vs 512 images (16×64×64 floats per layer and image: keeping
    the activations of 512 images would take ~200 MB more), and the same check on a pass that does
    keep them, to show the measurement would catch it."""
    small, state_small, n_small, rss_small = _peak_mb(tmp_path, 64)
    large, state_large, n_large, rss_large = _peak_mb(tmp_path, 512)
    assert (n_small, n_large) == (64, 512)
    assert state_small == state_large == 3 * 3 + 3 + 3  # the accumulator: n_a·n_b + n_a + n_b sums
    assert large - small < 30, f"peak RSS grew from {small} MB to {large} MB with 8x the images"
    assert rss_large - rss_small < 30, f"resident memory grew from {rss_small} MB to {rss_large} MB"
    # The peak can be set by start-up (imports) and hide a leak; resident memory at the end cannot.
    *_, leaky_small = _peak_mb(tmp_path, 64, leak=True)
    *_, leaky_large = _peak_mb(tmp_path, 512, leak=True)
    assert leaky_large - leaky_small > 150, "the probe cannot see stored activations; the check above means nothing"


def test_cka_summary_rows_by_hand():
    from beyond_imagenet.evaluations.cka.passes import CkaMatrix, cka_summary_rows

    columns = {"a": {"model": "a", "label": "A"}, "b": {"model": "b", "label": "B"}}
    within = CkaMatrix("a", "a", "within", ["l0", "l1", "l2"], ["l0", "l1", "l2"],
                       np.array([[1.0, 0.8, 0.2], [0.8, 1.0, 0.5], [0.2, 0.5, 1.0]]))
    cross = CkaMatrix("a", "b", "cross", ["l0", "l1"], ["m0", "m1"], np.array([[0.9, 0.1], [0.3, 0.7]]))
    rows = cka_summary_rows([within, cross], columns, "val")
    got = {(r["model"], r["partner"], r["metric"]): r["value"] for r in rows}
    assert got == {("a", "a", "mean_layer_similarity"): pytest.approx((0.8 + 0.2 + 0.5) * 2 / 6),
                   ("a", "a", "first_last"): 0.2,
                   ("a", "b", "last_layer"): 0.7, ("b", "a", "last_layer"): 0.7}
    assert {r["dataset"] for r in rows} == {"val"} and rows[-1]["partner_label"] == "A"


def test_unreadable_images_are_collected_and_left_out_for_every_model(tmp_path):
    from PIL import Image

    from beyond_imagenet.evaluations.cka.passes import SameImages, collate_same_images, readable_batches

    ids = []
    for i in range(10):
        path = tmp_path / f"img{i}.png"
        if i in (5, 7):
            path.write_bytes(b"not a png")
        else:
            Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(path)
        ids.append(path.name)
    to_tensor = lambda image: torch.from_numpy(np.asarray(image, dtype=np.float32))  # noqa: E731
    dataset = SameImages(tmp_path, ids, {"a": to_tensor, "b": to_tensor})
    loader = torch.utils.data.DataLoader(dataset, batch_size=5, collate_fn=collate_same_images)
    bad = []
    batches = list(readable_batches(loader, bad))
    # Batch 1 (images 0-4) is whole; batch 2 keeps 3 of 5, too few for the unbiased HSIC: left out.
    assert len(batches) == 1 and set(batches[0]) == {"a", "b"} and batches[0]["a"].shape[0] == 5
    assert [i for i, _ in bad] == [5, 7] and all("Error" in reason for _, reason in bad)


# --- the bootstrap over minibatches (docs/evaluations.md §11) -------------------------------------
def test_per_batch_terms_give_the_matrix_and_survive_the_file(tmp_path):
    from beyond_imagenet.metrics.cka import cka_from_batch_terms

    result = cka_pass({"a": _hooked(TinyConv(0)), "b": _hooked(TinyConv(1))}, _batches(5, batch=8, size=8),
                      [("a", "a"), ("a", "b")])
    for acc in result.values():
        terms = acc.batch_terms()
        assert terms["ab"].shape == (5, 3, 3) and terms["aa"].shape == (5, 3) and terms["bb"].shape == (5, 3)
        np.testing.assert_allclose(cka_from_batch_terms(**terms), acc.compute(), rtol=1e-12, atol=1e-12)
        assert sum(t.numel() for t in acc.state_dict().values()) == 3 * 3 + 3 + 3  # running state unchanged
    path = tmp_path / "cka.h5"
    write_cka(path, result, {"a": ["l0", "l2", "l4"], "b": ["l0", "l2", "l4"]}, {"n_images": 40})
    matrices, _ = read_cka(path)
    for m in matrices:
        np.testing.assert_array_equal(m.batches["ab"], result[(m.model_a, m.model_b)].batch_terms()["ab"])


def test_cka_table_gets_intervals_over_minibatches(tmp_path):
    """cka.csv rows get a percentile interval over resampled minibatches that holds the estimate; the
    comparison of a model with a copy of itself (same batches, same weights) is 0 with zero width."""
    from types import SimpleNamespace

    from beyond_imagenet.evaluations import get
    from beyond_imagenet.uncertainty import table_and_comparisons

    result = cka_pass({"a": _hooked(TinyConv(0)), "a2": _hooked(TinyConv(0)), "b": _hooked(TinyConv(1))},
                      _batches(6, batch=8, size=8), [("a", "a"), ("a2", "a2"), ("b", "b"), ("a", "b")])
    path = tmp_path / "cka_set.h5"
    write_cka(path, result, {m: ["l0", "l2", "l4"] for m in ("a", "a2", "b")}, {"n_images": 48})
    columns = {m: {"model": m, "label": m.upper(), "family": "convnet", "paradigm": "supervised", "paper_key": ""}
               for m in ("a", "a2", "b")}
    job = SimpleNamespace(input=SimpleNamespace(items=lambda: [("set", str(path))]),
                          params=SimpleNamespace(models=columns, uncertainty={"level": 0.9, "resamples": 200, "seed": 0}))
    rows, comparisons = table_and_comparisons(get("cka"), job)
    for row in rows:
        assert row["ci_low"] <= row["value"] <= row["ci_high"], row
    within = [r for r in rows if r["metric"] == "mean_layer_similarity"]
    assert all(r["ci_high"] > r["ci_low"] for r in within)  # 6 different batches: a real spread
    same = [c for c in comparisons if {c["model_a"], c["model_b"]} == {"a", "a2"}]
    assert same and all(c["difference"] == 0 and c["ci_low"] == 0 == c["ci_high"] for c in same)


# --- one pass file per model, the pairs from the files (no model) ---------------------------------
def _pass_files(tmp_path, models: dict, n_batches: int = 4, skipped=(), attrs_of=None):
    """Each model's pass file over the same batches (as the extraction jobs write them: run_pass)."""
    from beyond_imagenet.evaluations.cka.passes import gram_pass, write_grams

    files = {}
    for name, hooked in models.items():
        path = tmp_path / name / "set.h5"
        ids = [f"img{i}" for i in range(n_batches * 8)]
        attrs = {"model": name, "identity": {"model": name}, "settings": {"n_images": 8 * n_batches},
                 "n_images": len(ids), **(attrs_of(name) if attrs_of else {})}
        write_grams(path, hooked.layer_names, gram_pass(hooked, _batches(n_batches, batch=8, size=8)),
                    lambda attrs=attrs, ids=ids: (attrs, ids, list(skipped)))
        files[name] = path
    return files


def _expected(models):
    return {m: {"model": m, "identity": {"model": m}, "settings": {"n_images": 32}} for m in models}


def test_pairs_from_pass_files_equal_the_joint_pass_exactly(tmp_path):
    """Per-model passes + the pairs job give bit for bit what one joint pass of all models gives."""
    from beyond_imagenet.evaluations.cka.passes import pairs_from_grams

    models = {"a": _hooked(TinyConv(0)), "b": _hooked(TinyConv(1)), "c": _hooked(TinyConv(2))}
    pairs = [("a", "a"), ("b", "b"), ("c", "c"), ("a", "b"), ("b", "c")]
    joint = cka_pass(models, list(_batches(4, batch=8, size=8)), pairs)
    files = _pass_files(tmp_path, models)
    found = pairs_from_grams(files, pairs, _expected(models))
    assert list(found.results) == pairs
    for pair in pairs:
        np.testing.assert_array_equal(found.results[pair].compute(), joint[pair].compute())
        for term, values in joint[pair].batch_terms().items():
            np.testing.assert_array_equal(found.results[pair].batch_terms()[term], values)
    assert found.layer_names["b"] == ["layers.0", "layers.2", "layers.4"] and len(found.ids) == 32
    # Round trip through the matrix file the table and figures read.
    write_cka(tmp_path / "cka.h5", found.results, found.layer_names, {"n_images": 32})
    matrices, _ = read_cka(tmp_path / "cka.h5")
    np.testing.assert_array_equal(matrices[3].cka, joint[("a", "b")].compute())


def test_pass_file_holds_one_batch_at_a_time_and_is_atomic(tmp_path):
    """A pass whose end fails (bad images under on_bad_image: error) leaves no file; a finished one
    stores (n_layers, B, B) float64 per batch."""
    import h5py

    from beyond_imagenet.evaluations.cka.passes import gram_pass, write_grams

    hooked = _hooked(TinyConv(0))
    path = tmp_path / "m" / "set.h5"

    def fail():
        raise RuntimeError("bad images")

    with pytest.raises(RuntimeError, match="bad images"):
        write_grams(path, hooked.layer_names, gram_pass(hooked, _batches(2, batch=8, size=8)), fail)
    assert not path.exists() and not list(path.parent.iterdir())
    n = write_grams(path, hooked.layer_names, gram_pass(hooked, _batches(3, batch=8, size=8)),
                    lambda: ({"model": "m"}, ["x"] * 24, []))
    with h5py.File(path, "r") as f:
        assert n == 3 and list(f["grams"]) == ["00000", "00001", "00002"]
        assert f["grams"]["00001"].shape == (3, 8, 8) and f["grams"]["00001"].dtype == np.float64


def test_pairs_job_refuses_stale_or_mismatched_pass_files(tmp_path):
    from beyond_imagenet.evaluations.cka.passes import pairs_from_grams
    from beyond_imagenet.extract import StaleOutputError

    models = {"a": _hooked(TinyConv(0)), "b": _hooked(TinyConv(1))}
    files = _pass_files(tmp_path, models)
    pairs = [("a", "a"), ("a", "b")]
    # Another model's weights (identity), another pass setting: the file is named and refused.
    wrong = _expected(models)
    wrong["b"]["identity"] = {"model": "b", "weights": "other"}
    with pytest.raises(StaleOutputError, match=r"b/set\.h5 was made for something else(.|\n)*identity"):
        pairs_from_grams(files, pairs, wrong)
    wrong = _expected(models)
    wrong["a"]["settings"] = {"n_images": 64}
    with pytest.raises(StaleOutputError, match="settings"):
        pairs_from_grams(files, pairs, wrong)
    # Same identities, but different images left out: the batches do not pair.
    other = _pass_files(tmp_path / "other", {"b": models["b"]}, skipped=["img3"])
    with pytest.raises(StaleOutputError, match="same images in the same batches"):
        pairs_from_grams({"a": files["a"], "b": other["b"]}, pairs, _expected(models))
    with pytest.raises(ValueError, match=r"no pass file for model\(s\) \['c'\]"):
        pairs_from_grams(files, [("a", "c")], _expected(models))


# --- through Snakemake: the pass inside each model's extraction job ------------------------------
@pytest.mark.workflow
def test_pass_runs_in_the_extraction_job_and_adding_a_model_runs_its_job_and_the_pairs_only(tmp_path, monkeypatch):
    """Each model's CKA pass is run by its extraction job (no job of its own), with the network that
    job built for its extractions: the pass file equals a pass of a freshly built model, Gram for
    Gram. A finished study plus one model plans that model's extraction job, the pairs job over the
    stored passes and the study-wide tables and figures: no other model's job reruns (dry run). A
    changed pass setting reruns the extraction jobs, which reuse their extracted files and compute
    the passes again; a deleted pass file reruns its model's job only."""
    from collections import Counter

    import h5py

    from beyond_imagenet.datasets.manifest import load_manifest
    from beyond_imagenet.evaluations.cka import pass_expect
    from beyond_imagenet.evaluations.cka.passes import run_pass
    from beyond_imagenet.study import Study, load_config
    from beyond_imagenet.workflow import model_spec
    from conftest import dry_run_jobs, run_snakemake, write_config

    config = default_config()
    models = config["models"]
    config["models"] = {"convnet_sup": models["convnet_sup"], "vit_sup": models["vit_sup"]}
    config["datasets"] = {"imagenet_val": {**config["datasets"]["imagenet_val"], "num_classes": 4,
                                           "images_per_class": 2}}
    config["evaluations"] = {"accuracy": {"datasets": ["imagenet_val"]},
                             "cka": {"datasets": ["imagenet_val"], "n_images": 8, "batch_size": 4,
                                     "cross_pairs": "all"}}
    config["resources_dir"] = str(tmp_path / "resources")
    two = write_config(tmp_path / "two.yaml", config)
    jobs = run_snakemake(two, tmp_path)
    assert jobs["extract_outputs"] == 2 and jobs["compute_cka"] == 1 and "compute_cka_pass" not in jobs
    assert dry_run_jobs(two, tmp_path) == []  # finished

    # The pass of the extraction job (whose network first extracted imagenet_val) is the pass of a
    # freshly built model, exactly.
    monkeypatch.chdir(tmp_path)
    study = Study(load_config(two))  # with the schema's defaults, as the workflow reads it
    manifest = load_manifest("results/manifests/imagenet_val.json", images=True)
    stored = tmp_path / study.pass_output("vit_sup", "cka", "imagenet_val")
    assert stored == tmp_path / "results" / "cka" / "vit_sup" / "imagenet_val.h5"
    loaded = build_model(model_spec(study.model_entry("vit_sup"), study.head_identity("vit_sup")), "paper")
    fresh = tmp_path / "fresh.h5"
    run_pass(loaded, loaded.spec, manifest, fresh, pass_expect(study, "vit_sup", "imagenet_val"), torch.device("cpu"))
    with h5py.File(stored) as a, h5py.File(fresh) as b:
        assert list(a["grams"]) == list(b["grams"]) and len(a["grams"]) == 2
        for key in a["grams"]:
            np.testing.assert_array_equal(a["grams"][key][()], b["grams"][key][()])
    marker = json.loads(Path(study.pass_marker("vit_sup", "cka", "imagenet_val")).read_text())
    assert study.pass_output("vit_sup", "cka", "imagenet_val") in marker["outputs"]

    config["models"]["vit_sup2"] = {**models["vit_sup"], "seed": 1, "label": "another ViT"}
    three = write_config(tmp_path / "three.yaml", config)
    planned = dry_run_jobs(three, tmp_path)
    assert [w for rule, w in planned if rule == "extract_outputs"] == [{"model": "vit_sup2", "group": "all"}]
    # The study-wide aggregates read every table (tests/test_job_params.py AGGREGATES).
    assert Counter(rule for rule, _ in planned) - Counter({"extract_outputs": 1}) == Counter(
        {"compute_cka": 1, "compute_cka_summary": 1, "plot_cka": 1, "compute_accuracy": 1, "compute_profile": 1,
         "plot_profile": 1, "compute_comparisons": 1, "plot_comparisons": 1, "list_skipped_images": 1,
         "compute_across_models": 1, "plot_across_models": 1, "plot_vs_imagenet": 1, "results_page": 1,
         "all": 1})

    # A deleted pass file: its model's job reruns (and the pairs), no other model's.
    Path(stored).unlink()
    planned = dry_run_jobs(two, tmp_path)
    assert [w["model"] for rule, w in planned if rule == "extract_outputs"] == ["vit_sup"]
    run_snakemake(two, tmp_path)
    assert Path(stored).is_file()

    # A new pass setting: both models' jobs rerun, reuse their extracted files, compute new passes.
    extracted = tmp_path / "results" / "extracted" / "convnet_sup" / "imagenet_val.h5"
    made = extracted.stat().st_mtime_ns
    del config["models"]["vit_sup2"]
    config["evaluations"]["cka"]["n_images"] = 4
    jobs = run_snakemake(write_config(tmp_path / "two.yaml", config), tmp_path)
    assert jobs["extract_outputs"] == 2 and jobs["compute_cka"] == 1
    assert extracted.stat().st_mtime_ns == made
    with h5py.File(stored) as f:
        assert len(f["grams"]) == 1 and json.loads(f.attrs["settings"])["n_images"] == 4


def test_pass_plan_puts_each_pass_in_the_group_that_extracts_its_dataset():
    """Study.pass_plan: the CKA pass goes where its dataset is extracted (``all`` under
    ``group: model``, the dataset's own or explicit group under ``group: dataset``); a split dataset's
    pass (its part jobs extract slices) and a dataset the model extracts nothing of get a group of
    their own; a model no pair names runs no pass; the pairs job reads the markers of those groups."""
    import copy

    from beyond_imagenet.study import Study, validate_config

    base = default_config()
    base["evaluations"]["cka"]["datasets"] = ["imagenet_val", "cue_conflict"]

    def plan(**extraction):
        config = copy.deepcopy(base)
        config["extraction"].update(extraction)
        return Study(validate_config(config))

    study = plan(group="model")
    assert study.pass_plan("vit_sup") == {"all": [("cka", "imagenet_val"), ("cka", "cue_conflict")]}
    assert study.job_groups("vit_sup") == ["all"]
    assert study.pass_marker("vit_sup", "cka", "cue_conflict") == str(study.results / "extracted" / "vit_sup" / "all.group.json")
    study = plan(group="dataset", groups={"mine": ["cue_conflict", "imagenet_r"]})
    assert study.pass_plan("vit_sup") == {"imagenet_val": [("cka", "imagenet_val")], "mine": [("cka", "cue_conflict")]}
    assert set(study.pass_plan("vit_sup")) <= set(study.extraction_plan("vit_sup"))  # no job of its own
    study = plan(group="dataset", split={"imagenet_val": 2})
    assert study.pass_plan("vit_sup")["imagenet_val@passes"] == [("cka", "imagenet_val")]
    assert "imagenet_val@passes" in study.job_groups("vit_sup") and "imagenet_val@passes" not in study.extraction_plan("vit_sup")
    # only the models some pair names (the hook's models(), cached per study)
    study = plan(group="model")
    from beyond_imagenet.evaluations.cka import pass_models

    assert pass_models(study) == list(study.models)  # the default study pairs every model
    study._pass_models["cka"] = {"vit_sup"}
    assert [m for m in study.models if study.pass_plan(m)] == ["vit_sup"]

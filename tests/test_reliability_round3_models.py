"""Issue 24 (models and config): wrong numbers that looked right. A model with NaN/inf outputs, a
checkpoint replaced after planning, too few bootstrap resamples, integer settings written as floats.
The workflow-level cases (reordered keys, a checkpoint dated in the future) are in
test_reliability_round3_workflow.py."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from test_extract import TinyNet, make_images, run

from beyond_imagenet.extract import NonFiniteOutputError, nonfinite_rows, read_outputs


class NaNNet(TinyNet):
    """TinyNet whose outputs are NaN (or inf) for the images at ``rows`` of each batch of 4."""

    def __init__(self, rows=(0,), value=float("nan"), where="logits", scale=1.0):
        super().__init__()
        self.rows, self.value, self.where, self.scale = list(rows), value, where, scale

    def forward(self, x):
        logits, features = super().forward(x)
        features = features * self.scale
        if self.rows:
            target = logits if self.where == "logits" else features
            target[[r for r in self.rows if r < len(x)]] = self.value
        return logits, features


# ------------------------------------------------------------------------ non-finite outputs
def test_nonfinite_rows_counts_images_per_chunk():
    block = np.ones((5, 3), np.float32)
    block[1, 2], block[3] = np.nan, np.inf
    assert nonfinite_rows(block).tolist() == [False, True, False, True, False]
    # per chunk: the counts of the chunks add up to the whole array's
    assert sum(int(nonfinite_rows(block[i:i + 2]).sum()) for i in range(0, 5, 2)) == 2
    assert nonfinite_rows(np.zeros((4, 0), np.float32)).tolist() == [False] * 4  # a features-only model's logits
    huge = np.full((2, 8), 3e38, np.float32)  # finite, though a float32 sum of a row overflows
    huge[1, 3] = -np.inf
    assert nonfinite_rows(huge).tolist() == [False, True]
    assert nonfinite_rows(huge.astype(np.float64)).tolist() == [False, True]
    assert nonfinite_rows(np.asarray([[1, np.nan], [1, 2]], np.float16)).tolist() == [True, False]


@pytest.mark.parametrize("rows, value, expected", [((0,), float("nan"), 5), ((0, 1, 2, 3), float("nan"), 20),
                                                   ((2,), float("inf"), 5)])
def test_a_model_with_nonfinite_logits_stops_naming_model_dataset_and_count(tmp_path, rows, value, expected):
    """Guards: a diverged checkpoint ran without a warning; all-NaN rows were scored as class 0 (the
    broken model could rank first) and partial NaN made the ECE NaN while accuracy ignored them."""
    samples = make_images(tmp_path / "data")  # 20 images, batches of 4
    out = tmp_path / "out" / "toy.h5"
    with pytest.raises(NonFiniteOutputError) as err:
        run(tmp_path / "data", samples, out, net=NaNNet(rows, value))
    message = str(err.value)
    assert "model tiny on dataset toy" in message and f"{expected} of 20 images" in message
    assert "nothing was written" in message and "weights" in message
    assert not out.exists() and not (tmp_path / "out" / ".toy.h5.parts").exists()
    assert list((tmp_path / "out").iterdir()) == []


def test_features_overflowing_float16_point_at_features_dtype(tmp_path):
    """Finite float32 features above 65,504 become inf when stored as float16: the message says so
    and its remedy (features_dtype: float32) gives a finite file."""
    samples = make_images(tmp_path / "data", n=8)
    out = tmp_path / "out" / "toy.h5"
    with pytest.raises(NonFiniteOutputError, match="features_dtype: float32") as err:
        run(tmp_path / "data", samples, out, net=NaNNet(rows=(), scale=1e6))
    assert "8 of 8 images" in str(err.value) and not out.exists()
    run(tmp_path / "data", samples, out, net=NaNNet(rows=(), scale=1e6), features_dtype="float32")
    assert np.isfinite(read_outputs(out, fields=("features",))["features"]).all()


def test_an_old_output_with_nan_logits_is_refused_on_read_and_removed(tmp_path, monkeypatch):
    """A file written before extraction checked for NaN (simulated by switching the check off while
    writing) is refused by every reader, naming the file and the count, and removed so that the rerun
    re-extracts it (and then stops naming the model if the weights are still broken)."""
    import beyond_imagenet.extract as extract_module

    samples = make_images(tmp_path / "data", n=8)
    out = tmp_path / "outputs" / "tiny" / "toy.h5"
    with monkeypatch.context() as patch:
        patch.setattr(extract_module, "nonfinite_rows", lambda block: np.zeros(len(block), dtype=bool))
        run(tmp_path / "data", samples, out, net=NaNNet(rows=(1,)))
    assert out.exists()
    with pytest.raises(NonFiniteOutputError) as err:
        read_outputs(out, {"model": "tiny"})
    message = str(err.value)
    assert str(out) in message and "2 of its 8 images have NaN or infinite logits" in message
    assert "It was removed: rerun" in message
    assert not out.exists()
    with pytest.raises(NonFiniteOutputError, match="model tiny on dataset toy: 2 of 8 images"):
        run(tmp_path / "data", samples, out, net=NaNNet(rows=(1,)))  # the rerun, weights unchanged
    run(tmp_path / "data", samples, out, net=NaNNet(rows=()))  # weights fixed
    assert np.isfinite(read_outputs(out, {"model": "tiny"})["logits"]).all()


# ----------------------------------------------------- a checkpoint replaced after planning
def _checkpoint_study(path):
    from beyond_imagenet.study import Study

    config = {"models": {"m": {"source": "timm", "name": "convnext_atto", "pretrained": False,
                               "checkpoint": str(path)}},
              "datasets": {}, "evaluations": {}, "zero_shot": {"templates": 1, "logit_scale": 100.0},
              "extraction": {}, "preprocessing": "paper"}
    return Study(config)


def test_a_checkpoint_replaced_after_planning_is_refused_and_a_rerun_plans_again(tmp_path):
    """Guards: a training run overwriting last.pth between planning and the job had its new weights'
    outputs recorded under the old file's sha256. The job gets the planned identity; the loader
    hashes the bytes it reads and refuses a different file, naming the key, the file and the remedy
    (rerun: planning again records the new hash, and the job then loads it)."""
    from test_checkpoints import timm_state

    from beyond_imagenet.models import ModelError, build_model
    from beyond_imagenet.workflow import model_spec

    path = tmp_path / "last.pth"
    torch.save(timm_state(seed=1), path)
    study = _checkpoint_study(path)
    planned = study.head_identity("m")
    entry = study.model_entry("m")
    assert "checkpoint_sha256" not in entry  # not a param: the identity carries it
    build_model(model_spec(entry, planned))  # the planned file loads

    torch.save(timm_state(seed=2), path)  # the training run writes its next epoch
    with pytest.raises(ModelError) as err:
        build_model(model_spec(entry, planned))
    message = str(err.value)
    assert f"models.m.checkpoint {path} changed after this run was planned" in message
    assert planned["checkpoint_sha256"][:16] in message and "Rerun the same snakemake command" in message

    replanned = _checkpoint_study(path).head_identity("m")  # what the rerun plans with
    assert replanned["checkpoint_sha256"] != planned["checkpoint_sha256"]
    loaded = build_model(model_spec(entry, replanned))
    torch.testing.assert_close(loaded.network.model.state_dict()["head.fc.weight"],
                               timm_state(seed=2)["head.fc.weight"], rtol=0, atol=0)


# ------------------------------------------------------------------------ bootstrap resamples
def test_too_few_resamples_for_the_level_are_refused(tiny_config):
    """Guards: `resamples: 1` was accepted; with a handful of resamples a one-image difference was
    marked distinguishable beside McNemar p = 1. The minimum follows the level (docs §11)."""
    from beyond_imagenet.study import ConfigError, min_resamples, validate_config

    assert min_resamples(0.95) == 200 and min_resamples(0.9) == 100 and min_resamples(0.99) == 1000
    for level, resamples in ((0.95, 1), (0.95, 199), (0.99, 999)):
        config = copy.deepcopy(tiny_config)
        config["uncertainty"] = {"level": level, "resamples": resamples}
        with pytest.raises(ConfigError) as err:
            validate_config(config)
        assert f"uncertainty.resamples: {resamples} resamples" in str(err.value)
        assert f"at least {min_resamples(level)}" in str(err.value)
    config = copy.deepcopy(tiny_config)
    config["uncertainty"] = {"level": 0.95, "resamples": 200}
    validate_config(config)


def test_at_the_minimum_a_one_image_difference_is_not_distinguishable():
    """The case of the issue: two models differing on one image of 50 (McNemar p = 1). With a few
    resamples its interval often excluded 0; at the minimum it includes 0."""
    from beyond_imagenet.metrics.bootstrap import mcnemar_exact, paired_difference
    from beyond_imagenet.study import min_resamples

    a = np.ones(50)
    b = a.copy()
    b[7] = 0
    assert mcnemar_exact(a.astype(bool), b.astype(bool)) == 1.0
    few = [paired_difference(np.mean, a, b, 3, seed, level=0.95) for seed in range(20)]
    assert any(low > 0 for _, low, _ in few), "the guard shows nothing: no small run was distinguishable"
    for seed in range(5):
        _, low, high = paired_difference(np.mean, a, b, min_resamples(0.95), seed, level=0.95)
        assert low <= 0 <= high


# ------------------------------------------------------------- integer settings written as floats
def _integer_settings(schema, root, path=()):
    """Every setting the schema types as an integer (or a list of them): (path, is_list), with the
    names of the default study's entries under models/datasets (split_sizes: its vtab dataset)."""
    from beyond_imagenet.study import _resolve, _types

    schema = _resolve(schema, root)
    if "integer" in _types(schema, root) and "number" not in _types(schema, root):
        yield path, False
        return
    items = schema.get("items")
    if isinstance(items, dict) and "integer" in _types(items, root):
        yield path, True
        return
    for key, sub in schema.get("properties", {}).items():
        yield from _integer_settings(sub, root, (*path, key))
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict) and path in (("models",), ("datasets",)):
        entry = "vit_sup" if path == ("models",) else "imagenet_val"
        for found, is_list in _integer_settings(extra, root, (*path, entry)):
            yield (found if "split_sizes" not in found else (*path, "vtab", *found[2:])), is_list


def _get(config, path):
    for key in path:
        config = config.get(key) if isinstance(config, dict) else None
    return config


def _set(config, path, value):
    for key in path[:-1]:
        config = config.setdefault(key, {})
    config[path[-1]] = value


def _own_head_evaluations(config, path, own_root=None):
    """A model's `num_classes` (logits of its own classes) is refused by the evaluations of ImageNet
    logits: its setting is tried in a study of the feature evaluations. A dataset's `splits` are a
    labelled folder's (of one's own classes): tried on such a folder, in transfer."""
    if path[0] == "models" and path[-1] == "num_classes":
        config["evaluations"] = {k: v for k, v in config["evaluations"].items() if k in ("transfer", "cka")}
    if path[0] == "datasets" and "splits" in path:
        config["datasets"][path[1]] = {"kind": "labelled_folder", "source": "manual", "root": str(own_root)}
        config["evaluations"] = {k: {**v, "datasets": ["vtab", path[1]]} for k, v in config["evaluations"].items()
                                 if k == "transfer"}


def test_every_integer_setting_written_as_a_float_is_read_as_an_int(tiny_config, tmp_path):
    """Guards: `n_bins: 15.0`, `batch_size: 8.0`, `seed: 1.0` passed validation (JSON Schema calls
    15.0 an integer) and crashed inside jobs without naming the key, or changed a cache key (the
    params' text). Every integer setting of the schemas (walked, so a new one is covered): a whole
    float becomes the int everything downstream sees; a fractional one is refused naming the key."""
    from beyond_imagenet.study import ConfigError, Study, load_schema, validate_config

    from beyond_imagenet.datasets.photos import write_own_class_folder

    own_root = write_own_class_folder(tmp_path / "own", copies=2)
    schema = load_schema()
    settings = list(_integer_settings(schema, schema))
    names = {".".join(p) for p, _ in settings}
    assert {"evaluations.calibration.n_bins", "extraction.batch_size", "models.vit_sup.seed", "uncertainty.seed",
            "evaluations.invariance.shift", "zero_shot.templates", "evaluations.transfer.probe.epochs",
            "datasets.imagenet_val.subset.images", "datasets.vtab.split_sizes.test"} <= names, names
    print(f"{len(settings)} integer settings:", sorted(names))
    base = validate_config(copy.deepcopy(tiny_config))  # every default filled in
    for path, is_list in settings:
        config = copy.deepcopy(tiny_config)
        current = _get(base, path)
        if path[-1] in ("images", "per_class"):
            current = 1
        elif current is None:
            current = [224] if is_list else 1
        if path[-2:] == ("subset", "seed"):
            _set(config, (*path[:-1], "images"), 1)
        if path[-1] == "max_images" and current is None:
            current = 8
        floats = [float(x) for x in current] if is_list else float(current)
        _own_head_evaluations(config, path, own_root)
        _set(config, path, floats)
        validate_config(config)
        got = _get(config, path)
        assert (all(type(x) is int for x in got) if is_list else type(got) is int), (path, got)
        assert got == current, (path, got)
        if path == ("evaluations", "calibration", "n_bins"):  # and so in the job's params
            assert type(Study(config).evaluations["calibration"]["n_bins"]) is int

        config = copy.deepcopy(tiny_config)
        if path[-2:] == ("subset", "seed"):
            _set(config, (*path[:-1], "images"), 1)
        _own_head_evaluations(config, path, own_root)
        _set(config, path, [x + 0.5 for x in floats] if is_list else floats + 0.5)
        with pytest.raises(ConfigError) as err:
            validate_config(config)
        assert ".".join(path) in str(err.value), (path, str(err.value))

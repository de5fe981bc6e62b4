"""Your own model (issue 23, items 3 and 4): a network from a Python function (``source: python``),
a fine-tuned checkpoint with a head of its own classes (``num_classes``), its backbone alone
(``head: drop``), and open_clip models from a local folder (``local-dir:``)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap

import h5py
import pandas as pd
import pytest
import torch
from conftest import REPO, default_config, dry_run_jobs, run_snakemake, write_config

from beyond_imagenet.models import ModelError, ModelSpec, build_model
from beyond_imagenet.study import ConfigError, Study, validate_config

#: The documented torchvision example (docs/data-and-weights.md), its weights from a file.
TORCHVISION_LOADER = '''
import torch
import torchvision
from torchvision import transforms as T


def resnet18(weights=None, num_classes=1000):
    """A torchvision ResNet-18 and its ImageNet eval transform; weights from a local file if given."""
    network = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    if weights:
        network.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    transform = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                           T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    return network, transform
'''

#: A network without nn.Linear, features and logits given as functions (the dict form).
FUNCTIONS_LOADER = '''
import torch
from torch import nn
from torchvision import transforms as T


class Tiny(nn.Module):
    def __init__(self, classes):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Conv2d(8, classes, 1)

    def forward(self, x):
        return self.head(self.body(x)[:, :, None, None]).flatten(1)


def tiny(classes=1000):
    net = Tiny(classes)
    return {"network": net, "transform": T.Compose([T.Resize(64), T.CenterCrop(64), T.ToTensor()]),
            "features": net.body, "logits": lambda f: net.head(f[:, :, None, None]).flatten(1)}
'''


@pytest.fixture
def module_dir(tmp_path, monkeypatch):
    """A working directory holding the loader modules (found there as snakemake's workdir would be)."""
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("own_models_")]:
        del sys.modules[name]


def write_module(folder, name, code):
    (folder / f"{name}.py").write_text(textwrap.dedent(code))
    return f"{name}"


def python_spec(loader, **entry):
    return ModelSpec.from_config("mine", {"source": "python", "loader": loader, **entry})


def forward(loaded, n=2):
    with torch.no_grad():
        return loaded.network(torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(1)))


# --- source: python -----------------------------------------------------------------------------

def test_a_torchvision_model_from_a_loader_gives_imagenet_logits_and_its_penultimate_features(module_dir):
    """Features default to the input of the network's last nn.Linear (ResNet's fc: 512 wide); logits
    are its output, 1,000 ImageNet classes; the transform is the loader's own."""
    write_module(module_dir, "own_models_tv", TORCHVISION_LOADER)
    loaded = build_model(python_spec("own_models_tv:resnet18"))
    logits, features = forward(loaded)
    assert logits.shape == (2, 1000) and features.shape == (2, 512)
    net = loaded.network.network
    with torch.no_grad():  # the hook's features are what the classifier reads
        torch.testing.assert_close(net.fc(features), logits)
    assert loaded.preprocessing["loader"] == "own_models_tv:resnet18" and "Resize(size=256" in loaded.preprocessing["transform"]


def test_weights_from_a_file_two_ways_give_the_same_network(module_dir):
    """The documented example reads its weights in the loader (args: weights) or the workflow reads
    them (`checkpoint:`, hashed into the identity): the same network either way."""
    write_module(module_dir, "own_models_w", TORCHVISION_LOADER)
    torch.manual_seed(5)
    import torchvision

    torch.save(torchvision.models.resnet18(weights=None).state_dict(), module_dir / "r18.pth")
    by_args = build_model(python_spec("own_models_w:resnet18", args={"weights": str(module_dir / "r18.pth")}))
    by_checkpoint = build_model(python_spec("own_models_w:resnet18", checkpoint=str(module_dir / "r18.pth")))
    for a, b in zip(forward(by_args), forward(by_checkpoint)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_features_and_logits_functions_of_a_network_without_linear(module_dir):
    write_module(module_dir, "own_models_fn", FUNCTIONS_LOADER)
    logits, features = forward(build_model(python_spec("own_models_fn:tiny", args={"classes": 10}, num_classes=10)))
    assert logits.shape == (2, 10) and features.shape == (2, 8)
    logits, features = forward(build_model(python_spec("own_models_fn:tiny", args={"classes": 10}, head="drop")))
    assert logits.shape == (2, 0) and features.shape == (2, 8)


def test_a_loader_that_returns_the_wrong_thing_is_named(module_dir):
    write_module(module_dir, "own_models_bad", '''
        import torch
        def bare():
            return torch.nn.Linear(2, 2)
        def ten():
            import torchvision
            from torchvision import transforms as T
            return torchvision.models.resnet18(num_classes=10), T.Compose([T.Resize(64), T.ToTensor()])
        ''')
    with pytest.raises(ModelError, match=r"models.mine.loader: own_models_bad:bare returned Linear; return \(network, transform\)"):
        build_model(python_spec("own_models_bad:bare"))
    with pytest.raises(ModelError, match=r"logits of one image have shape \(1, 10\), expected \(1, 1000\): set `num_classes:`"):
        build_model(python_spec("own_models_bad:ten"))
    assert forward(build_model(python_spec("own_models_bad:ten", num_classes=10)))[0].shape == (2, 10)


def _python_config(loader, **entry):
    config = default_config()
    config["models"] = {"vit_sup": config["models"]["vit_sup"],
                        "mine": {"source": "python", "loader": loader, **entry}}
    return config


def test_the_loaders_code_and_arguments_are_its_identity_and_a_changed_file_is_refused_in_a_job(module_dir):
    write_module(module_dir, "own_models_id", FUNCTIONS_LOADER)
    study = Study(validate_config(_python_config("own_models_id:tiny", args={"classes": 1000})))
    identity = study.head_identity("mine")
    assert identity["loader"] == "own_models_id:tiny" and identity["loader_args"] == '{"classes":1000}'
    assert identity["weights"] == "python:own_models_id:tiny" and study.models["mine"].arch == "own_models_id:tiny"
    entry = study.model_entry("mine")
    assert entry["loader"] == "own_models_id:tiny" and "loader_sha256" not in entry
    assert not {"loader", "loader_args", "num_classes", "head"} & set(study.model_entry("vit_sup"))  # unchanged params
    assert not {"loader", "num_classes", "head"} & set(study.head_identity("vit_sup"))
    # another order of the same arguments is the same model; other arguments or code are not
    assert Study(validate_config(_python_config("own_models_id:tiny", args={"classes": 1000}))).head_identity(
        "mine") == identity
    assert Study(validate_config(_python_config("own_models_id:tiny", args={"classes": 999}))).head_identity(
        "mine")["loader_args"] != identity["loader_args"]
    (module_dir / "own_models_id.py").write_text((module_dir / "own_models_id.py").read_text() + "\n# edited\n")
    edited = Study(validate_config(_python_config("own_models_id:tiny", args={"classes": 1000})))
    assert edited.head_identity("mine")["loader_sha256"] != identity["loader_sha256"]
    from beyond_imagenet.workflow import model_spec

    planned = model_spec(study.model_entry("mine"), identity)  # planned before the edit
    with pytest.raises(ModelError, match="changed after this run was planned"):
        build_model(planned)


def test_a_loader_is_checked_without_importing_it(module_dir):
    """The parse finds the module file and the function in it (ast), never runs it: a module that
    fails on import (or imports torch) costs the parse nothing; a missing one is named."""
    write_module(module_dir, "own_models_boom", "raise RuntimeError('imported')\ndef net():\n    pass\n")
    validate_config(_python_config("own_models_boom:net"))
    assert "own_models_boom" not in sys.modules
    with pytest.raises(ConfigError) as err:
        validate_config(_python_config("own_models_boom:other"))
    assert "models.mine.loader: own_models_boom:other:" in str(err.value) and "defines no 'other'" in str(err.value)
    with pytest.raises(ConfigError, match=r"models.mine.loader: no_such_module_here:f: module 'no_such_module_here' "
                                          r"is not found in the working directory"):
        validate_config(_python_config("no_such_module_here:f"))
    with pytest.raises(ConfigError, match=r"models.mine: 'loader' is a required property"):
        validate_config(_python_config(None) | {"models": {"mine": {"source": "python"}}})
    with pytest.raises(ConfigError, match=r"models.vit_sup.loader: only for `source: python`"):
        config = _python_config("own_models_boom:net")
        config["models"]["vit_sup"]["loader"] = "own_models_boom:net"
        validate_config(config)


def test_a_parse_with_python_and_own_head_models_imports_neither_torch_nor_the_loader(tmp_path):
    (tmp_path / "own_models_parse.py").write_text(TORCHVISION_LOADER)
    config = default_config()
    config["models"] = {"mine": {"source": "python", "loader": "own_models_parse:resnet18", "args": {"num_classes": 10},
                                 "head": "drop"},
                        "ft": {"source": "timm", "name": "vit_tiny_patch16_224", "pretrained": False,
                               "num_classes": 10}}
    config["evaluations"] = {"transfer": config["evaluations"]["transfer"]}
    write_config(tmp_path / "study.yaml", config)
    code = """
import sys
from beyond_imagenet.study import Study, load_config
study = Study(load_config("study.yaml"))
print({m: sorted(study.model_identity(m)) for m in study.models})
print(sorted(m for m in ("torch", "torchvision", "timm", "own_models_parse") if m in sys.modules))
"""
    env = {**__import__("os").environ, "PYTHONPATH": str(REPO), "BEYOND_IMAGENET_CACHE": str(tmp_path / "cache")}
    for _ in range(2):  # the first may ask timm about vit_tiny (kept in the fact cache), none after
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
        assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout
    assert "'loader_sha256'" in out.stdout and "'num_classes'" in out.stdout and "'head'" in out.stdout


# --- num_classes and head: drop -------------------------------------------------------------------

def fine_tuned_checkpoint(path, name="convnext_atto", classes=10, seed=4):
    """A 'fine-tuned' timm checkpoint with a head of ``classes`` classes (seeded random weights)."""
    torch.manual_seed(seed)
    import timm

    model = timm.create_model(name, pretrained=False, num_classes=classes)
    torch.save({"model": model.state_dict(), "epoch": 9}, path)  # a training file's wrapper
    return model


def timm_entry(checkpoint, **extra):
    return {"source": "timm", "name": "convnext_atto", "pretrained": False, "checkpoint": str(checkpoint), **extra}


def test_a_ten_class_checkpoint_loads_its_head_and_head_drop_its_backbone(tmp_path):
    made = fine_tuned_checkpoint(tmp_path / "ft10.pth").eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = made(x)
    full = build_model(ModelSpec.from_config("ft", timm_entry(tmp_path / "ft10.pth", num_classes=10)))
    backbone = build_model(ModelSpec.from_config("bb", timm_entry(tmp_path / "ft10.pth", head="drop")))
    with torch.no_grad():
        logits, features = full.network(x)
        empty, backbone_features = backbone.network(x)
    assert logits.shape == (2, 10) and empty.shape == (2, 0)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(backbone_features, features, rtol=0, atol=0)
    assert ModelSpec.from_config("bb", timm_entry(tmp_path / "ft10.pth", head="drop")).features_only


def test_without_num_classes_or_head_drop_the_fine_tuned_file_is_refused_with_both_fixes(tmp_path):
    fine_tuned_checkpoint(tmp_path / "ft10.pth")
    for extra, found in (({}, "head.fc.weight: checkpoint (10, 320), model (1000, 320)"),
                         ({"features_only": True}, "unexpected key(s), first ['head.fc.weight', 'head.fc.bias']")):
        with pytest.raises(ModelError) as err:
            build_model(ModelSpec.from_config("m", timm_entry(tmp_path / "ft10.pth", **extra)))
        assert found in str(err.value)
        assert "set `num_classes:` to its number of classes" in str(err.value) and "`head: drop`" in str(err.value)


def _head_config(tmp_path, evaluations, **models):
    config = default_config()
    config["models"] = {"vit_sup": config["models"]["vit_sup"], **models}
    config["evaluations"] = {k: v for k, v in config["evaluations"].items() if k in evaluations}
    return config


def test_a_num_classes_model_is_refused_by_evaluations_of_imagenet_logits_naming_both(tmp_path):
    fine_tuned_checkpoint(tmp_path / "ft10.pth")
    config = _head_config(tmp_path, ("accuracy", "calibration", "transfer"),
                          ft=timm_entry(tmp_path / "ft10.pth", num_classes=10))
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    message = str(err.value)
    assert ("models.ft.num_classes: its 10 logits are classes of your own, but evaluations.accuracy scores "
            "ImageNet-1k logits on 'imagenet_val' (imagenet1k)") in message
    assert "evaluations.calibration scores ImageNet-1k logits on 'imagenet_r'" in message
    assert "`head: drop`" in message and "transfer" not in message.split("evaluations.")[-1].split(" ")[0]
    # in the feature evaluations only, it is welcome; its backbone (head: drop) anywhere
    study = Study(validate_config(_head_config(tmp_path, ("transfer", "cka"),
                                               ft=timm_entry(tmp_path / "ft10.pth", num_classes=10))))
    assert study.model_identity("ft")["num_classes"] == 10 and study.model_entry("ft")["num_classes"] == 10
    study = Study(validate_config(_head_config(tmp_path, ("accuracy", "transfer"),
                                               bb=timm_entry(tmp_path / "ft10.pth", head="drop"))))
    assert study.evaluation_models("accuracy") == ["vit_sup"] and study.model_evaluations("bb") == ["transfer"]
    assert study.model_identity("bb")["head"] == "drop" and study.model_identity("bb")["features_only"] is True


def test_on_a_folder_of_its_classes_only_the_num_classes_model_is_scored(tmp_path, caplog):
    """accuracy / calibration on a labelled folder of one's own classes score the models with a head of
    those classes; an ImageNet model is left out there (one warning), not extracted on it for them."""
    import logging

    fine_tuned_checkpoint(tmp_path / "ft10.pth")
    config = _head_config(tmp_path, ("accuracy", "calibration", "transfer"),
                          ft=timm_entry(tmp_path / "ft10.pth", num_classes=10))
    config["datasets"]["mine"] = {"kind": "labelled_folder", "source": "manual",
                                  "root": str(ten_class_folder(tmp_path / "mine"))}
    config["evaluations"]["accuracy"]["datasets"] = ["mine"]
    config["evaluations"]["calibration"]["datasets"] = ["mine"]
    with caplog.at_level(logging.WARNING, logger="beyond_imagenet.study"):
        study = Study(validate_config(config))
    assert ("evaluations.accuracy: vit_sup (ImageNet-1k logits) not scored on mine (classes of your own)"
            in caplog.text)
    assert study.evaluation_models("accuracy") == ["ft"] and study.evaluation_pairs("accuracy") == [("ft", "mine")]
    assert study.model_evaluations("vit_sup") == ["transfer"]
    assert study.stored_arrays("ft", "mine") == ["logits"]
    assert not any(d == "mine" for items in study.extraction_plan("vit_sup").values() for d, _ in items)
    # a head of another number of classes than the folder's is refused naming both
    config["models"]["ft"]["num_classes"] = 9
    with pytest.raises(ConfigError, match=r"models.ft.num_classes: 9 classes, but 'mine' of evaluations.accuracy "
                                          r"has 10"):
        validate_config(copy.deepcopy(config))
    # without a model of its classes, the folder has nothing to score in accuracy
    del config["models"]["ft"]
    with pytest.raises(ConfigError, match=r"evaluations.accuracy.datasets: 'mine' \(labelled_folder, own\) cannot "
                                          r"be used for accuracy by any model of this study"):
        validate_config(config)


@pytest.mark.parametrize("entry, found", [
    ({"source": "open_clip", "name": "tiny-vit-clip", "pretrained": False, "num_classes": 10},
     "models.m.num_classes: an open_clip model's logits are its zero-shot ImageNet head"),
    ({"source": "timm", "name": "convnext_atto", "num_classes": 10},
     "models.m.num_classes: the pretrained weights' head has other classes"),
    ({"source": "timm", "name": "convnext_atto", "pretrained": False, "num_classes": 10, "head": "drop"},
     "models.m.num_classes: a features-only model"),
    ({"source": "open_clip", "name": "tiny-vit-clip", "pretrained": False, "head": "drop"},
     "models.m.head: open_clip weights have no classifier to drop"),
])
def test_heads_where_they_mean_nothing_are_refused(tmp_path, entry, found):
    config = _head_config(tmp_path, ("transfer",), m=entry)
    with pytest.raises(ConfigError, match=found.replace("(", r"\(").replace(")", r"\)")):
        validate_config(config)


# --- open_clip from a local folder ------------------------------------------------------------------

def local_dir_model(folder):
    """tiny-vit-clip saved in the layout open_clip reads with `local-dir:` (and writes for the hub:
    open_clip.push_to_hf_hub.save_config_for_hf + the weights file)."""
    import open_clip
    from open_clip.push_to_hf_hub import save_config_for_hf

    from beyond_imagenet.models import _register_bundled_open_clip_configs

    _register_bundled_open_clip_configs()
    torch.manual_seed(11)
    model = open_clip.create_model("tiny-vit-clip")
    folder.mkdir()
    save_config_for_hf(model, folder / "open_clip_config.json", open_clip.get_model_config("tiny-vit-clip"))
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    return model.eval()


def test_a_local_dir_open_clip_model_loads_its_folders_weights(tmp_path):
    model = local_dir_model(tmp_path / "tiny-clip")
    name = f"local-dir:{tmp_path / 'tiny-clip'}"
    config = _head_config(tmp_path, ("accuracy", "transfer"), mine={"source": "open_clip", "name": name})
    study = Study(validate_config(config))  # no pretrained tag needed: the folder has the weights
    spec = study.models["mine"]
    before = study.head_identity("mine")["local_dir_sha256"]
    assert spec.weights_tag == name and len(before) == 64
    from beyond_imagenet.models import build_zero_shot_head

    head = build_zero_shot_head(spec, 1, torch.device("cpu"))  # its own text tower and tokenizer
    assert head.shape == (128, 1000) and torch.isfinite(head).all()
    loaded = build_model(spec, head=head)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        _, features = loaded.network(x)
        torch.testing.assert_close(features, model.encode_image(x), rtol=0, atol=0)
    from beyond_imagenet.weights import cached_files, weight_source

    assert cached_files(weight_source(spec))[0].name == "open_clip_pytorch_model.bin"
    weights = tmp_path / "tiny-clip" / "open_clip_pytorch_model.bin"
    torch.save({k: v + 1 for k, v in model.state_dict().items()}, weights)
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # a coarse clock
    assert Study(validate_config(_head_config(tmp_path, ("accuracy",), mine={"source": "open_clip", "name": name}))
                 ).head_identity("mine")["local_dir_sha256"] != before
    (tmp_path / "tiny-clip" / "open_clip_config.json").unlink()
    with pytest.raises(ConfigError, match=r"models.mine.name: local-dir:.*has no open_clip_config.json"):
        validate_config(_head_config(tmp_path, ("accuracy",), mine={"source": "open_clip", "name": name}))


# --- through the workflow -----------------------------------------------------------------------------

def ten_class_folder(root):
    """A labelled folder of 10 classes of one's own: ten of the project's labelled photographs, each a
    class named after its ImageNet index (``class_<index>``), the photograph and a seeded augmented copy."""
    import numpy as np
    from PIL import Image

    from beyond_imagenet.datasets.photos import augment, labelled_photos

    rng = np.random.default_rng(0)
    chosen = {}
    for path, label in labelled_photos():
        chosen.setdefault(label, path)
    for label, path in sorted(chosen.items())[:10]:
        folder = root / f"class_{label:04d}"
        folder.mkdir(parents=True)
        with Image.open(path) as image:
            image = image.convert("RGB")
            image.save(folder / "a.jpg", quality=90)
            augment(image, rng).save(folder / "b.jpg", quality=90)
    return root


@pytest.mark.workflow
def test_a_python_model_and_a_ten_class_checkpoint_through_the_workflow(tmp_path):
    """The torchvision loader (weights from a file), a 10-class fine-tuned checkpoint (num_classes) and
    the same file's backbone (head: drop) through extraction, the linear probes and CKA, and accuracy and
    calibration of the 10-class model on a labelled folder of its classes; editing the loader's code
    replans its jobs only."""
    (tmp_path / "own_models_wf.py").write_text(TORCHVISION_LOADER)
    import torchvision

    torch.manual_seed(2)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "resnet18.pth")
    fine_tuned_checkpoint(tmp_path / "ft10.pth")
    config = default_config()
    config["models"] = {
        "resnet_py": {"source": "python", "loader": "own_models_wf:resnet18", "name": "resnet18",
                      "checkpoint": str(tmp_path / "resnet18.pth"), "label": "ResNet-18 (torchvision)"},
        "ft10": timm_entry(tmp_path / "ft10.pth", num_classes=10, label="ConvNeXt-atto fine-tuned (10 classes)"),
        "ft10_backbone": timm_entry(tmp_path / "ft10.pth", head="drop"),
    }
    datasets = config["datasets"]
    ten_classes = ten_class_folder(tmp_path / "mine")
    config["datasets"] = {"imagenet_val": {**datasets["imagenet_val"], "num_classes": 4, "images_per_class": 2},
                          "vtab": {**datasets["vtab"], "tasks": ["dtd"],
                                   "split_sizes": {"train800": 8, "val200": 4, "test": 8}},
                          "mine": {"kind": "labelled_folder", "source": "manual", "root": str(ten_classes)}}
    config["evaluations"] = {"accuracy": {"datasets": ["mine"]},
                             "calibration": {"datasets": ["mine"], "n_bins": 5},
                             "transfer": {"datasets": ["vtab"], "probe": {"device": "cpu"}},
                             "cka": {"datasets": ["imagenet_val"], "n_images": 8, "batch_size": 4,
                                     "cross_pairs": "all"}}
    config["resources_dir"] = str(tmp_path / "resources")
    configfile = write_config(tmp_path / "study.yaml", config)
    jobs = run_snakemake(configfile, tmp_path)
    # (each model's CKA pass runs in its extraction job)
    assert jobs["extract_outputs"] == 3 and jobs["probe_transfer"] == 3 and "compute_cka_pass" not in jobs
    results = tmp_path / "results"
    extracted = results / "extracted"
    with h5py.File(extracted / "resnet_py" / "vtab-dtd-test.h5", "r") as f:
        assert f["features"].shape == (8, 512)
        attrs = dict(f.attrs)
        assert attrs["model_source"] == "python" and attrs["loader"] == "own_models_wf:resnet18"
        assert len(attrs["loader_sha256"]) == 64 and len(attrs["checkpoint_sha256"]) == 64
    with h5py.File(extracted / "ft10" / "vtab-dtd-test.h5", "r") as f, \
            h5py.File(extracted / "ft10_backbone" / "vtab-dtd-test.h5", "r") as g:
        assert f.attrs["num_classes"] == 10 and g.attrs["head"] == "drop"
        assert f["features"].shape == (8, 320)
        assert (f["features"][:] == g["features"][:]).all()  # the same backbone, with or without its head
    # Accuracy and calibration on the folder of its 10 classes: the 10-class model only (the others have
    # ImageNet-1k logits, or none), computed from its 10 logits.
    with h5py.File(extracted / "ft10" / "mine.h5", "r") as f:
        logits, labels = f["logits"][:], f["labels"][:]
    assert logits.shape == (20, 10) and sorted(set(labels)) == list(range(10))
    accuracy = pd.read_csv(results / "metrics" / "accuracy.csv")
    assert set(accuracy["model"]) == {"ft10"}
    top1 = accuracy.loc[(accuracy["dataset"] == "mine") & (accuracy["metric"] == "top1"), "value"].item()
    assert top1 == pytest.approx(float((logits.argmax(1) == labels).mean()))
    assert set(pd.read_csv(results / "metrics" / "calibration.csv")["model"]) == {"ft10"}
    assert not (extracted / "resnet_py" / "mine.h5").exists() and not (extracted / "ft10_backbone" / "mine.h5").exists()
    transfer = pd.read_csv(results / "metrics" / "transfer.csv")
    assert set(transfer["model"]) == {"resnet_py", "ft10", "ft10_backbone"}
    assert set(pd.read_csv(results / "metrics" / "cka.csv")["model"]) >= {"resnet_py", "ft10", "ft10_backbone"}
    # The loader's code is part of its identity: an edit replans its jobs, not the others'.
    assert dry_run_jobs(configfile, tmp_path) == []
    (tmp_path / "own_models_wf.py").write_text(TORCHVISION_LOADER + "\n# a comment changes the file's hash\n")
    replanned = {(rule, w.get("model")) for rule, w in dry_run_jobs(configfile, tmp_path)}
    assert ("extract_outputs", "resnet_py") in replanned
    assert not {m for _, m in replanned} & {"ft10", "ft10_backbone"}

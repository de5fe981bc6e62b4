"""Model and dataset registries: building models from config entries, weights, readers, manifests."""

import numpy as np
import open_clip
import pytest
import torch

from beyond_imagenet import classes
from beyond_imagenet.datasets import DatasetError, resolve_dataset
from beyond_imagenet.datasets.generate import generate, imagenet_val_file_names
from beyond_imagenet.datasets.manifest import build_manifest
from beyond_imagenet.datasets.readers import read_samples
from beyond_imagenet.models import ModelError, ModelSpec, build_model, build_zero_shot_head


def spec(**entry):
    return ModelSpec.from_config("m", {"pretrained": False, **entry})


def test_spec_defaults_from_source():
    clip = spec(source="open_clip", name="tiny-vit-clip")
    sup = spec(source="timm", name="convnext_atto")
    assert clip.paradigm == "clip" and clip.needs_zero_shot_head
    assert sup.paradigm == "supervised" and not sup.needs_zero_shot_head
    assert sup.family == "convnet" and clip.family == "vit"
    assert sup.weights_tag == "random:seed=0"
    assert spec(source="timm", name="x", pretrained="fb_in1k").weights_tag == "pretrained:fb_in1k"


def test_timm_random_model_paper_protocol_and_seed():
    a = build_model(spec(source="timm", name="vit_tiny_patch16_224", seed=3))
    b = build_model(spec(source="timm", name="vit_tiny_patch16_224", seed=3))
    c = build_model(spec(source="timm", name="vit_tiny_patch16_224", seed=4))
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        logits, features = a.network(x)
        assert logits.shape == (2, 1000) and features.shape == (2, 192)
        torch.testing.assert_close(logits, b.network(x)[0])
        assert not torch.allclose(logits, c.network(x)[0])
    record = a.preprocessing
    assert record["protocol"] == "paper" and record["interpolation"] == "bilinear"
    assert record["crop_pct"] == pytest.approx(0.875) and tuple(record["mean"]) == (0.485, 0.456, 0.406)
    assert "Resize(size=256" in record["transform"] and "CenterCrop(size=(224, 224))" in record["transform"]


def test_timm_features_are_pre_logits():
    loaded = build_model(spec(source="timm", name="convnext_atto"))
    model = loaded.network.model
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        logits, features = loaded.network(x)
        torch.testing.assert_close(model.get_classifier()(features), logits)


def test_checkpoint_loaded_with_weights_only(tmp_path):
    source = build_model(spec(source="timm", name="convnext_atto", seed=7)).network.model
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": source.state_dict()}, path)
    loaded = build_model(spec(source="timm", name="convnext_atto", seed=0, checkpoint=str(path)))
    for key, value in source.state_dict().items():
        torch.testing.assert_close(loaded.network.model.state_dict()[key], value)
    assert loaded.spec.weights_tag == "checkpoint:ckpt.pth"


def test_replacing_a_checkpoint_under_the_same_name_makes_its_outputs_stale(tmp_path):
    """The cache key of a checkpoint model is the file's content, not its name."""
    import time

    import yaml

    from beyond_imagenet.extract import StaleOutputError, check_attrs
    from beyond_imagenet.heads import write_head
    from beyond_imagenet.study import Study, validate_config
    from conftest import default_config

    path = tmp_path / "finetuned.pth"
    torch.save(build_model(spec(source="timm", name="convnext_atto", seed=1)).network.model.state_dict(), path)
    config = default_config()
    config["models"]["convnet_sup"]["checkpoint"] = str(path)
    study = Study(validate_config(yaml.safe_load(yaml.safe_dump(config))))
    before = study.model_identity("convnet_sup")
    assert len(before["checkpoint_sha256"]) == 64
    write_head(tmp_path / "old.h5", torch.zeros(1), before)  # any file recording the old identity
    time.sleep(0.01)
    torch.save(build_model(spec(source="timm", name="convnext_atto", seed=2)).network.model.state_dict(), path)
    after = Study(validate_config(yaml.safe_load(yaml.safe_dump(config)))).model_identity("convnet_sup")
    assert after["weights"] == before["weights"] == "checkpoint:finetuned.pth"
    assert after["checkpoint_sha256"] != before["checkpoint_sha256"]
    with pytest.raises(StaleOutputError, match="checkpoint_sha256"):
        check_attrs(tmp_path / "old.h5", after)


class Payload:
    def __reduce__(self):
        return (print, ("code ran",))


def test_checkpoint_with_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "extra": Payload()}, path)
    with pytest.raises(ModelError, match="weights_only"):  # through the path a study's checkpoint: takes
        build_model(spec(source="timm", name="convnext_atto", checkpoint=str(path)))


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    path = tmp_path / "vit.pth"
    torch.save(build_model(spec(source="timm", name="vit_tiny_patch16_224")).network.model.state_dict(), path)
    with pytest.raises(ModelError, match="does not match"):
        build_model(spec(source="timm", name="convnext_atto", checkpoint=str(path)))


def test_open_clip_zero_shot_head_and_logits():
    clip = spec(source="open_clip", name="tiny-vit-clip")
    head = build_zero_shot_head(clip, 1, torch.device("cpu"))
    assert head.shape == (128, 1000)
    torch.testing.assert_close(head.norm(dim=0), torch.ones(1000), atol=1e-4, rtol=0)
    loaded = build_model(clip, head=head, logit_scale=100.0)
    assert "Normalize(mean=(0.48145466" in loaded.preprocessing["transform"]  # OpenAI mean, not ImageNet's
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        logits, features = loaded.network(x)
        expected = 100.0 * torch.nn.functional.normalize(loaded.network.model.encode_image(x), dim=-1) @ head
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-3)
    assert features.shape == (2, 128)


def test_open_clip_needs_a_tag():
    with pytest.raises(ModelError, match="pretrained tag"):
        build_zero_shot_head(ModelSpec.from_config("c", {"source": "open_clip", "name": "ViT-B-16"}), 1,
                             torch.device("cpu"))


def test_open_clip_classnames_and_templates_come_from_open_clip():
    assert len(open_clip.IMAGENET_CLASSNAMES) == 1000 and len(open_clip.OPENAI_IMAGENET_TEMPLATES) == 80


# ---------------------------------------------------------------------------------- datasets
def test_unknown_kind_names_the_key():
    with pytest.raises(DatasetError, match="datasets.foo.kind"):
        resolve_dataset("foo", {"kind": "nope", "source": "generate"})


def test_generated_val_uses_real_names_and_labels(tmp_path):
    ds = resolve_dataset("imagenet_val", {"kind": "imagenet_val", "source": "generate", "num_classes": 5,
                                          "images_per_class": 2}, str(tmp_path))
    generate(ds, ds.dataset_dir)
    samples = read_samples(ds.reader, ds.root, ds.class_space)
    assert len(samples) == 10
    names = imagenet_val_file_names()
    for sid, label in samples:
        wnid, file_name = sid.split("/")
        assert classes.imagenet_wnids()[label] == wnid
        assert file_name in names[label], "generated file names must be the real val names of that class"


def test_generated_imagenet_r_labels_are_in_the_200_space(tmp_path):
    ds = resolve_dataset("r", {"kind": "imagenet_r", "source": "generate", "num_classes": 3}, str(tmp_path))
    generate(ds, ds.dataset_dir)
    samples = read_samples(ds.reader, ds.root, ds.class_space)
    r_wnids = classes.imagenet_r_wnids()
    assert [r_wnids[label] for _, label in samples] == [sid.split("/")[0] for sid, _ in samples]
    # labels index the 200 R classes, not the 1000 ImageNet ones (the classes drawn follow the photos)
    in1k = classes.imagenet_wnids()
    assert all(0 <= label < 200 for _, label in samples)
    assert any(label != in1k.index(sid.split("/")[0]) for sid, label in samples)
    assert all(sid.split("/")[1].split("_")[0] in ("art", "cartoon", "deviantart", "embroidery", "graffiti",
               "graphic", "misc", "origami", "painting", "sculpture", "sketch", "sticker", "tattoo", "toy",
               "videogame") for sid, _ in samples)


def test_unexpected_class_folder_is_named(tmp_path):
    (tmp_path / "n01440764").mkdir()
    (tmp_path / "n01440764" / "a.JPEG").write_bytes(b"x")
    (tmp_path / "holiday_photos").mkdir()
    with pytest.raises(DatasetError, match="holiday_photos"):
        read_samples("wnid_folders", tmp_path, "imagenet1k")


def test_manual_dataset_with_wrong_count_says_what_to_do(tmp_path):
    root = tmp_path / "val"
    (root / "n01440764").mkdir(parents=True)
    (root / "n01440764" / "ILSVRC2012_val_00000293.JPEG").write_bytes(b"x")
    ds = resolve_dataset("imagenet_val", {"kind": "imagenet_val", "source": "manual", "root": str(root)})
    with pytest.raises(DatasetError, match="(?s)holds 1 files, expected 50000.*valprep.sh"):
        build_manifest(ds)


def test_manifest_fingerprint_tracks_the_files(tmp_path):
    ds = resolve_dataset("r", {"kind": "imagenet_r", "source": "generate", "num_classes": 2}, str(tmp_path))
    generate(ds, ds.dataset_dir)
    first = build_manifest(ds)
    assert first["n_images"] == 2 and first["class_space"] == "imagenet_r"
    extra = ds.root / first["samples"][0][0].split("/")[0] / "toy_9.jpg"
    extra.write_bytes((ds.root / first["samples"][0][0]).read_bytes())
    second = build_manifest(ds)
    assert second["n_images"] == 3 and second["fingerprint"] != first["fingerprint"]
    assert np.all([s in second["samples"] for s in first["samples"]])


def test_val_tar_is_reorganised_into_wnid_folders(tmp_path):
    import io
    import tarfile

    from beyond_imagenet.datasets.imagenet_val import reorganise_val_tar

    names = imagenet_val_file_names()
    chosen = {names[0][0]: 0, names[999][1]: 999}
    archive = tmp_path / "ILSVRC2012_img_val.tar"
    with tarfile.open(archive, "w") as tar:
        for name in chosen:
            info = tarfile.TarInfo(name)
            info.size = 3
            tar.addfile(info, io.BytesIO(b"jpg"))
    # Only 2 of the 50,000 files: refused, and nothing is left behind.
    with pytest.raises(DatasetError, match="2 val images found, expected 50000"):
        reorganise_val_tar(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.tmp*"))
    with tarfile.open(archive, "a") as tar:
        info = tarfile.TarInfo("README.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(DatasetError, match="unexpected member 'README.txt'"):
        reorganise_val_tar(archive, tmp_path / "out")


def test_val_tar_layout_and_labels(tmp_path, monkeypatch):
    """With the label table cut down to the archive's files, the wnid folders are right."""
    import io
    import tarfile

    from beyond_imagenet.datasets import imagenet_val

    names = imagenet_val_file_names()
    subset = {0: names[0][:2], 999: names[999][:1]}
    monkeypatch.setattr(imagenet_val, "imagenet_val_file_names", lambda: subset)
    archive = tmp_path / "val.tar"
    with tarfile.open(archive, "w") as tar:
        for label, files in subset.items():
            for name in files:
                info = tarfile.TarInfo(name)
                info.size = 3
                tar.addfile(info, io.BytesIO(b"jpg"))
    assert imagenet_val.reorganise_val_tar(archive, tmp_path / "out") == 3
    samples = read_samples("wnid_folders", tmp_path / "out" / "val", "imagenet1k")
    assert sorted(samples) == sorted([(f"n01440764/{n}", 0) for n in subset[0]] + [(f"n15075141/{subset[999][0]}", 999)])


def test_native_protocol_uses_the_weights_own_data_config():
    loaded = build_model(spec(source="timm", name="vit_tiny_patch16_224"), protocol="native")
    record = loaded.preprocessing
    # timm's pretrained config for this model: bicubic, crop_pct 0.9, mean/std 0.5 (not ImageNet's).
    assert record["protocol"] == "native" and record["interpolation"] == "bicubic"
    assert record["crop_pct"] == pytest.approx(0.9) and tuple(record["mean"]) == (0.5, 0.5, 0.5)


def test_paper_models_are_recognised_by_their_weights():
    from beyond_imagenet.models import ModelSpec

    def key(**entry):
        return ModelSpec.from_config("mine", entry).paper_key

    assert key(source="timm", name="deit3_base_patch16_224", pretrained="fb_in22k_ft_in1k") == "vit_sup"
    assert key(source="timm", name="convnext_base", pretrained="fb_in22k_ft_in1k") == "convnext_sup"
    assert key(source="open_clip", name="ViT-B-16", pretrained="laion400m_e31") == "vit_clip"
    assert key(source="open_clip", name="convnext_base", pretrained="laion400m_s13b_b51k") == "convnext_clip"
    # Other weights of the same architecture are not the paper's model ...
    assert key(source="timm", name="convnext_base", pretrained="fb_in1k") is None
    assert key(source="open_clip", name="ViT-B-16", pretrained=False) is None
    # ... unless the study says so.
    assert key(source="timm", name="convnext_base", pretrained=False, paper_key="convnext_sup") == "convnext_sup"


def test_imagenet_val_files_in_the_wrong_class_folder_are_named(tmp_path):
    ds = resolve_dataset("val", {"kind": "imagenet_val", "source": "generate", "num_classes": 3,
                                 "images_per_class": 2}, str(tmp_path))
    generate(ds, ds.dataset_dir)
    assert len(build_manifest(ds)["samples"]) == 6
    first, second = sorted(p for p in ds.root.iterdir())[:2]
    moved = sorted(first.iterdir())[0]
    moved.rename(second / moved.name)  # a reorganisation that put a file in the wrong class
    (second / "ILSVRC2012_val_99999999.JPEG").write_bytes(b"")
    with pytest.raises(DatasetError) as err:
        build_manifest(ds)
    text = str(err.value)
    assert f"{second.name}/{moved.name}: belongs in {first.name}/" in text
    assert "ILSVRC2012_val_99999999.JPEG: not an ImageNet val file name" in text and "2 file(s)" in text


def test_class_folders_with_sub_folders_are_refused_not_silently_skipped(tmp_path):
    ds = resolve_dataset("r", {"kind": "imagenet_r", "source": "generate", "num_classes": 2,
                               "images_per_class": 1}, str(tmp_path))
    generate(ds, ds.dataset_dir)
    first = sorted(ds.root.iterdir())[0]
    (first / "more").mkdir()
    (first / "more" / "art_9.jpg").write_bytes(b"x")
    with pytest.raises(DatasetError, match=f"{first.name}/more/"):
        build_manifest(ds)

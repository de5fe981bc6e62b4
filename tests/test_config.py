"""Study config validation: every bad key is named, defaults are filled, names cross-checked."""

import copy

import pytest
import yaml

from beyond_imagenet.study import ConfigError, Study, load_config, validate_config
from conftest import REPO, default_config


def check(config):
    return validate_config(copy.deepcopy(config))


def test_default_and_paper_configs_are_valid_and_get_defaults():
    config = load_config(REPO / "config.yaml")
    assert config["extraction"]["on_bad_image"] == "error"
    assert config["extraction"]["features_dtype"] == "float16"
    assert config["models"]["vit_sup"]["pretrained"] is False
    paper = load_config(REPO / "studies" / "paper.yaml")
    assert paper["zero_shot"] == {"templates": "all", "logit_scale": 100.0}
    assert set(Study(paper).models) == {"vit_sup", "convnext_sup", "vit_clip", "convnext_clip"}


@pytest.mark.parametrize(
    "mutate, key",
    [
        (lambda c: c.update(colour="red"), "'colour' was unexpected"),
        (lambda c: c["models"]["vit_sup"].update(colour="red"), "models.vit_sup: Additional properties"),
        (lambda c: c["extraction"].update(batch_size="big"), "extraction.batch_size: 'big' is not of type 'integer'"),
        (lambda c: c["models"]["vit_sup"].update(source="keras"), "models.vit_sup.source"),
        (lambda c: c["evaluations"]["calibration"].update(n_bins=0), "evaluations.calibration.n_bins"),
        (lambda c: c["evaluations"].update(astrology={}), "'astrology' was unexpected"),
        (lambda c: c["evaluations"]["calibration"].update(datasets=["imagenet_v9"]),
         "evaluations.calibration.datasets: unknown dataset 'imagenet_v9'"),
        (lambda c: c["datasets"]["imagenet_r"].update(kind="imagenet_q"), "datasets.imagenet_r.kind"),
        (lambda c: c["datasets"]["imagenet_r"].update(source="torrent"), "datasets.imagenet_r.source"),
        (lambda c: c["zero_shot"].update(templates=81), "zero_shot.templates"),
        (lambda c: c["models"]["vit_clip"].update(pretrained=True), "models.vit_clip.pretrained"),
        (lambda c: c["models"]["vit_clip"].update(checkpoint="/nonexistent.pt"), "models.vit_clip.checkpoint"),
        (lambda c: c["evaluations"]["accuracy"].update(datasets=["imagenet_r"]),
         "'imagenet_r' (imagenet_r, imagenet_r) cannot be used for accuracy"),
        (lambda c: c["datasets"]["imagenet_val"].update(source="manual", root="/x", archive="/y.tar"),
         "datasets.imagenet_val: give `root:`"),
        (lambda c: c["models"]["vit_clip"].update(name="ViT-L-14-336"),
         "models.vit_clip.name: ViT-L-14-336 is built at 336 px"),
        (lambda c: c["evaluations"]["imagenet_x"].update(datasets=["imagenet_v2"]),
         "evaluations.imagenet_x.datasets: 'imagenet_v2' is a imagenet_v2 dataset"),
        (lambda c: (c["datasets"].update(c_all={"kind": "imagenet_c_all", "source": "generate"}),
                    c["evaluations"]["robustness"]["datasets"].append("c_all")),
         "['imagenet_c', 'c_all'] are all benchmark 'imagenet_c'"),
    ],
)
def test_bad_config_names_the_key(mutate, key):
    config = default_config()
    mutate(config)
    with pytest.raises(ConfigError) as err:
        check(config)
    assert key in str(err.value)


def test_all_errors_reported_at_once():
    config = default_config()
    config["extraction"]["batch_size"] = -1
    config["extraction"]["num_workers"] = "many"
    with pytest.raises(ConfigError) as err:
        check(config)
    assert "extraction.batch_size" in str(err.value) and "extraction.num_workers" in str(err.value)


def test_load_config_names_the_file(tmp_path):
    path = tmp_path / "study.yaml"
    config = default_config()
    config["bogus"] = 1
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=str(path)):
        load_config(path)


def test_study_paths_and_cache_keys():
    study = Study(load_config(REPO / "config.yaml"))
    assert study.output("vit_sup", "imagenet_val") == "results/extracted/vit_sup/imagenet_val.h5"
    assert study.output("vit_sup", "imagenet_val", "scale-2") == "results/extracted/vit_sup/imagenet_val@scale-2.h5"
    manifest = {"fingerprint": "abc", "n_images": 3}
    key = study.expected_attrs("vit_clip", "imagenet_r", manifest)
    assert key["weights"] == "random:seed=0" and key["protocol"] == "paper"
    assert key["zero_shot_templates"] == "2" and key["logit_scale"] == 100.0
    assert "zero_shot_templates" not in study.expected_attrs("vit_sup", "imagenet_r", manifest)

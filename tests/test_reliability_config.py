"""Bad configs stop the workflow before any job runs, naming the key (issue #7, workflow level).

tests/test_config.py checks validate_config itself; here each bad study goes through Snakemake,
which must fail while parsing the Snakefile: no job, nothing under results/ or resources/.
"""

from __future__ import annotations

import pytest

from beyond_imagenet.datasets import load_catalog, resolve_dataset
from conftest import default_config, run_snakemake, write_config

pytestmark = pytest.mark.workflow


@pytest.mark.parametrize(
    "mutate, named",
    [
        (lambda c: c["models"]["vit_sup"].update(source="keras"), "models.vit_sup.source"),  # unknown model source
        (lambda c: c["models"]["vit_sup"].update(colour="red"), "models.vit_sup: Additional properties"),
        (lambda c: c["datasets"]["imagenet_r"].update(kind="imagenet_q"), "datasets.imagenet_r.kind: unknown dataset kind"),
        (lambda c: c["evaluations"]["calibration"].update(datasets=["imagenet_v9"]),
         "evaluations.calibration.datasets: unknown dataset 'imagenet_v9'"),
        (lambda c: c["evaluations"].update(astrology={"datasets": ["imagenet_r"]}), "'astrology' was unexpected"),
        (lambda c: c["extraction"].update(batch_size="big"), "extraction.batch_size: 'big' is not of type 'integer'"),
        (lambda c: c["datasets"]["imagenet_r"].update(num_classes=2.5), "datasets.imagenet_r.num_classes"),
    ],
    ids=["unknown-model-source", "unknown-model-key", "unknown-dataset-kind", "unknown-dataset-name",
         "unknown-evaluation", "wrong-type", "wrong-type-dataset"],
)
def test_bad_study_fails_before_any_job(tiny_config, tmp_path, mutate, named):
    mutate(tiny_config)
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(Exception) as err:
        run_snakemake(write_config(tmp_path / "bad.yaml", tiny_config), work)
    assert "invalid study config" in str(err.value) and named in str(err.value)
    assert not (work / "results").exists() and not (work / "resources").exists()


def test_unknown_architecture_fails_before_any_job(tiny_config, tmp_path):
    tiny_config["models"]["vit_sup"]["name"] = "vit_no_such_model_patch99"
    with pytest.raises(Exception) as err:
        run_snakemake(write_config(tmp_path / "bad.yaml", tiny_config), tmp_path, dryrun=True)
    assert "models.vit_sup.name" in str(err.value)


def test_a_study_url_with_its_own_sha256_is_another_file():
    """A mirror (url only, or the catalogue's sha256) keeps the catalogue's checks; another file does not."""
    info = load_catalog()["imagenet_r"]
    mirror = resolve_dataset("r", {"kind": "imagenet_r", "source": "download", "url": "file:///m/imagenet-r.tar"})
    assert mirror.download["size"] == info["download"]["size"]
    assert mirror.download["sha256"] == info["download"]["sha256"] and mirror.expected_images == 30000
    same = resolve_dataset("r", {"kind": "imagenet_r", "source": "download", "url": "file:///m/imagenet-r.tar",
                                 "sha256": info["download"]["sha256"]})
    assert same.download["size"] == info["download"]["size"] and same.expected_images == 30000
    subset = resolve_dataset("r", {"kind": "imagenet_r", "source": "download", "url": "file:///m/imagenet-r.tar",
                                   "sha256": "ab" * 32})
    assert subset.download == {"url": "file:///m/imagenet-r.tar", "sha256": "ab" * 32}
    assert subset.expected_images is None


@pytest.mark.parametrize("change, key", [
    (lambda c, m: c["models"]["vit_sup"].update(seed=1), "weights"),
    (lambda c, m: c["models"]["vit_sup"].update(name="vit_small_patch16_224"), "model_arch"),
    (lambda c, m: c.update(preprocessing="native"), "protocol"),
    (lambda c, m: m.update(n_images=m["n_images"] + 1), "n_manifest"),
    (lambda c, m: m.update(fingerprint="another image list"), "manifest_fingerprint"),
    (lambda c, m: c["evaluations"]["robustness"].update(imagenet_c_recrop=True), "input_transform"),
])
def test_an_output_made_for_other_weights_preprocessing_or_images_is_refused(tmp_path, change, key):
    """What the metrics check before using a cached output (Study.expected_attrs): each part of the
    identity, changed alone, makes the file stale, and the error names that key."""
    import copy

    import torch

    from beyond_imagenet.extract import StaleOutputError, check_attrs
    from beyond_imagenet.heads import write_head
    from beyond_imagenet.study import Study, validate_config

    config = validate_config(default_config())
    manifest = {"fingerprint": "f" * 64, "n_images": 75}
    path = tmp_path / "imagenet_c.h5"
    write_head(path, torch.zeros(1), Study(config).expected_attrs("vit_sup", "imagenet_c", manifest))
    check_attrs(path, Study(config).expected_attrs("vit_sup", "imagenet_c", manifest))  # the same study: reused
    other, other_manifest = copy.deepcopy(config), dict(manifest)
    change(other, other_manifest)
    with pytest.raises(StaleOutputError, match=f"{key}: file has"):
        check_attrs(path, Study(validate_config(other)).expected_attrs("vit_sup", "imagenet_c", other_manifest))

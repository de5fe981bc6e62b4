"""extraction.split (issue 22 item 5): one dataset's extraction in K part jobs and one merge job.

Guards: the merged file is byte-identical to the unsplit extraction's (and so is its key); each part
is resumable like a whole extraction; a finished file is reused by every part; missing or
inconsistent parts are named; bad configs are refused naming the key; the plan takes a split
dataset out of its group; the workflow's split and unsplit runs write the same bytes.
"""

import hashlib
import json

import pytest
from test_extract import TRANSFORM, TinyNet, make_images

from beyond_imagenet.extract import (
    PartsMissingError,
    extract,
    extract_part,
    merge_parts,
    part_shards,
    split_folder,
)

ATTRS = {"model": "tiny", "dataset": "toy"}
KW = {"batch_size": 4, "num_workers": 0, "shard_size": 8, "progress": False}  # 8 images a shard


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def unsplit(root, samples, out, **kw):
    return extract(TinyNet(), TRANSFORM, root, samples, out, ATTRS, reuse=True, **{**KW, **kw})


def split(root, samples, out, parts, nets=None, **kw):
    records = [extract_part((nets or {}).get(k) or TinyNet(), TRANSFORM, root, samples, out, ATTRS, part=k,
                            parts=parts, **{**KW, **kw}) for k in range(1, parts + 1)]
    records = [json.loads(json.dumps(r)) for r in records]  # as the part jobs pass them: JSON
    reused = merge_parts(records, samples, out, ATTRS, on_bad_image=kw.get("on_bad_image", "error"), root=root)
    return records, reused


def test_part_shards_are_contiguous_disjoint_and_cover_the_dataset():
    for n, parts in [(20, 1), (20, 2), (20, 3), (20, 7), (1, 3), (100, 4)]:
        ranges = [part_shards(n, 4, 8, k, parts) for k in range(1, parts + 1)]
        assert ranges[0][0] == 0 and ranges[-1][1] == -(-n // 8)
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
        assert max(e - s for s, e in ranges) - min(e - s for s, e in ranges) <= 1
    with pytest.raises(ValueError, match="parts are numbered 1 to 3"):
        part_shards(20, 4, 8, 0, 3)


@pytest.mark.parametrize("parts", [2, 3, 5])  # 3 shards of 8 images: 5 parts leave 2 empty
@pytest.mark.parametrize("on_bad_image", ["error", "skip"])
def test_split_extraction_is_byte_identical_to_unsplit(tmp_path, parts, on_bad_image):
    samples = make_images(tmp_path / "data")
    if on_bad_image == "skip":  # an unreadable image in the second part: recorded the same way
        (tmp_path / "data" / samples[9][0]).write_bytes(b"not an image")
    a = unsplit(tmp_path / "data", samples, tmp_path / "a" / "toy.h5", on_bad_image=on_bad_image)
    b = tmp_path / "b" / "toy.h5"
    if parts == 5:
        from beyond_imagenet.extract import empty_part_record

        records = [extract_part(TinyNet(), TRANSFORM, tmp_path / "data", samples, b, ATTRS, part=k, parts=parts,
                                on_bad_image=on_bad_image, **KW)
                   if part_shards(20, 4, 8, k, parts)[0] < part_shards(20, 4, 8, k, parts)[1]
                   else empty_part_record(b, k, parts, 20, 4, 8) for k in range(1, parts + 1)]
        assert sum(1 for r in records if r.get("empty")) == 2
        assert merge_parts(records, samples, b, ATTRS, on_bad_image=on_bad_image, root=tmp_path / "data") is False
    else:
        _, reused = split(tmp_path / "data", samples, b, parts, on_bad_image=on_bad_image)
        assert reused is False
    assert sha256(a) == sha256(b)
    assert (tmp_path / "a" / "toy.h5.key").read_text() == (tmp_path / "b" / "toy.h5.key").read_text()
    assert not split_folder(b).exists(), "the parts' shards are removed once merged"


def test_a_killed_part_resumes_after_its_last_shard(tmp_path):
    samples = make_images(tmp_path / "data", n=40)  # 5 shards: part 1 of 2 has 2, part 2 has 3
    reference = unsplit(tmp_path / "data", samples, tmp_path / "a" / "toy.h5")
    out = tmp_path / "b" / "toy.h5"
    with pytest.raises(KeyboardInterrupt):  # killed in part 2's 4th batch: its first shard is flushed
        extract_part(TinyNet(fail_after_batches=3), TRANSFORM, tmp_path / "data", samples, out, ATTRS,
                     part=2, parts=2, **KW)
    assert [p.name for p in sorted((split_folder(out) / "part-2-of-2").glob("shard-*"))] == ["shard-000002.npz"]
    net = TinyNet()
    records, _ = split(tmp_path / "data", samples, out, 2, nets={2: net})
    assert net.calls == 4  # shards 3 and 4 only
    assert out.read_bytes() == reference.read_bytes()


def test_every_part_reuses_a_finished_file_of_the_same_key(tmp_path):
    samples = make_images(tmp_path / "data")
    out = unsplit(tmp_path / "data", samples, tmp_path / "a" / "toy.h5")  # e.g. extracted before the split
    before = out.read_bytes()
    nets = {1: TinyNet(), 2: TinyNet()}
    records, reused = split(tmp_path / "data", samples, out, 2, nets=nets)
    assert reused and all(r["reused"] for r in records) and nets[1].calls == nets[2].calls == 0
    assert out.read_bytes() == before


def test_missing_shards_name_the_parts_to_compute_again(tmp_path):
    import shutil

    samples = make_images(tmp_path / "data")
    out = tmp_path / "b" / "toy.h5"
    records = [extract_part(TinyNet(), TRANSFORM, tmp_path / "data", samples, out, ATTRS, part=k, parts=2, **KW)
               for k in (1, 2)]
    shutil.rmtree(split_folder(out) / "part-2-of-2")
    with pytest.raises(PartsMissingError, match=r"part\(s\) 2 of 2") as err:
        merge_parts(records, samples, out, ATTRS, root=tmp_path / "data")
    assert err.value.parts == [2] and not out.exists()


def test_parts_computed_differently_are_refused(tmp_path):
    samples = make_images(tmp_path / "data")
    out = tmp_path / "b" / "toy.h5"
    one = extract_part(TinyNet(), TRANSFORM, tmp_path / "data", samples, out, ATTRS, part=1, parts=2, **KW)
    two = extract_part(TinyNet(), TRANSFORM, tmp_path / "data", samples, out, ATTRS, part=2, parts=2,
                       **{**KW, "features_dtype": "float32"})
    # e.g. one part on an H100, the other on an A100: one file records one device
    two["attrs"]["device_name"] = "NVIDIA A100"
    with pytest.raises(PartsMissingError, match="not computed the same way.*device_name") as err:
        merge_parts([one, two], samples, out, ATTRS, root=tmp_path / "data")
    assert err.value.parts == [2]
    with pytest.raises(ValueError, match="another image list"):
        merge_parts([one, two], samples[:-1], out, ATTRS, root=tmp_path / "data")
    with pytest.raises(ValueError, match="computed for something else"):
        merge_parts([one, {**two, "run_key": one["run_key"]}], samples, out, {"model": "other"},
                    root=tmp_path / "data")


# ------------------------------------------------------------------------------ configuration
def _config(split, group="model"):
    from conftest import default_config

    config = default_config()
    config["extraction"]["group"] = group
    config["extraction"]["split"] = split
    return config


@pytest.mark.parametrize("group", ["model", "dataset"])
def test_a_split_dataset_is_a_group_of_its_own_and_its_variants_are_not_split(group):
    from beyond_imagenet.study import Study, validate_config

    study = Study(validate_config(_config({"imagenet_val": 4, "imagenet_c": 2}, group)))
    plan = study.extraction_plan("vit_sup")
    assert plan["imagenet_val"] == [("imagenet_val", None)] and plan["imagenet_c"] == [("imagenet_c", None)]
    variants = "all" if group == "model" else "imagenet_val@variants"
    mine = [(d, v) for d, v in plan[variants] if d == "imagenet_val"]
    assert mine and all(v for _, v in mine)  # its variants: in their usual group, the standard file not
    if group == "model":
        assert ("imagenet_r", None) in plan["all"]  # the other datasets stay in the model's group
    assert study.split_parts("vit_sup", "imagenet_val") == 4 and study.split_parts("vit_sup", variants) is None
    assert study.part_groups("vit_sup", "imagenet_c") == ["imagenet_c@part-1-of-2", "imagenet_c@part-2-of-2"]
    # readers take the dataset's group marker, as for any group
    assert study.output_marker("vit_sup", "imagenet_val").endswith("extracted/vit_sup/imagenet_val.group.json")


@pytest.mark.parametrize("split, message", [
    ({"imagenet_val": 0}, "extraction.split.imagenet_val: 0 is less than the minimum of 1"),
    ({"imagenet_val": "two"}, "extraction.split.imagenet_val: 'two' is not of type 'integer'"),
    ({"imagenet_val": 2.5}, "extraction.split.imagenet_val"),
    ({"nope": 2}, "extraction.split.nope: unknown dataset 'nope'; defined under datasets: imagenet_val"),
    ({"imagenet_val@scale-3": 2}, "extraction.split.imagenet_val@scale-3: variants are not split"),
    ({"vtab": 2}, "extraction.split.vtab: a vtab dataset is not split"),
])
def test_bad_splits_are_refused_naming_the_key(split, message):
    from beyond_imagenet.study import ConfigError, validate_config

    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        validate_config(_config(split))


def test_a_split_dataset_in_a_named_group_is_refused():
    from beyond_imagenet.study import ConfigError, validate_config

    config = _config({"imagenet_v2": 2})
    config["extraction"]["groups"] = {"small": ["imagenet_v2", "imagenet_hard"]}
    with pytest.raises(ConfigError, match=r"extraction\.split\.imagenet_v2: 'imagenet_v2' is also in "
                                          r"extraction\.groups\.small"):
        validate_config(config)


# ---------------------------------------------------------------------------------- workflow
def _planned(configfile, workdir, targets):
    """(rule, wildcards, gpu slots) of every job a dry run plans."""
    import os
    from pathlib import Path

    from conftest import REPO
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import (ConfigSettings, DAGSettings, OutputSettings, Quietness,
                                          ResourceSettings, StorageSettings)

    cwd = os.getcwd()
    try:
        with SnakemakeApi(OutputSettings(quiet={Quietness.PROGRESS, Quietness.RULES})) as api:
            workflow = api.workflow(
                resource_settings=ResourceSettings(cores=1, resources={"gpu": 2}),
                config_settings=ConfigSettings(configfiles=[Path(configfile).resolve()]),
                storage_settings=StorageSettings(), snakefile=REPO / "Snakefile", workdir=Path(workdir))
            dag = workflow.dag(dag_settings=DAGSettings(targets=set(targets)))
            dag.execute_workflow(executor="dryrun")
            return [(job.rule.name, dict(job.wildcards_dict), job.resources.get("gpu", 0))
                    for job in dag.workflow_api._workflow.dag.needrun_jobs()]
    finally:
        os.chdir(cwd)


@pytest.mark.workflow
def test_dry_run_plans_parts_on_gpus_and_a_merge_without(tmp_path):
    """K part jobs per model, each an extract_outputs job taking a GPU slot (so --resources gpu=N
    limits them, and the SLURM profile's extract_outputs settings apply), and one merge job without."""
    from conftest import write_config

    config = _config({"imagenet_c": 3})
    config["extraction"]["device"] = "auto"
    jobs = _planned(write_config(tmp_path / "split.yaml", config), tmp_path, targets=())
    parts = [(w["model"], w["group"], gpu) for rule, w, gpu in jobs
             if rule == "extract_outputs" and "@part-" in w["group"]]
    merges = [(w["model"], w["dataset"], gpu) for rule, w, gpu in jobs if rule == "merge_extraction_parts"]
    models = list(config["models"])
    assert sorted(parts) == sorted((m, f"imagenet_c@part-{k}-of-3", 1) for m in models for k in (1, 2, 3))
    assert sorted(merges) == sorted((m, "imagenet_c", 0) for m in models)
    # the rest of each model's outputs: still one job ("all")
    assert sorted(w["model"] for rule, w, _ in jobs if rule == "extract_outputs" and w["group"] == "all") == \
        sorted(models)
    # metric tables read the merged file's marker as any group's
    assert any(rule == "compute_robustness" for rule, _, _ in jobs)


@pytest.mark.workflow
def test_lint_is_clean_with_a_split(tmp_path):
    from conftest import lint_workflow, write_config

    assert not lint_workflow(write_config(tmp_path / "split.yaml", _config({"imagenet_c": 2})))


def _small(tiny_config, split=None):
    import copy

    config = copy.deepcopy(tiny_config)
    config["models"] = {"vit_sup": config["models"]["vit_sup"]}
    config["datasets"]["imagenet_val"]["images_per_class"] = 2  # 8 images
    config["evaluations"] = {k: config["evaluations"][k] for k in ("accuracy", "invariance")}
    config["evaluations"]["invariance"].update(scale=[1, 2], shift=[], resolution=[224], max_images=4)
    config["extraction"].update(batch_size=2, shard_size=2)  # 4 shards
    if split:
        config["extraction"]["split"] = split
    return config


def _outputs(workdir):
    return {p.relative_to(workdir).as_posix(): p.read_bytes()
            for p in sorted((workdir / "results" / "extracted").glob("*/*.h5*"))}


@pytest.mark.workflow
def test_split_workflow_writes_the_unsplit_files_byte_for_byte(tiny_config, tmp_path):
    """3 part jobs and a merge write the file one job writes (and its key), byte for byte; a study
    that starts splitting reuses its files; a deleted split file is recomputed by its parts."""
    import os

    from conftest import run_snakemake, write_config

    from beyond_imagenet.study import Study, validate_config

    split = _small(tiny_config, {"imagenet_val": 3})
    targets = [os.path.relpath(p, ".") for p in Study(validate_config(_small(tiny_config, {"imagenet_val": 3})))
               .all_markers()] + ["results/metrics/accuracy.csv"]
    unsplit_file = write_config(tmp_path / "unsplit.yaml", _small(tiny_config))
    split_file = write_config(tmp_path / "split.yaml", split)
    jobs = run_snakemake(unsplit_file, tmp_path / "a", targets=["results/metrics/accuracy.csv"])
    assert jobs["extract_outputs"] == 1 and "merge_extraction_parts" not in jobs
    jobs = run_snakemake(split_file, tmp_path / "b", targets=targets)
    assert jobs["extract_outputs"] == 3 + 1 and jobs["merge_extraction_parts"] == 1  # 3 parts, the variants' group
    a, b = _outputs(tmp_path / "a"), _outputs(tmp_path / "b")
    name = "results/extracted/vit_sup/imagenet_val.h5"
    assert a[name] == b[name] and a[name + ".key"] == b[name + ".key"]
    assert sorted(a) == sorted(b) and [n for n in a if a[n] != b[n]] == []  # the variant too
    assert (tmp_path / "a/results/metrics/accuracy.csv").read_bytes() == \
        (tmp_path / "b/results/metrics/accuracy.csv").read_bytes()
    assert not list((tmp_path / "b/results/extracted/vit_sup").glob(".*.split"))  # shards removed once merged

    # The unsplit study starts splitting: every part reuses the file (no forward pass), the merge too.
    jobs = run_snakemake(split_file, tmp_path / "a", targets=targets)
    assert jobs["merge_extraction_parts"] == 1
    for k in (1, 2, 3):
        log = (tmp_path / f"a/results/logs/extract_outputs/vit_sup/imagenet_val@part-{k}-of-3.log").read_text()
        assert '"computed": 0' in log, log
    assert _outputs(tmp_path / "a") == a

    # The merged file is deleted (as a stale-output error says to): its parts and merge run again.
    (tmp_path / "b" / name).unlink()
    jobs = run_snakemake(split_file, tmp_path / "b", targets=targets)
    assert jobs["extract_outputs"] == 3 and jobs["merge_extraction_parts"] == 1
    assert _outputs(tmp_path / "b")[name] == a[name]


def test_merge_job_drops_the_markers_of_parts_to_recompute_and_reuses_its_file(tmp_path):
    """The merge job (extraction_jobs.merge_split) as Snakemake runs it: a part whose shards are gone
    loses its marker (the next run computes it again) and the error names it; a merge rerun after
    the file was written reuses it; its marker lists the file as a group marker does."""
    import shutil
    from types import SimpleNamespace

    from beyond_imagenet.extraction_jobs import group_damage, merge_split, part_needs_rerun
    from beyond_imagenet.workflow import expected_attrs

    samples = make_images(tmp_path / "data")
    manifest = {"samples": samples, "root": str(tmp_path / "data"), "n_images": len(samples), "fingerprint": "f"}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    expect = {"model": "tiny", "dataset": "toy"}
    attrs = expected_attrs(expect, manifest)
    out = tmp_path / "extracted" / "tiny" / "toy.h5"
    reference = extract(TinyNet(), TRANSFORM, tmp_path / "data", samples, tmp_path / "a" / "toy.h5", attrs, **KW)
    markers = []
    for k in (1, 2):
        record = extract_part(TinyNet(), TRANSFORM, tmp_path / "data", samples, out, attrs, part=k, parts=2, **KW)
        markers.append(out.parent / f"toy@part-{k}-of-2.group.json")
        markers[-1].write_text(json.dumps({"outputs": [], "part": record}))
    job = SimpleNamespace(params=SimpleNamespace(item={"manifest": str(tmp_path / "manifest.json"), "expect": expect,
                                                       "extracted": str(out)}, on_bad_image="error"),
                          wildcards=SimpleNamespace(model="tiny", dataset="toy"),
                          input=SimpleNamespace(parts=[str(m) for m in markers]),
                          output=[str(out.parent / "toy.group.json")])
    first = json.loads(markers[0].read_text())["part"]
    assert not part_needs_rerun(first) and not part_needs_rerun(record)
    kept = (split_folder(out) / "part-2-of-2").rename(tmp_path / "kept")
    assert part_needs_rerun(record)  # what the workflow's plan sees (stats only): the part is forced
    with pytest.raises(PartsMissingError, match=r"part\(s\) 2 of 2"):
        merge_split(job)
    assert markers[0].exists() and not markers[1].exists()
    kept.rename(split_folder(out) / "part-2-of-2")  # as if part 2 ran again
    markers[1].write_text(json.dumps({"outputs": [], "part": record}))
    assert merge_split(job)["computed"] == 1
    assert out.read_bytes() == reference.read_bytes() and not split_folder(out).exists()
    assert json.loads((out.parent / "toy.group.json").read_text())["outputs"] == [str(out)]
    assert group_damage(out.parent / "toy.group.json") == []
    assert part_needs_rerun(first) and part_needs_rerun(record)  # consumed by the merge
    assert merge_split(job)["reused"] == 1  # a rerun of the merge alone: the shards are gone, the file kept
    assert out.read_bytes() == reference.read_bytes()
    shutil.rmtree(tmp_path / "a")

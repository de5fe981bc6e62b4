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

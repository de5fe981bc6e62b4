"""Bad input through the whole workflow (issue #7): bad files dropped into a generated dataset.

After the generate step, the dataset gets a corrupt JPEG, a truncated JPEG, a zero-byte file and a
text file (all bad), grayscale / CMYK / RGBA / 16-bit images (odd but valid) and a folder that is
not a class. The manifest then names the folder; without it, extraction fails naming every bad
file and writes nothing; with ``on_bad_image: skip`` the run completes and the tables count the
skipped files, which the HDF5 lists.
"""

from __future__ import annotations

import copy
import io
import shutil

import h5py
import numpy as np
import pandas as pd
import pytest
import snakemake.shell  # noqa: F401
from PIL import Image

from beyond_imagenet.classes import wnid_to_index
from beyond_imagenet.datasets.generate import imagenet_val_file_names
from conftest import write_config
from test_reliability_workflow import api_run, leftovers

pytestmark = pytest.mark.workflow

MANIFEST = "results/manifests/imagenet_val.json"
OUTPUT = "results/extracted/vit_sup/imagenet_val.h5"
TABLES = ["results/metrics/accuracy.csv", "results/metrics/calibration.csv"]


def _jpeg(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def inject(folder) -> tuple[list[str], list[str]]:
    """Write bad and odd files into the class folders under ``folder``; return (bad ids, odd ids)."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8)
    good = _jpeg(rgb)
    a, b = sorted(p.name for p in folder.iterdir())[:2]
    # Real val file names of each folder's class that the generator did not use (the reader checks
    # every file's name against its folder's class), so the files reach the decoder.
    index = wnid_to_index()
    used: set[str] = set()

    def spare(wnid):
        name = next(n for n in imagenet_val_file_names()[index[wnid]]
                    if not (folder / wnid / n).exists() and n not in used)
        used.add(name)
        return f"{wnid}/{name}"

    bad = {
        spare(a): b"\xff\xd8\xff\xe0" + bytes(rng.integers(0, 256, 2000, dtype=np.uint8)),  # corrupt
        spare(a): good[: len(good) // 2],  # truncated
        spare(b): b"",  # zero bytes
        spare(b): b"not an image, a note someone saved over an image\n",  # not an image
    }
    for name, data in bad.items():
        (folder / name).write_bytes(data)
    odd = {
        spare(a): lambda p: Image.fromarray(rgb[..., 0], mode="L").save(p, format="JPEG"),  # grayscale
        spare(a): lambda p: Image.fromarray(rgb).convert("CMYK").save(p, format="JPEG"),  # CMYK
        spare(b): lambda p: Image.fromarray(np.dstack([rgb, rgb[..., :1]])).save(p, format="PNG"),  # RGBA
        spare(b): lambda p: Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)).save(p, format="PNG"),  # 16 bit
    }
    for name, save in odd.items():
        save(folder / name)
    modes = [Image.open(folder / name).mode for name in odd]
    assert modes[1] == "CMYK" and modes[2] == "RGBA" and modes[3].startswith("I")  # really those files
    return sorted(bad), sorted(odd)


def test_bad_files_in_a_generated_dataset(tiny_config, tmp_path, capfd):
    config = copy.deepcopy(tiny_config)
    config["models"] = {"vit_sup": config["models"]["vit_sup"]}
    config["datasets"] = {"imagenet_val": {**config["datasets"]["imagenet_val"], "images_per_class": 2}}
    config["evaluations"] = {"accuracy": {"datasets": ["imagenet_val"]},
                             "calibration": {"datasets": ["imagenet_val"], "n_bins": 15}}
    strict = write_config(tmp_path / "strict.yaml", config)
    config["extraction"]["on_bad_image"] = "skip"
    lenient = write_config(tmp_path / "skip.yaml", config)
    work = tmp_path / "work"
    work.mkdir()

    api_run(strict, work, [MANIFEST])  # generate + manifest, then the files go bad
    root = work / "resources/generated/imagenet_val/val"
    n_good = sum(1 for _ in root.glob("*/*"))
    bad, odd = inject(root)
    stray = root / "n99999999"
    stray.mkdir()
    (stray / "x.JPEG").write_bytes(_jpeg(np.zeros((8, 8, 3), np.uint8)))
    capfd.readouterr()

    # 1. A folder that is no class: the manifest names it, nothing downstream runs.
    with pytest.raises(Exception):
        api_run(strict, work, TABLES, forcerun=["build_manifest"])
    err = capfd.readouterr().err
    assert "n99999999" in err and "not classes of the imagenet1k space" in err
    assert not (work / MANIFEST).exists() and not (work / "results/extracted").exists()

    # 2. Without it: extraction names every bad file (not the odd ones) and writes nothing.
    shutil.rmtree(stray)
    with pytest.raises(Exception):
        api_run(strict, work, TABLES)
    err = capfd.readouterr().err
    assert f"BadImagesError: {len(bad)} image(s) could not be read, nothing was written" in err
    for sid in bad:
        assert f"{root.resolve()}/{sid}: " in err
    for sid in odd:
        assert sid not in err
    assert "on_bad_image: skip" in err  # and says what to do
    assert not (work / OUTPUT).exists()
    assert not list(work.glob("results/metrics/*.csv"))
    assert leftovers(work) == []

    # 3. on_bad_image: skip: the run completes, the skipped files are recorded and counted.
    api_run(lenient, work, [*TABLES, "results/metrics/skipped.csv"])
    with h5py.File(work / OUTPUT, "r") as f:
        assert sorted(x.decode() for x in f["skipped_ids"][()]) == bad
        reasons = [x.decode() for x in f["skipped_reasons"][()]]
        assert all(reasons) and int(f.attrs["n_skipped"]) == len(bad)
        ids = {x.decode() for x in f["ids"][()]}
        assert set(odd) <= ids and not set(bad) & ids
        assert int(f.attrs["n_images"]) == len(ids) == n_good + len(odd)
    for table in TABLES:
        frame = pd.read_csv(work / table)
        values = frame.set_index("metric")["value"]
        assert values["n_skipped"] == len(bad), table
        assert values["n_images"] == n_good + len(odd), table
    skipped = pd.read_csv(work / "results/metrics/skipped.csv")
    assert sorted(skipped["id"]) == bad and set(skipped["model"]) == {"vit_sup"} and skipped["reason"].all()
    assert leftovers(work) == []

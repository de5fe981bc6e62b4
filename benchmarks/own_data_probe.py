"""Benchmark: the real EfficientNet-Lite0 against the same network with random weights, linear probe on
a labelled folder of one's own classes, and the zero-shot top-1 of a tiny random-weight CLIP model.

The folder: six classes of one's own (bird, building, person, pet, plant, vehicle), three source
photographs each, from the photographs the project already ships with its dependencies (foolbox's
ImageNet photographs, scikit-image, scikit-learn, matplotlib; datasets/photos.py OWN_CLASSES), each
photograph with ``--copies - 1`` seeded augmented copies. The splits are drawn with
``group_by: '^[^_]+'``, one photograph per class and split (train 1, val 1, test the third), so the
probe is never tested on copies of a training (or validation) photograph. Every seed in ``--seeds``
puts other photographs in the test split; the features are extracted once, only the probes rerun.

The intervals are the workflow's percentile bootstrap over the test images (docs/evaluations.md §11);
the test images are copies of 6 photographs, so they understate the uncertainty of a new photograph:
read the spread over seeds beside them.

Example::

    python benchmarks/own_data_probe.py --workdir /tmp/own_bench --copies 8 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from beyond_imagenet.datasets.photos import write_own_class_folder  # noqa: E402


def study(root: Path, seed: int) -> dict:
    models = yaml.safe_load((REPO / "config.yaml").read_text())["models"]
    real = models["effnet_lite0"]
    random = {k: v for k, v in real.items() if k not in ("checkpoint", "checkpoint_format")}
    random.update(label="EfficientNet-Lite0 (random weights)", seed=0)
    return {
        "study": "own_data_probe", "zero_shot": {"templates": 1},
        "extraction": {"batch_size": 32, "num_workers": 0, "shard_size": 64, "device": "cpu"},
        "models": {"effnet_lite0": real, "effnet_lite0_random": random, "vit_clip": models["vit_clip"]},
        "datasets": {"mine": {"kind": "labelled_folder", "source": "manual", "root": str(root),
                              "splits": {"train": 1, "val": 1, "group_by": "^[^_]+", "seed": seed}}},
        "evaluations": {"transfer": {"datasets": ["mine"], "probe": {"device": "cpu"},
                                     "zero_shot": {"templates": ["a photo of a {}.", "a photo of the {}."]}}},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--copies", type=int, default=8)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    root = work / "photos"
    if not root.is_dir():
        write_own_class_folder(root, copies=args.copies)
    rows = []
    for seed in args.seeds:
        config = work / "study.yaml"
        config.write_text(yaml.safe_dump(study(root, seed), sort_keys=False))
        subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--configfile", str(config),
                        "-c", str(args.cores), "--resources", "gpu=1", "-q"], cwd=work, check=True,
                       env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
        table = pd.read_csv(work / "results" / "metrics" / "transfer.csv")
        top1 = table[table["metric"] == "test_top1"]
        n_test = table[(table["metric"] == "n_test")].set_index(["model", "task"])["value"]
        for _, r in top1.iterrows():
            rows.append({"seed": seed, "model": r["model"], "task": r["task"], "top1": 100 * r["value"],
                         "ci_low": 100 * r["ci_low"], "ci_high": 100 * r["ci_high"],
                         "n_test": int(n_test[(r["model"], r["task"])])})
        comparisons = pd.read_csv(work / "results" / "metrics" / "comparisons.csv")
        pair = comparisons[(comparisons["model_a"] == "effnet_lite0") & (comparisons["model_b"] == "effnet_lite0_random")]
        for _, r in pair.iterrows():
            rows.append({"seed": seed, "model": "real - random", "task": "linear_probe", "top1": r["difference"],
                         "ci_low": r["ci_low"], "ci_high": r["ci_high"], "n_test": rows[-1]["n_test"]})
    out = pd.DataFrame(rows)
    print(out.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    means = out.groupby(["model", "task"])["top1"].agg(["mean", "min", "max"])
    print("\nover seeds (top-1 %):")
    print(means.to_string(float_format=lambda v: f"{v:.1f}"))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

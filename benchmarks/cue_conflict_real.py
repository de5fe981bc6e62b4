"""Shape bias of the default study's real models on the real 1,280-image cue-conflict set, and its time.

    PYTHONPATH=. python benchmarks/cue_conflict_real.py --archive cue-conflict.tar.gz [--models effnet_lite0 ...]

``--archive`` is model-vs-human's release archive (the catalogue's URL, beyond_imagenet/data/
datasets.yaml ``cue_conflict``), already downloaded; it is handed to the workflow's own download
step as a ``file://`` URL (sha256 recorded at first use). The study is the default study's real
models (config.yaml, by default EfficientNet-Lite0/1/2) with only the shape-bias evaluation.
Printed: per model the shape bias and 16-class accuracy with their bootstrap intervals, the
extraction job's time, and the whole run's wall time; the figure is
``<workdir>/results/figures/shape_bias_cue_conflict.png``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]


def study(archive: Path, models: list[str]) -> dict:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    unknown = [m for m in models if m not in config["models"]]
    if unknown:
        sys.exit(f"--models: {unknown} are not models of config.yaml ({list(config['models'])})")
    config["study"] = "real_cue_conflict"
    config["models"] = {m: config["models"][m] for m in models}
    config["extraction"].update(batch_size=64, shard_size=256, num_workers=1)
    config["datasets"] = {"cue_conflict": {"kind": "cue_conflict", "source": "download",
                                           "url": archive.resolve().as_uri()}}
    config["evaluations"] = {"shape_bias": {"datasets": ["cue_conflict"]}}
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archive", type=Path, required=True, help="cue-conflict.tar.gz (model-vs-human's release)")
    parser.add_argument("--models", nargs="+", default=["effnet_lite0", "effnet_lite1", "effnet_lite2"])
    parser.add_argument("--workdir", type=Path, default=None, help="default: a new temporary folder")
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    if not args.archive.is_file():
        sys.exit(f"--archive {args.archive}: no such file")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="cue_conflict_real_"))
    workdir.mkdir(parents=True, exist_ok=True)
    configfile = workdir / "real_cue_conflict.yaml"
    configfile.write_text(yaml.safe_dump(study(args.archive, args.models), sort_keys=False))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
                    "--configfile", str(configfile), "--cores", str(args.cores)], check=True)
    wall = time.perf_counter() - start

    table = pd.read_csv(workdir / "results" / "metrics" / "shape_bias.csv", keep_default_na=False, na_values=[""])
    overall = table[table["category"].isna()]
    print(f"\n{'model':<14} {'shape bias [95% CI]':<26} {'16-class acc [95% CI]':<26} extraction")
    for model in args.models:
        rows = overall[overall["model"] == model].set_index("metric")
        cell = {m: f"{rows.loc[m, 'value']:.3f} [{rows.loc[m, 'ci_low']:.3f}, {rows.loc[m, 'ci_high']:.3f}]"
                for m in ("shape_bias", "accuracy_16")}
        log = (workdir / "results" / "logs" / "extract_outputs" / model).glob("*.log")
        timing = [json.loads(m.group(1)) for f in log for m in re.finditer(r"job timing (\{.*\})", f.read_text())]
        seconds = f"{timing[-1]['job_s']:.0f} s" if timing else "?"
        print(f"{model:<14} {cell['shape_bias']:<26} {cell['accuracy_16']:<26} {seconds}")
    print(f"n = {int(overall['value'][overall['metric'] == 'n_images'].iloc[0])} conflict images of "
          f"{int(overall['value'][overall['metric'] == 'n_images_all'].iloc[0])}; whole run {wall:.0f} s on "
          f"{args.cores} cores; figure {workdir / 'results' / 'figures' / 'shape_bias_cue_conflict.png'}")


if __name__ == "__main__":
    main()

"""Recompute beyond_imagenet/data/human_shape_bias.yaml from model-vs-human's raw human decisions.

Usage: python scripts/human_shape_bias.py <folder with cue-conflict_subject-NN_session_1.csv> [--check]
(the files are in model-vs-human's raw-data/cue-conflict). --check compares instead of writing.
"""

import argparse
import sys
from importlib.resources import files

import yaml

from beyond_imagenet.human_reference import HUMAN_FILE, summarise


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--check", action="store_true", help="compare with the stored file instead of writing it")
    args = parser.parse_args()
    summary = summarise(args.folder)
    target = files("beyond_imagenet").joinpath("data", HUMAN_FILE)
    text = yaml.safe_dump(summary, sort_keys=False, width=110)
    if args.check:
        same = yaml.safe_load(target.read_text("utf-8")) == summary
        print("stored summary matches" if same else "stored summary differs:\n" + text)
        return 0 if same else 1
    with open(str(target), "w", encoding="utf-8") as f:
        f.write("# Human shape bias on cue-conflict (beyond_imagenet/human_reference.py); written by\n"
                "# scripts/human_shape_bias.py from model-vs-human's raw decisions, do not edit by hand.\n")
        f.write(text)
    print(f"wrote {target}: overall {summary['overall']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

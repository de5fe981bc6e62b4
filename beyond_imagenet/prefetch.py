"""Fetch everything a study downloads, on a machine with internet (a cluster's login node):
``python -m beyond_imagenet.prefetch STUDY``.

* Datasets with ``source: download``: each file of the catalogue recipe is downloaded and verified
  (size, sha256 / md5, mirrors; resumable) to ``<resources>/downloads/<dataset>/<file>`` and the
  dataset is unpacked to ``<resources>/datasets/<dataset>``: the very files the workflow's
  ``fetch_dataset`` job writes (the same function), so that job finds them complete and only
  writes the study's manifest. ImageNet-Hard's parquet shards come from the Hugging Face hub (pinned revision).
* Model weights: downloaded with the libraries' own hub / URL functions into the caches the jobs
  read (``HF_HOME``/``HF_HUB_CACHE``; torch hub's and open_clip's for URL-only weights), then
  checked (a hub blob's sha256 must equal its name; open_clip's URL files carry their checksum).

Then the doctor runs as on a compute node (``--offline``): exit status 0 when the study can run
with ``HF_HUB_OFFLINE=1`` and no network, 1 otherwise. Manual datasets (ImageNet val, VTAB) are not
downloadable; the doctor lists what is missing. Running it again re-verifies and fetches only what
is missing.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from beyond_imagenet.doctor import check

log = logging.getLogger("beyond_imagenet.prefetch")


def prefetch_datasets(study) -> list[str]:
    """Download and unpack every ``source: download`` dataset; returns the problems met."""
    from beyond_imagenet.datasets.fetch import fetch_dataset

    problems = []
    for name, spec in study.datasets.items():
        if spec.source != "download":
            continue
        try:
            fetch_dataset(spec)  # (a complete folder is kept as it is)
            log.info("dataset %s: unpacked in %s", name, spec.dataset_dir)
        except Exception as err:  # noqa: BLE001 - one dataset's failure must not stop the others
            problems.append(f"datasets.{name}: {err}")
            log.error("dataset %s: %s", name, err)
    return problems


def prefetch_weights(study) -> list[str]:
    """Download and verify every model's pretrained weights; returns the problems met."""
    from beyond_imagenet.weights import cached_files, fetch, verify, weight_source

    problems = []
    for name, spec in study.models.items():
        try:
            source = weight_source(spec)
            if source.kind == "none":
                continue
            files = cached_files(source)
            if files is None:
                log.info("model %s: fetching %s", name, source.describe())
                files = fetch(source)
            bad = [p for p in (verify(source, f) for f in files) if p]
            if bad:
                raise RuntimeError("; ".join(bad))
            log.info("model %s: %s verified (%s)", name, source.describe(), ", ".join(str(f) for f in files))
        except Exception as err:  # noqa: BLE001 - reported per model
            problems.append(f"models.{name}: {err}")
            log.error("model %s: %s", name, err)
    return problems


def prefetch(config: dict[str, Any], datasets: bool = True, weights: bool = True) -> tuple[list[str], Any]:
    """Fetch, then check as a compute node would: (problems, doctor report)."""
    from beyond_imagenet.study import Study

    study = Study(config)
    problems = (prefetch_datasets(study) if datasets else []) + (prefetch_weights(study) if weights else [])
    return problems, check(config, offline=True)


def main(argv: list[str] | None = None) -> int:
    from beyond_imagenet.study import ConfigError, load_config

    parser = argparse.ArgumentParser(prog="python -m beyond_imagenet.prefetch", description=__doc__.split("\n\n")[0])
    parser.add_argument("study", help="study file, e.g. studies/paper.yaml")
    parser.add_argument("--weights-only", action="store_true", help="model weights only")
    parser.add_argument("--datasets-only", action="store_true", help="datasets only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        config = load_config(args.study)
    except (ConfigError, OSError) as err:
        print(err, file=sys.stderr)
        return 1
    problems, report = prefetch(config, datasets=not args.weights_only, weights=not args.datasets_only)
    print(f"{args.study}, as a compute node without internet sees it (HF_HUB_OFFLINE=1):")
    print(report.table())
    for problem in problems:
        print(f"prefetch failed: {problem}", file=sys.stderr)
    return 0 if report.ready and not problems else 1


if __name__ == "__main__":
    raise SystemExit(main())

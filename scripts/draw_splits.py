import json
import logging

from beyond_imagenet.datasets.labelled import draw_manifest_splits
from beyond_imagenet.datasets.manifest import load_manifest
from beyond_imagenet.io import atomic_write_text
from beyond_imagenet.workflow import setup

job = setup(snakemake)
splits = draw_manifest_splits(load_manifest(job.input[0]), dict(job.params.splits))
atomic_write_text(job.output[0], json.dumps(splits, separators=(",", ":")))
logging.getLogger("draw_splits").info("%s: %s (%s)", job.wildcards.dataset, splits["split_counts"],
                                      splits["split_source"])

# The merge job of a split dataset (extraction.split): its file from its part jobs' checkpoint shards,
# byte-identical to one job's, and its group marker; see beyond_imagenet/extraction_jobs.py.
import logging

from beyond_imagenet.extraction_jobs import job_timing, merge_split
from beyond_imagenet.workflow import setup

job = setup(snakemake)
with job_timing(logging.getLogger("job")) as timing:
    timing.update(merge_split(job))

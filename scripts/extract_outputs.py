# One extraction job: every output of one (model, extraction group) in one process, so the start-up
# (imports, model build, device lease, compilation) is paid once; see beyond_imagenet/extraction_jobs.py.
import logging

from beyond_imagenet.extraction_jobs import job_timing, run_group
from beyond_imagenet.workflow import setup

job = setup(snakemake)
with job_timing(logging.getLogger("job")) as timing:
    timing.update(run_group(job))

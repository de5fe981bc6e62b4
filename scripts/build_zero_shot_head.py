import logging

from beyond_imagenet.devices import lease_device
from beyond_imagenet.heads import write_head
from beyond_imagenet.models import build_zero_shot_head
from beyond_imagenet.workflow import model_spec, setup

job = setup(snakemake)
with lease_device(job.resources.device, job.resources.lock_dir or None) as device:
    head = build_zero_shot_head(model_spec(job.params.model, job.params.identity), job.params.templates, device)
write_head(job.output[0], head, job.params.identity)
logging.getLogger("build_zero_shot_head").info("zero-shot head %s: %s", job.wildcards.model, tuple(head.shape))

import logging

from beyond_imagenet.devices import lease_device
from beyond_imagenet.heads import write_head
from beyond_imagenet.models import build_zero_shot_head
from beyond_imagenet.workflow import setup

study = setup(snakemake)
model = snakemake.wildcards.model
settings = study.config["extraction"]
templates = study.config["zero_shot"]["templates"]
with lease_device(settings["device"], settings["lock_dir"] or None) as device:
    head = build_zero_shot_head(study.models[model], templates, device)
write_head(snakemake.output[0], head, study.head_identity(model))
logging.getLogger("build_zero_shot_head").info("zero-shot head %s: %s", model, tuple(head.shape))

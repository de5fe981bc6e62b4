import json

import torch

from beyond_imagenet.datasets.manifest import load_manifest
from beyond_imagenet.datasets.vtab import EXTRACTED_SPLITS, TASKS, split_dataset_name
from beyond_imagenet.devices import lease_device
from beyond_imagenet.extract import read_outputs
from beyond_imagenet.io import atomic_write_text
from beyond_imagenet.transfer import probe_config, probe_vtab_task
from beyond_imagenet.workflow import setup

study = setup(snakemake)
model, dataset, task = snakemake.wildcards.model, snakemake.wildcards.dataset, snakemake.wildcards.task
settings = snakemake.params.probe
splits, skipped = {}, 0
for split in EXTRACTED_SPLITS:
    name = split_dataset_name(dataset, task, split)
    manifest = load_manifest(snakemake.input[f"{split}_manifest"])
    out = read_outputs(snakemake.input[split], study.expected_attrs(model, name, manifest), fields=("features", "labels"))
    splits[split] = (out["features"], out["labels"])
    skipped += int(out["attrs"].get("n_skipped", 0))
torch.set_num_threads(snakemake.threads)  # fixed thread count: the CPU result is reproducible
with lease_device(settings["device"], study.config["extraction"].get("lock_dir") or None) as device:
    result = probe_vtab_task(splits["train800"], splits["val200"], splits["test"], TASKS[task].n_classes,
                             probe_config(settings), device)
result.update(model=model, dataset=dataset, task=task, group=TASKS[task].group, device=str(device),
              n_skipped=skipped, probe=settings)
atomic_write_text(snakemake.output[0], json.dumps(result, indent=1, sort_keys=True))

import json

import torch

from beyond_imagenet.datasets.vtab import TASKS
from beyond_imagenet.devices import lease_device
from beyond_imagenet.evaluations.transfer import probe_config, probe_vtab_task
from beyond_imagenet.io import atomic_write_text
from beyond_imagenet.workflow import read_item, setup

job = setup(snakemake)
model, dataset, task = job.wildcards.model, job.wildcards.dataset, job.wildcards.task
settings = job.params.probe
splits, skipped, ids = {}, 0, None
for split, item in job.params.cached.items():
    _, out = read_item(item, fields=("features", "labels", "ids"))
    splits[split] = (out["features"], out["labels"])
    ids = list(out["ids"]) if split == "test" else ids
    skipped += int(out["attrs"].get("n_skipped", 0))
torch.set_num_threads(job.threads)  # fixed thread count: the CPU result is reproducible
with lease_device(settings["device"], job.resources.lock_dir or None) as device:
    result = probe_vtab_task(splits["train800"], splits["val200"], splits["test"], TASKS[task].n_classes,
                             probe_config(settings), device)
result.update(model=model, dataset=dataset, task=task, group=TASKS[task].group, device=str(device),
              n_skipped=skipped, probe=settings, test_ids=ids)
atomic_write_text(job.output[0], json.dumps(result, indent=1, sort_keys=True))

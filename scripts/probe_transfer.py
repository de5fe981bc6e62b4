import json

import torch

from beyond_imagenet.datasets.vtab import TASKS
from beyond_imagenet.devices import lease_device
from beyond_imagenet.evaluations.transfer import probe_config, probe_vtab_task
from beyond_imagenet.io import atomic_write_text
from beyond_imagenet.workflow import read_item, setup

job = setup(snakemake)
model, dataset = job.wildcards.model, job.wildcards.dataset
settings = job.params.probe
torch.set_num_threads(job.threads)  # fixed thread count: the CPU result is reproducible
results = []
with lease_device(settings["device"], job.resources.lock_dir or None) as device:
    for task, cached in job.params.cached.items():  # the dataset's tasks, each fit seeded on its own
        splits, skipped, ids = {}, 0, None
        for split, item in cached.items():
            _, out = read_item(item, fields=("features", "labels", "ids"))
            splits[split] = (out["features"], out["labels"])
            ids = list(out["ids"]) if split == "test" else ids
            skipped += int(out["attrs"].get("n_skipped", 0))
        result = probe_vtab_task(splits["train800"], splits["val200"], splits["test"], TASKS[task].n_classes,
                                 probe_config(settings), device)
        result.update(model=model, dataset=dataset, task=task, group=TASKS[task].group, device=str(device),
                      n_skipped=skipped, probe=settings, test_ids=ids)
        results.append(result)
atomic_write_text(job.output[0], json.dumps({"model": model, "dataset": dataset, "results": results},
                                            indent=1, sort_keys=True))

import json

import torch

from beyond_imagenet.datasets.vtab import TASKS
from beyond_imagenet.devices import lease_device
from beyond_imagenet.evaluations.transfer import OWN_GROUP, probe_config, probe_own_dataset, probe_vtab_task
from beyond_imagenet.io import atomic_write_text
from beyond_imagenet.workflow import read_item, setup

job = setup(snakemake)
model, dataset = job.wildcards.model, job.wildcards.dataset
settings = job.params.probe
zero_shot = job.params.zero_shot  # a CLIP model on a labelled folder: its zero-shot classifier; else {}
torch.set_num_threads(job.threads)  # fixed thread count: the CPU result is reproducible
results = []
with lease_device(settings["device"], job.resources.lock_dir or None) as device:
    if OWN_GROUP in job.params.cached:  # a labelled folder: one output, the splits in its manifest
        manifest, out = read_item(job.params.cached[OWN_GROUP]["all"], fields=("features", "labels", "ids"))
        with open(job.input.splits[0]) as f:
            splits = json.load(f)
        head = None
        if zero_shot:  # a CLIP model: the zero-shot classifier from the class names
            from beyond_imagenet.datasets.labelled import class_prompt_names
            from beyond_imagenet.models import build_zero_shot_head
            from beyond_imagenet.workflow import model_spec

            head = build_zero_shot_head(model_spec(zero_shot["model"], zero_shot["identity"]), zero_shot["templates"],
                                        device, class_names=class_prompt_names(manifest["class_names"])).numpy()
        for result in probe_own_dataset(manifest, splits, out["features"], out["labels"], [str(i) for i in out["ids"]],
                                        probe_config(settings), device, head):
            result.update(model=model, dataset=dataset, group=OWN_GROUP, device=str(device),
                          n_skipped=int(out["attrs"].get("n_skipped", 0)), probe=settings,
                          templates=zero_shot.get("templates", []))
            results.append(result)
    for task, cached in job.params.cached.items():  # the dataset's tasks, each fit seeded on its own
        if task == OWN_GROUP:
            continue
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

# Within- and cross-model CKA heatmaps (docs/evaluations.md §9): every model loaded in one job, the
# same batches through each (own preprocessing), Gram matrices formed in forward hooks, one
# MinibatchCKA per pair.
import logging

import torch

from beyond_imagenet.datasets.manifest import load_manifest
from beyond_imagenet.devices import lease_device
from beyond_imagenet.evaluations.cka.passes import (
    IMAGE_TOWERS,
    HookedModel,
    SameImages,
    cka_pass,
    cka_sample,
    collate_same_images,
    iterate_batches,
    readable_batches,
    select_layers,
    write_cka,
)
from beyond_imagenet.extract import BadImagesError
from beyond_imagenet.extraction_jobs import forward_threads
from beyond_imagenet.heads import read_head
from beyond_imagenet.models import build_model
from beyond_imagenet.workflow import model_spec, setup, versions

job = setup(snakemake)
torch.set_num_threads(forward_threads(job))  # the loader workers take the job's other threads
dataset = job.wildcards.dataset
section = job.params.settings
on_bad_image = job.params.on_bad_image
manifest = load_manifest(job.input.manifest, images=True)
samples, dropped = cka_sample(manifest["samples"], section["n_images"], section["batch_size"], section["seed"])
n_batches = len(samples) // section["batch_size"]
if dropped:
    logging.warning("CKA on %s: %d of the %d drawn images do not fill a batch of %d and are dropped",
                    dataset, dropped, len(samples) + dropped, section["batch_size"])
pairs = [tuple(pair) for pair in job.params.pairs]
used = list(dict.fromkeys(m for pair in pairs for m in pair))

models, transforms, identities = {}, {}, {}
for name in used:
    spec = model_spec(job.params.models[name], job.params.head_identities[name])
    head = read_head(job.params.heads[name], job.params.head_identities[name]) if spec.needs_zero_shot_head else None
    loaded = build_model(spec, job.params.protocol, head=head, logit_scale=job.params.logit_scale)
    layers = select_layers(IMAGE_TOWERS[spec.source](loaded.network), spec.family, section["layers"])
    logging.info("%s: %d layers (%s ... %s)", name, len(layers), layers[0][0], layers[-1][0])
    models[name] = HookedModel(loaded.network, layers)
    transforms[name] = loaded.transform
    identities[name] = {**job.params.identities[name], "preprocessing": loaded.preprocessing}

loader = torch.utils.data.DataLoader(
    SameImages(manifest["root"], [sid for sid, _ in samples], transforms), batch_size=section["batch_size"],
    shuffle=False, drop_last=True, num_workers=job.resources.num_workers, collate_fn=collate_same_images)
bad = []
with lease_device(job.resources.device, job.resources.lock_dir or None) as device:
    results = cka_pass(models, iterate_batches(readable_batches(loader, bad)), pairs, device)
ids = [sid for sid, _ in samples]
if bad and on_bad_image == "error":  # every bad file named, nothing written
    raise BadImagesError(manifest["root"], [(ids[i], reason) for i, reason in sorted(bad)])
if bad:
    logging.warning("CKA on %s: %d unreadable image(s) skipped", dataset, len(bad))
attrs = {"dataset": dataset, "manifest_fingerprint": manifest["fingerprint"], "n_images": len(samples),
         "n_dropped": dropped, "batch_size": section["batch_size"], "n_batches": n_batches,
         "sample_seed": section["seed"], "sample_order": "seeded random draw (cka_sample)",
         "n_skipped": len(bad),
         "layers": section["layers"], "hsic": "unbiased, averaged over minibatches", "models": identities,
         "versions": versions()}
write_cka(job.output[0], results, {m: h.layer_names for m, h in models.items()}, attrs, ids=ids,
          skipped_ids=[ids[i] for i, _ in sorted(bad)])

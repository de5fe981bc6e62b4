# One model's CKA pass over one dataset (docs/evaluations.md §9): the seeded CKA batches (the same
# for every model) through this model's own preprocessing, each selected layer's Gram matrix formed
# in a forward hook and written per batch to the model's pass file; compute_cka forms the pairs.
import logging

import torch

from beyond_imagenet.datasets.manifest import load_manifest
from beyond_imagenet.devices import lease_device
from beyond_imagenet.evaluations.cka.passes import (
    IMAGE_TOWERS,
    HookedModel,
    SameImages,
    cka_sample,
    collate_same_images,
    gram_pass,
    iterate_batches,
    readable_batches,
    select_layers,
    write_grams,
)
from beyond_imagenet.extract import BadImagesError
from beyond_imagenet.extraction_jobs import forward_threads
from beyond_imagenet.heads import cached_head
from beyond_imagenet.models import build_model
from beyond_imagenet.workflow import model_spec, setup, versions

job = setup(snakemake)
torch.set_num_threads(forward_threads(job))  # the loader workers take the job's other threads
dataset, name = job.wildcards.dataset, job.wildcards.model
section = job.params.settings
on_bad_image = job.params.on_bad_image
manifest = load_manifest(job.input.manifest, images=True)
# The same seeded draw and batches in every model's job (cka_sample is a function of the manifest
# and the settings only), so the pairs job can pair any two models' batches.
samples, dropped = cka_sample(manifest["samples"], section["n_images"], section["batch_size"], section["seed"])
if dropped:
    logging.warning("CKA on %s: %d of the %d drawn images do not fill a batch of %d and are dropped",
                    dataset, dropped, len(samples) + dropped, section["batch_size"])

spec = model_spec(job.params.model, job.params.head_identity)
head_path, templates = job.params.head, job.params.templates  # a CLIP model's cached head, "" for others
ids = [sid for sid, _ in samples]
bad = []


def finish():
    """After the last batch: every bad file named and nothing written, or the file's record."""
    if bad and on_bad_image == "error":
        raise BadImagesError(manifest["root"], [(ids[i], reason) for i, reason in sorted(bad)])
    if bad:
        logging.warning("CKA on %s: %d unreadable image(s) skipped", dataset, len(bad))
    attrs = {"model": name, "identity": job.params.identity, "preprocessing": loaded.preprocessing,
             "settings": section, "dataset": dataset, "manifest_fingerprint": manifest["fingerprint"],
             "n_images": len(samples), "n_dropped": dropped, "batch_size": section["batch_size"],
             "sample_seed": section["seed"], "n_skipped": len(bad), "versions": versions()}
    return attrs, ids, [ids[i] for i, _ in sorted(bad)]


with lease_device(job.resources.device, job.resources.lock_dir or None) as device:
    # the zero-shot head is built on the leased device where no job of the model has built it yet
    head = cached_head(head_path, spec, job.params.head_identity, templates, device) if head_path else None
    loaded = build_model(spec, job.params.protocol, head=head, logit_scale=job.params.logit_scale)
    layers = select_layers(IMAGE_TOWERS[spec.source](loaded.network), spec.family, section["layers"])
    logging.info("%s: %d layers (%s ... %s)", name, len(layers), layers[0][0], layers[-1][0])
    model = HookedModel(loaded.network, layers)
    loader = torch.utils.data.DataLoader(
        SameImages(manifest["root"], ids, {name: loaded.transform}), batch_size=section["batch_size"],
        shuffle=False, drop_last=True, num_workers=job.resources.num_workers, collate_fn=collate_same_images)
    batches = (images[name] for images in readable_batches(loader, bad))
    n = write_grams(job.output[0], model.layer_names, gram_pass(model, iterate_batches(batches), device), finish)
logging.info("wrote %s (%d batches of %d layers)", job.output[0], n, len(layers))

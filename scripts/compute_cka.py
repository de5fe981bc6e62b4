# Within- and cross-model CKA heatmaps of one dataset (docs/evaluations.md §9) from the models' pass
# files (written by their extraction jobs: beyond_imagenet/evaluations/cka/passes.py, run_pass): no
# model is built; every pair's minibatch CKA is formed from the stored per-batch Gram matrices,
# batch by batch, as a joint pass over all models would.
import json
import logging

import torch

from beyond_imagenet.datasets.manifest import load_manifest
from beyond_imagenet.evaluations.cka.passes import pairs_from_grams, write_cka
from beyond_imagenet.workflow import setup, versions

job = setup(snakemake)
# The job's threads only (1 unless --set-threads): on a shared node more intra-op threads than
# cores made these small products 50x slower (benchmarks/cka_pairs.py).
torch.set_num_threads(job.threads)
dataset = job.wildcards.dataset
manifest = load_manifest(job.input.manifest)
identities = job.params.identities  # model -> its identity
settings = job.params.settings
pairs = [tuple(pair) for pair in job.params.pairs]
# A pass file made for another model, weights, setting or image list is refused, not paired.
expected = {m: {"model": m, "identity": identity, "settings": settings, "dataset": dataset,
                "manifest_fingerprint": manifest["fingerprint"]} for m, identity in identities.items()}
found = pairs_from_grams({m: job.params.files[m] for m in identities}, pairs, expected)
logging.info("CKA on %s: %d pairs of %d models", dataset, len(pairs), len(found.attrs))
first = next(iter(found.attrs.values()))  # the files agree on images and batches (checked)
attrs = {"dataset": dataset, "manifest_fingerprint": manifest["fingerprint"], "n_images": int(first["n_images"]),
         "n_dropped": int(first["n_dropped"]), "batch_size": settings["batch_size"],
         "n_batches": int(first["n_batches"]), "sample_seed": settings["seed"],
         "sample_order": "seeded random draw (cka_sample)", "n_skipped": int(first["n_skipped"]),
         "layers": settings["layers"], "hsic": "unbiased, averaged over minibatches",
         "models": {m: {**identities[m], "preprocessing": json.loads(a["preprocessing"])} for m, a in found.attrs.items()},
         "versions": versions()}
write_cka(job.output[0], found.results, found.layer_names, attrs, ids=found.ids, skipped_ids=found.skipped_ids)

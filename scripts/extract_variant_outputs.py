# One invariance variant (spec §8) of one model on one dataset: the variant's transform, and for a
# resolution variant the model built at that size; same output contract as extract_outputs.
import logging

from beyond_imagenet.datasets.manifest import load_manifest
from beyond_imagenet.devices import lease_device
from beyond_imagenet.extract import extract
from beyond_imagenet.heads import read_head
from beyond_imagenet.variants import Variant, build_variant_model, spread_subset
from beyond_imagenet.workflow import setup

study = setup(snakemake)
model, dataset, name = snakemake.wildcards.model, snakemake.wildcards.dataset, snakemake.wildcards.variant
if study.is_standard_variant(model, name, dataset):
    raise RuntimeError(f"{name} is the standard evaluation for {model}; read {study.output(model, dataset)} instead")
settings = study.config["extraction"]
manifest = load_manifest(snakemake.input.manifest)
samples = spread_subset(manifest["samples"], snakemake.params.max_images)
logging.info("%s on %d of %d images of %s", name, len(samples), manifest["n_images"], dataset)
attrs = study.variant_attrs(model, dataset, manifest, name)
head = read_head(snakemake.input.head, study.head_identity(model)) if snakemake.input.get("head") else None
loaded = build_variant_model(study.models[model], Variant.parse(name), study.config["preprocessing"], head=head,
                             logit_scale=study.config["zero_shot"]["logit_scale"])
attrs.update(preprocessing=loaded.preprocessing, versions=study.versions())
with lease_device(settings["device"], settings["lock_dir"] or None) as device:
    extract(loaded.network, loaded.transform, manifest["root"], samples, snakemake.output[0], attrs,
            device=device, batch_size=settings["batch_size"], num_workers=settings["num_workers"],
            shard_size=settings["shard_size"], features_dtype=settings["features_dtype"],
            on_bad_image=settings["on_bad_image"])

from beyond_imagenet.datasets.manifest import load_manifest
from beyond_imagenet.devices import lease_device
from beyond_imagenet.extract import extract
from beyond_imagenet.heads import read_head
from beyond_imagenet.models import build_model
from beyond_imagenet.workflow import setup

study = setup(snakemake)
model, dataset = snakemake.wildcards.model, snakemake.wildcards.dataset
settings = study.config["extraction"]
manifest = load_manifest(snakemake.input.manifest)
attrs = study.expected_attrs(model, dataset, manifest)
head = read_head(snakemake.input.head, study.head_identity(model)) if snakemake.input.get("head") else None
loaded = build_model(study.models[model], study.config["preprocessing"], head=head,
                     logit_scale=study.config["zero_shot"]["logit_scale"], input_transform=attrs["input_transform"])
attrs.update(preprocessing=loaded.preprocessing, versions=study.versions())
with lease_device(settings["device"], settings["lock_dir"] or None) as device:
    extract(loaded.network, loaded.transform, manifest["root"], manifest["samples"], snakemake.output[0], attrs,
            device=device, batch_size=settings["batch_size"], num_workers=settings["num_workers"],
            shard_size=settings["shard_size"], features_dtype=settings["features_dtype"],
            on_bad_image=settings["on_bad_image"])

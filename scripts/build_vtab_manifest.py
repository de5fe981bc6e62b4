# Every (task, split) manifest of the study's VTAB datasets, one output each (rules/transfer.smk).
from beyond_imagenet.datasets.fetch import fetch_dataset
from beyond_imagenet.datasets.manifest import write_manifest
from beyond_imagenet.datasets.vtab import build_split_manifest
from beyond_imagenet.workflow import dataset_spec, setup

job = setup(snakemake)
for parent in job.params.fetch:  # a `source: download` copy: downloaded and unpacked unless complete
    fetch_dataset(dataset_spec(parent))
for record, path in zip(job.params.datasets, job.output, strict=True):
    manifest = build_split_manifest(dataset_spec(record))
    listing = job.params.listing.get(record["name"], "")
    if listing:  # a manual folder: the listing digest it was planned with (provenance)
        manifest["folder_signature"] = listing
    write_manifest(manifest, path)

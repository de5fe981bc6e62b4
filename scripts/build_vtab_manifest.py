from beyond_imagenet.datasets.manifest import write_manifest
from beyond_imagenet.datasets.vtab import build_split_manifest
from beyond_imagenet.workflow import dataset_spec, setup

job = setup(snakemake)
manifest = build_split_manifest(dataset_spec(job.params.dataset))
if job.params.listing:  # a manual folder: the listing digest it was planned with (provenance)
    manifest["folder_signature"] = job.params.listing
write_manifest(manifest, job.output[0])

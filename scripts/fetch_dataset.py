# A downloaded dataset: its files, its folder (both kept once complete) and its manifest (rules/datasets.smk).
from beyond_imagenet.datasets.fetch import fetch_dataset
from beyond_imagenet.datasets.manifest import build_manifest, write_manifest
from beyond_imagenet.workflow import dataset_spec, setup

job = setup(snakemake)
spec = dataset_spec(job.params.dataset)
fetch_dataset(spec)
write_manifest(build_manifest(spec), job.output[0])

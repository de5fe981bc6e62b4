from beyond_imagenet.datasets.manifest import write_manifest
from beyond_imagenet.datasets.vtab import build_split_manifest
from beyond_imagenet.workflow import setup

study = setup(snakemake)
write_manifest(build_split_manifest(study.datasets[snakemake.wildcards.dataset]), snakemake.output[0])

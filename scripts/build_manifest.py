from beyond_imagenet.datasets.manifest import build_manifest, write_manifest
from beyond_imagenet.workflow import setup

study = setup(snakemake)
write_manifest(build_manifest(study.datasets[snakemake.wildcards.dataset]), snakemake.output[0])

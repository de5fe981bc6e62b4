from beyond_imagenet.datasets.generate import generate
from beyond_imagenet.workflow import setup

study = setup(snakemake)
generate(study.datasets[snakemake.wildcards.dataset], snakemake.output[0])

from beyond_imagenet.datasets.generate import generate
from beyond_imagenet.workflow import dataset_spec, setup

job = setup(snakemake)
generate(dataset_spec(job.params.dataset), job.output[0])

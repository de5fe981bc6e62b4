from beyond_imagenet.datasets.fetch import fetch_file
from beyond_imagenet.workflow import dataset_spec, setup

job = setup(snakemake)
spec = dataset_spec(job.params.dataset)
# One file of the dataset's recipe (resumable, size/sha256/md5-verified, atomic).
fetch_file(spec.download_file(job.wildcards.filename), job.output[0])

from beyond_imagenet.datasets.fetch import fetch_file
from beyond_imagenet.workflow import setup

study = setup(snakemake)
spec = study.datasets[snakemake.wildcards.dataset]
# One file of the dataset's recipe (resumable, size/sha256/md5-verified, atomic).
fetch_file(spec.download_file(snakemake.wildcards.filename), snakemake.output[0])

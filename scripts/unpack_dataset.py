from beyond_imagenet.datasets.imagenet_val import reorganise_val_tar
from beyond_imagenet.download import safe_extract
from beyond_imagenet.workflow import setup

study = setup(snakemake)
spec = study.datasets[snakemake.wildcards.dataset]
if spec.source == "manual" and spec.kind == "imagenet_val":
    reorganise_val_tar(snakemake.input.archive, snakemake.output[0], spec.subdir)
else:
    safe_extract(snakemake.input.archive, snakemake.output[0])

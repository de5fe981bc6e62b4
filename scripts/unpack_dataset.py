from beyond_imagenet.datasets.fetch import unpack_dataset
from beyond_imagenet.datasets.imagenet_val import reorganise_val_tar
from beyond_imagenet.workflow import setup

study = setup(snakemake)
spec = study.datasets[snakemake.wildcards.dataset]
archive = snakemake.input.get("archive", [])
archives = [archive] if isinstance(archive, str) else list(archive)
if spec.source == "manual" and spec.kind == "imagenet_val":
    reorganise_val_tar(archives[0], snakemake.output[0], spec.subdir)
else:
    unpack_dataset(spec, archives, snakemake.output[0])

from beyond_imagenet.datasets.fetch import unpack_dataset
from beyond_imagenet.datasets.imagenet_val import reorganise_val_tar
from beyond_imagenet.workflow import dataset_spec, setup

job = setup(snakemake)
spec = dataset_spec(job.params.dataset)
archive = job.input.get("archive", [])
archives = [archive] if isinstance(archive, str) else list(archive)
if spec.source == "manual" and spec.kind == "imagenet_val":
    reorganise_val_tar(archives[0], job.output[0], spec.subdir)
else:
    unpack_dataset(spec, archives, job.output[0])

from beyond_imagenet.datasets.manifest import load_manifest
from beyond_imagenet.extract import read_outputs
from beyond_imagenet.imagenet_evals import imagenet_x_rows
from beyond_imagenet.tables import write_table
from beyond_imagenet.workflow import setup

study = setup(snakemake)
rows = []
for dataset in study.evaluation_datasets("imagenet_x"):
    kind = study.datasets[dataset].kind
    if kind != "imagenet_val":
        raise ValueError(f"evaluations.imagenet_x.datasets: {dataset!r} is {kind}; ImageNet-X annotates ImageNet val")
    manifest = load_manifest(study.manifest(dataset))
    for model in study.models:
        out = read_outputs(study.output(model, dataset), study.expected_attrs(model, dataset, manifest))
        rows += [{**study.model_columns(model), "dataset": dataset, **r} for r in imagenet_x_rows(out)]
write_table(rows, snakemake.output[0])

from beyond_imagenet.datasets.manifest import load_manifest
from beyond_imagenet.extract import read_outputs
from beyond_imagenet.imagenet_evals import shape_bias_rows
from beyond_imagenet.tables import write_table
from beyond_imagenet.workflow import setup

study = setup(snakemake)
rows = []
for dataset in study.evaluation_datasets("shape_bias"):
    manifest = load_manifest(study.manifest(dataset))
    for model in study.models:
        out = read_outputs(study.output(model, dataset), study.expected_attrs(model, dataset, manifest))
        rows += [{**study.model_columns(model), "dataset": dataset, **r} for r in shape_bias_rows(out)]
write_table(rows, snakemake.output[0])

from beyond_imagenet.datasets.imagenet_variants import pug_class_map
from beyond_imagenet.datasets.manifest import load_manifest
from beyond_imagenet.extract import read_outputs
from beyond_imagenet.imagenet_evals import pug_rows
from beyond_imagenet.tables import write_table
from beyond_imagenet.workflow import setup

study = setup(snakemake)
rule = snakemake.params.settings["rule"]
rows = []
for dataset in study.evaluation_datasets("pug"):
    manifest = load_manifest(study.manifest(dataset))
    class_map = pug_class_map(manifest["root"])
    for model in study.models:
        out = read_outputs(study.output(model, dataset), study.expected_attrs(model, dataset, manifest))
        rows += [{**study.model_columns(model), "dataset": dataset, **r} for r in pug_rows(out, class_map, rule)]
write_table(rows, snakemake.output[0])

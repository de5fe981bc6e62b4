from collections import defaultdict

from beyond_imagenet.datasets.manifest import load_manifest
from beyond_imagenet.extract import read_outputs
from beyond_imagenet.imagenet_evals import robustness_average, robustness_rows
from beyond_imagenet.tables import write_table
from beyond_imagenet.workflow import setup

study = setup(snakemake)
real = snakemake.params.settings["real"]
per_model = defaultdict(list)
for dataset in study.evaluation_datasets("robustness"):
    manifest = load_manifest(study.manifest(dataset))
    spec = study.datasets[dataset]
    for model in study.models:
        out = read_outputs(study.output(model, dataset), study.expected_attrs(model, dataset, manifest))
        rows = robustness_rows(out, spec.kind, spec.class_space, manifest["root"], real=real)
        per_model[model] += [{"dataset": dataset, **r} for r in rows]
table = []
for model, rows in per_model.items():
    rows += [{"dataset": "", **r} for r in robustness_average(rows)]
    table += [{**study.model_columns(model), **r} for r in rows]
write_table(table, snakemake.output[0])

# Top-1 and mean true-class probability per (model, dataset, variant) -> results/metrics/invariance.csv.
from beyond_imagenet.datasets.manifest import load_manifest
from beyond_imagenet.datasets.readers import class_space_mask
from beyond_imagenet.extract import read_outputs
from beyond_imagenet.invariance_table import invariance_rows
from beyond_imagenet.tables import write_table
from beyond_imagenet.variants import Variant, spread_subset
from beyond_imagenet.workflow import setup

study = setup(snakemake)
section = study.evaluations["invariance"]
rows = []
for dataset in study.evaluation_datasets("invariance"):
    manifest = load_manifest(study.manifest(dataset))
    subset = [sid for sid, _ in spread_subset(manifest["samples"], section.get("max_images"))]
    mask = class_space_mask(study.datasets[dataset].class_space)
    for model in study.models:
        outputs = {}
        for name in study.invariance_variants():
            if study.is_standard_variant(model, name, dataset):
                out = read_outputs(study.output(model, dataset), study.expected_attrs(model, dataset, manifest))
            else:
                out = read_outputs(study.output(model, dataset, name), study.variant_attrs(model, dataset, manifest, name))
            outputs[Variant.parse(name)] = out
        rows += invariance_rows(outputs, subset, mask, {**study.model_columns(model), "dataset": dataset})
write_table(rows, snakemake.output[0])  # config order of datasets, models and variants

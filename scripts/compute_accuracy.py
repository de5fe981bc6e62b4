from beyond_imagenet.datasets.manifest import load_manifest
from beyond_imagenet.datasets.readers import class_space_mask
from beyond_imagenet.extract import read_outputs
from beyond_imagenet.metrics.calibration import topk_accuracy
from beyond_imagenet.tables import write_table
from beyond_imagenet.workflow import setup

study = setup(snakemake)
rows = []
for dataset in study.evaluation_datasets("accuracy"):
    manifest = load_manifest(study.manifest(dataset))
    mask = class_space_mask(study.datasets[dataset].class_space)
    for model in study.models:
        out = read_outputs(study.output(model, dataset), study.expected_attrs(model, dataset, manifest))
        top = topk_accuracy(out["logits"], out["labels"], (1, 5), class_mask=mask)
        for metric, value in (("top1", top[1]), ("top5", top[5]), ("n_images", len(out["labels"])),
                              ("n_skipped", out["attrs"]["n_skipped"])):
            rows.append({**study.model_columns(model), "dataset": dataset, "metric": metric, "value": value})
write_table(rows, snakemake.output[0], sort_by=["dataset", "model", "metric"])

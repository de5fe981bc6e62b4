from beyond_imagenet.datasets.readers import class_space_mask
from beyond_imagenet.metrics.calibration import topk_accuracy
from beyond_imagenet.tables import write_table
from beyond_imagenet.workflow import evaluation_outputs, setup, skipped_row

study = setup(snakemake)
rows = []
for dataset, model, manifest, out in evaluation_outputs(study, "accuracy"):
    mask = class_space_mask(study.datasets[dataset].class_space)
    top = topk_accuracy(out["logits"], out["labels"], (1, 5), class_mask=mask)
    base = {**study.model_columns(model), "dataset": dataset}
    for metric, value in (("top1", top[1]), ("top5", top[5]), ("n_images", len(out["labels"]))):
        rows.append({**base, "metric": metric, "value": value})
    rows.append({**base, **skipped_row(out)})
write_table(rows, snakemake.output[0], sort_by=["dataset", "model", "metric"])

from beyond_imagenet.datasets.readers import class_space_mask
from beyond_imagenet.metrics.calibration import calibration_from_logits
from beyond_imagenet.tables import write_table
from beyond_imagenet.workflow import evaluation_outputs, setup, skipped_row

study = setup(snakemake)
n_bins = snakemake.params.n_bins
rows = []
for dataset, model, manifest, out in evaluation_outputs(study, "calibration"):
    # ImageNet-R/A: logits restricted to the benchmark's 200 classes *before* the softmax.
    mask = class_space_mask(study.datasets[dataset].class_space)
    result = calibration_from_logits(out["logits"], out["labels"], n_bins=n_bins, class_mask=mask)
    base = {**study.model_columns(model), "dataset": dataset}
    no_bin = {"bin": "", "bin_lower": "", "bin_upper": ""}
    for metric in ("ece", "mce", "accuracy", "mean_confidence", "overconfidence", "n_images"):
        rows.append({**base, "metric": metric, **no_bin, "value": result[metric]})
    rows.append({**base, **skipped_row(out, **no_bin)})
    bins = result["bins"]
    for b in range(n_bins):
        for metric, key in (("bin_count", "count"), ("bin_accuracy", "accuracy"), ("bin_confidence", "confidence")):
            rows.append({**base, "metric": metric, "bin": b, "bin_lower": bins["lower"][b],
                         "bin_upper": bins["upper"][b], "value": bins[key][b]})
write_table(rows, snakemake.output[0])

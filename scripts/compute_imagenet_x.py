from beyond_imagenet.imagenet_evals import imagenet_x_rows
from beyond_imagenet.tables import write_table
from beyond_imagenet.workflow import evaluation_outputs, setup, skipped_row

study = setup(snakemake)
rows = []
for dataset, model, manifest, out in evaluation_outputs(study, "imagenet_x"):  # imagenet_val kinds (validated)
    rows += [{**study.model_columns(model), "dataset": dataset, **r}
             for r in [*imagenet_x_rows(out), skipped_row(out, factor="")]]
write_table(rows, snakemake.output[0])

from beyond_imagenet.imagenet_evals import shape_bias_rows
from beyond_imagenet.tables import write_table
from beyond_imagenet.workflow import evaluation_outputs, setup, skipped_row

study = setup(snakemake)
rows = []
for dataset, model, manifest, out in evaluation_outputs(study, "shape_bias"):
    rows += [{**study.model_columns(model), "dataset": dataset, **r}
             for r in [*shape_bias_rows(out), skipped_row(out, category="")]]
write_table(rows, snakemake.output[0])

from beyond_imagenet.datasets.imagenet_variants import pug_class_map
from beyond_imagenet.imagenet_evals import pug_rows
from beyond_imagenet.tables import write_table
from beyond_imagenet.workflow import evaluation_outputs, setup, skipped_row

study = setup(snakemake)
rule = snakemake.params.settings["rule"]
rows = []
for dataset, model, manifest, out in evaluation_outputs(study, "pug"):
    class_map = pug_class_map(manifest["root"])
    rows += [{**study.model_columns(model), "dataset": dataset, **r}
             for r in [*pug_rows(out, class_map, rule), skipped_row(out, subset="", rule=rule)]]
write_table(rows, snakemake.output[0])

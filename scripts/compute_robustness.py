from collections import defaultdict

from beyond_imagenet.imagenet_evals import robustness_average, robustness_rows
from beyond_imagenet.study import ROBUSTNESS_BENCHMARK_OF_KIND
from beyond_imagenet.tables import write_table
from beyond_imagenet.workflow import evaluation_outputs, setup, skipped_row

study = setup(snakemake)
real = snakemake.params.settings["real"]
per_model = defaultdict(list)
for dataset, model, manifest, out in evaluation_outputs(study, "robustness"):
    spec = study.datasets[dataset]
    rows = robustness_rows(out, spec.kind, spec.class_space, manifest["root"], real=real)
    rows.append(skipped_row(out, benchmark=ROBUSTNESS_BENCHMARK_OF_KIND.get(spec.kind, spec.kind), corruption="",
                            severity=""))
    per_model[model] += [{"dataset": dataset, **r} for r in rows]
table = []
for model, rows in per_model.items():
    rows += [{"dataset": "", **r} for r in robustness_average(rows)]
    table += [{**study.model_columns(model), **r} for r in rows]
write_table(table, snakemake.output[0])

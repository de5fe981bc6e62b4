# The tidy table of one evaluation -> results/metrics/<evaluation>.csv: the evaluation's registry
# record (beyond_imagenet/evaluations/<name>.py) turns the job's inputs into rows; with its
# `uncertainty` param, bootstrap intervals (ci_low, ci_high) and, as the second output, its
# model-against-model comparisons (beyond_imagenet/uncertainty.py).
from beyond_imagenet.evaluations import get
from beyond_imagenet.tables import write_table
from beyond_imagenet.uncertainty import table_and_comparisons, write_comparisons
from beyond_imagenet.workflow import setup

job = setup(snakemake)
record = get(job.params.evaluation)
rows, comparisons = table_and_comparisons(record, job)
write_table(rows, job.output[0], sort_by=list(record.sort_by) if record.sort_by else None)
outputs = dict(job.output.items())
if "comparisons" in outputs:
    write_comparisons(comparisons, outputs["comparisons"])

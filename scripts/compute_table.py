# The tidy table of one evaluation -> results/metrics/<evaluation>.csv: the evaluation's registry
# record (beyond_imagenet/evaluations/<name>.py) turns the job's inputs into rows.
from beyond_imagenet.evaluations import get
from beyond_imagenet.tables import write_table
from beyond_imagenet.workflow import setup

job = setup(snakemake)
record = get(job.params.evaluation)
write_table(record.table(job), job.output[0], sort_by=list(record.sort_by) if record.sort_by else None)

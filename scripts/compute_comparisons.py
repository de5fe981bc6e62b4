# Every evaluation's model-against-model paired differences -> results/metrics/comparisons.csv.
from beyond_imagenet.tables import read_table
from beyond_imagenet.uncertainty import write_comparisons
from beyond_imagenet.workflow import setup

job = setup(snakemake)
rows = [row for path in job.input for row in read_table(path).to_dict("records")]
write_comparisons(rows, job.output[0])

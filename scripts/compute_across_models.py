# The profile's headlines against ImageNet top-1 across the study's models -> results/metrics/across_models.csv
# (rank correlations, group differences at matched accuracy; bootstrap intervals over models).
from beyond_imagenet.across_models import across_models, write_across_models
from beyond_imagenet.tables import read_table
from beyond_imagenet.workflow import setup

job = setup(snakemake)
write_across_models(across_models(read_table(job.input[0]), job.params.reference, job.params.uncertainty),
                    job.output[0])

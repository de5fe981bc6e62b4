from beyond_imagenet.across_models import plot_across_models
from beyond_imagenet.tables import read_table
from beyond_imagenet.workflow import setup

job = setup(snakemake)
plot_across_models(read_table(job.input[0]), job.figure_paths(), title=job.params.title)

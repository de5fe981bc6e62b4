from beyond_imagenet.tables import read_table
from beyond_imagenet.uncertainty import plot_comparisons
from beyond_imagenet.workflow import setup

job = setup(snakemake)
plot_comparisons(read_table(job.input[0]), job.figure_paths(), title=job.params.title)

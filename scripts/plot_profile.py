from beyond_imagenet.profile import plot_profile
from beyond_imagenet.tables import read_table
from beyond_imagenet.workflow import setup

job = setup(snakemake)
plot_profile(read_table(job.input[0]), job.figure_paths(), title=job.params.title)

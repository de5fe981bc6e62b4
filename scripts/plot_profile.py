from beyond_imagenet.plots_extra import plot_profile
from beyond_imagenet.tables import read_table
from beyond_imagenet.workflow import setup

study = setup(snakemake)
plot_profile(read_table(snakemake.input[0]), [snakemake.output.png, snakemake.output.pdf],
             title=f"Model profile: study {study.config['study']}")

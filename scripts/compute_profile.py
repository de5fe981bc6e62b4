# Headline number of every evaluation for every model -> results/metrics/profile.csv.
from beyond_imagenet.profile import build_profile, read_tables, write_profile
from beyond_imagenet.workflow import setup

study = setup(snakemake)
write_profile(build_profile(read_tables(dict(snakemake.input.items())), models=list(study.models)), snakemake.output[0])

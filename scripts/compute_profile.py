# Headline number of every evaluation for every model -> results/metrics/profile.csv.
from beyond_imagenet.profile import build_profile, read_tables, write_profile
from beyond_imagenet.workflow import setup

job = setup(snakemake)
write_profile(build_profile(read_tables(dict(job.input.items())), models=list(job.params.models)), job.output[0])

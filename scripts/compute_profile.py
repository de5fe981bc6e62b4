# Headline number of every evaluation for every model -> results/metrics/profile.csv (with whether
# each ranking is significant, from comparisons.csv when the study has comparisons).
from beyond_imagenet.profile import build_profile, read_tables, write_profile
from beyond_imagenet.tables import read_table
from beyond_imagenet.workflow import setup

job = setup(snakemake)
tables = dict(job.input.items())
comparisons = read_table(tables.pop("comparisons")) if "comparisons" in tables else None
write_profile(build_profile(read_tables(tables), models=list(job.params.models), comparisons=comparisons,
                            chance=dict(job.params.chance)), job.output[0])

import json

from beyond_imagenet.tables import write_table
from beyond_imagenet.transfer import transfer_rows
from beyond_imagenet.workflow import setup

study = setup(snakemake)
results = []
for path in snakemake.input:
    with open(path) as f:
        results.append(json.load(f))
write_table(transfer_rows(results, {m: study.model_columns(m) for m in study.models}), snakemake.output[0])

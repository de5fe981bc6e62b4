# Tidy numbers from the CKA matrices of every dataset -> results/metrics/cka.csv (for the profile).
from beyond_imagenet.cka import cka_summary_rows, read_cka
from beyond_imagenet.tables import write_table
from beyond_imagenet.workflow import setup

study = setup(snakemake)
columns = {m: study.model_columns(m) for m in study.models}
rows = []
for dataset, path in zip(study.evaluation_datasets("cka"), snakemake.input):
    matrices, _ = read_cka(path)
    rows += cka_summary_rows(matrices, columns, dataset)
write_table(rows, snakemake.output[0])

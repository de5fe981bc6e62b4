# profile.csv (+ across_models.csv) -> results/results.html: a sortable table and interactive scatters.
from beyond_imagenet.results_page import write_results_page
from beyond_imagenet.tables import read_table
from beyond_imagenet.workflow import setup

job = setup(snakemake)
across = read_table(job.input.across) if "across" in job.input.keys() else None
write_results_page(read_table(job.input.profile), job.output[0], title=job.params.title,
                   reference=job.params.reference, across=across)

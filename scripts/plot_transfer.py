from beyond_imagenet.paper_results import load_paper_results
from beyond_imagenet.tables import read_table
from beyond_imagenet.transfer_plots import plot_transfer
from beyond_imagenet.workflow import setup

study = setup(snakemake)
# Published top-1 per task, drawn beside ours for models that declare a paper_key.
paper = load_paper_results()["vtab"]["top1"]
plot_transfer(read_table(snakemake.input[0]), snakemake.wildcards.dataset,
              [snakemake.output.png, snakemake.output.pdf], paper_top1=paper)

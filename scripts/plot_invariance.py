from beyond_imagenet.paper_results import load_paper_results
from beyond_imagenet.plots_extra import plot_invariance
from beyond_imagenet.tables import read_table
from beyond_imagenet.workflow import setup

study = setup(snakemake)
dataset, metric = snakemake.wildcards.dataset, snakemake.wildcards.metric
# Published top-1 curves are on ImageNet val only.
paper = load_paper_results()["invariance"] if study.datasets[dataset].kind == "imagenet_val" else None
plot_invariance(read_table(snakemake.input[0]), dataset, metric, [snakemake.output.png, snakemake.output.pdf], paper=paper)

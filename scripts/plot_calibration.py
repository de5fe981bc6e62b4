from beyond_imagenet.paper_results import load_paper_results
from beyond_imagenet.plots import plot_confidence_histogram, plot_reliability
from beyond_imagenet.tables import read_table
from beyond_imagenet.workflow import setup

study = setup(snakemake)
dataset = snakemake.wildcards.dataset
table = read_table(snakemake.input[0])
paths = [snakemake.output.png, snakemake.output.pdf]
if snakemake.rule == "plot_reliability":
    # Published ECE, drawn beside ours for models that declare a paper_key.
    section = {"imagenet_val": "imagenet", "imagenet_r": "imagenet_r"}.get(study.datasets[dataset].kind)
    paper = load_paper_results()["calibration"].get(section, {}).get("ece") if section else None
    plot_reliability(table, dataset, paths, paper=paper)
else:
    plot_confidence_histogram(table, dataset, paths)

from beyond_imagenet.paper_results import load_paper_results
from beyond_imagenet.plots_imagenet import plot_imagenet_x, plot_pug, plot_robustness, plot_shape_bias
from beyond_imagenet.tables import read_table
from beyond_imagenet.workflow import setup

setup(snakemake)
table = read_table(snakemake.input[0])
paths = [snakemake.output.png, snakemake.output.pdf]
# Published numbers are drawn only beside models that declare a paper_key.
has_paper_models = table["paper_key"].notna().any()
paper = load_paper_results() if has_paper_models else {}
if snakemake.rule == "plot_robustness":
    plot_robustness(table, paths, paper=paper.get("robustness"))
elif snakemake.rule == "plot_imagenet_x":
    plot_imagenet_x(table, snakemake.wildcards.dataset, paths, paper=paper.get("imagenet_x"))
elif snakemake.rule == "plot_shape_bias":
    plot_shape_bias(table, snakemake.wildcards.dataset, paths, paper=paper.get("shape_bias"))
else:
    plot_pug(table, snakemake.wildcards.dataset, paths, paper=paper.get("pug"))

from beyond_imagenet.cka import read_cka
from beyond_imagenet.plots_extra import plot_cka
from beyond_imagenet.workflow import setup

study = setup(snakemake)
matrices, attrs = read_cka(snakemake.input[0])
labels = {m: spec.label for m, spec in study.models.items()}
plot_cka(matrices, snakemake.wildcards.kind, labels, snakemake.wildcards.dataset, int(attrs["n_images"]),
         [snakemake.output.png, snakemake.output.pdf])

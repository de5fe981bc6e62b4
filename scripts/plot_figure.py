# One figure of one evaluation (png + pdf), drawn by the function its registry record names.
from beyond_imagenet.evaluations import get_figure
from beyond_imagenet.workflow import setup

job = setup(snakemake)
_, figure = get_figure(job.params.figure)
figure.draw(job)

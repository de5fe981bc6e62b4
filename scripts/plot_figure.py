# Every figure of one evaluation (png + pdf each), each drawn by the function its registry record
# names, from the records of the job's `figures` param (rules/common.smk: plot_items).
from beyond_imagenet.evaluations import get_figure
from beyond_imagenet.workflow import FigureJob, setup

job = setup(snakemake)
for item in job.params.figures:
    _, figure = get_figure(item["figure"])
    figure.draw(FigureJob(job, item))

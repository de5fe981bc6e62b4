# Each profile headline against ImageNet top-1, one point per model (docs/evaluations.md §15).
from beyond_imagenet.vs_imagenet import draw
from beyond_imagenet.workflow import setup

draw(setup(snakemake))

"""Compare vision models beyond ImageNet accuracy.

The importable library behind the Snakemake workflow: model and dataset registries, extraction of
cached outputs, and metrics as pure functions over numpy arrays (usable without Snakemake).
"""

__version__ = "0.1.0"

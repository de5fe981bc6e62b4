"""Representation similarity (docs/evaluations.md §9): minibatch linear CKA with the unbiased HSIC,
online with forward hooks, all models in one job on the same images.

Unlike the other evaluations it runs its own pass over the images (``passes``: hooks, the pass,
its HDF5 file), one job per dataset (``rules/cka.smk``: ``compute_cka``); its table
(``cka.csv``, what the profile reads) and its heatmaps are drawn from those files.
"""

from __future__ import annotations

from typing import Any

from beyond_imagenet.evaluations import Evaluation, Figure, register
from beyond_imagenet.profile import Headline

#: The settings of the CKA pass (evaluations.cka.<key>): the compute_cka job's params.
PASS_SETTINGS = ("n_images", "batch_size", "seed", "layers")


def pairs(study) -> list[tuple[str, str]]:
    """(model_a, model_b) of every CKA matrix; (m, m) is within-model."""
    from beyond_imagenet.evaluations.cka.passes import model_pairs

    section = study.evaluations.get("cka", {})
    models = {m: {"family": s.family, "paradigm": s.paradigm} for m, s in study.models.items()}
    return model_pairs(models, section.get("pairs", "both"), section.get("cross_pairs", "contrast"))


def figure_kinds(study) -> list[str]:
    """Heatmap figures the pairs give: ``within`` and/or ``cross``."""
    found = pairs(study)
    return [k for k in ("within", "cross") if any((a == b) == (k == "within") for a, b in found)]


def matrix_file(study, dataset: str) -> str:
    return str(study.results / "metrics" / f"cka_{dataset}.h5")


def table(job) -> list[dict[str, Any]]:
    """Tidy numbers from the CKA matrices of every dataset -> cka.csv (inputs named by dataset)."""
    from beyond_imagenet.evaluations.cka.passes import cka_summary_rows, read_cka

    rows = []
    for dataset, path in job.input.items():
        matrices, _ = read_cka(path)
        rows += cka_summary_rows(matrices, job.params.models, dataset)
    return rows


def labels(study, wildcards) -> dict:
    return {"labels": {m: spec.label for m, spec in study.models.items()}}


def draw(job) -> None:
    from beyond_imagenet.evaluations.cka.passes import read_cka
    from beyond_imagenet.plots_extra import plot_cka

    matrices, attrs = read_cka(job.input[0])
    plot_cka(matrices, job.wildcards.kind, job.params.data["labels"], job.wildcards.dataset, int(attrs["n_images"]),
             job.figure_paths())


CKA = register(Evaluation(
    name="cka",
    title="Representation similarity",
    description="minibatch linear CKA (unbiased HSIC) within and across models",
    reads="images",
    table=table,
    group_columns=("dataset", "partner", "kind"),
    figures=(Figure("cka", draw, "cka", variants=figure_kinds, variant_wildcard="kind", data=labels,
                    source=lambda study, w: matrix_file(study, w.dataset)),),
    headlines=(Headline("cka", {"metric": "mean_layer_similarity", "kind": "within"}, None,
                        "mean layer-to-layer CKA ({dataset})"),),
))

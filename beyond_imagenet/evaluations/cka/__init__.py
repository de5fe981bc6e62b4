"""Representation similarity (docs/evaluations.md §9): minibatch linear CKA with the unbiased HSIC,
online with forward hooks, every model on the same images in the same seeded batches.

Unlike the other evaluations it runs its own pass over the images (``passes``: hooks, the pass,
its files): each model's extraction job, with the network it already built, stores each selected
layer's Gram matrix per batch (:func:`pass_file`; the registry's ``model_pass`` hook, so the pass
costs no job of its own), and one job per dataset without any model (``compute_cka``) forms every
pair's matrix from those files (:func:`matrix_file`); its table (``cka.csv``, what the profile
reads) and its heatmaps are drawn from the matrix files.
"""

from __future__ import annotations

import itertools
from typing import Any, Mapping, Sequence

import numpy as np

from beyond_imagenet.evaluations import Evaluation, Figure, ModelPass, register
from beyond_imagenet.profile import Headline
from beyond_imagenet.style import plt, save_figure

#: The settings of the CKA pass (evaluations.cka.<key>): what a pass file records (with the model's
#: identity and the dataset), params of the extraction jobs that run the pass and of compute_cka.
PASS_SETTINGS = ("n_images", "batch_size", "seed", "layers")


#: The version of the layer rule (``passes.select_layers``): part of the key under which the layer
#: lists checked at validation are cached, so a change of the rule is checked anew.
LAYER_RULE = 2


def layer_names(source: str, arch: str, family: str, layers: str | Sequence[str]) -> dict[str, Any] | None:
    """What ``passes.layer_names_on_meta`` says of ``arch`` (its CKA layers, or why none), asked once
    per library version and layer rule and then read from the cache (``model_specs.cached_fact``),
    so a Snakefile parse with a warm cache imports no torch. None where the tower cannot be built
    offline (an ``hf-hub:`` architecture): the pass job reports it."""
    import functools
    import json
    import logging

    from beyond_imagenet.model_specs import cached_fact

    def ask(source, arch, family, layers):
        from beyond_imagenet.evaluations.cka.passes import layer_names_on_meta

        return layer_names_on_meta(source, arch, family, layers)

    key = f"cka-layers-{LAYER_RULE}:{arch}:{family}:{json.dumps(layers)}"
    try:
        return cached_fact(source, key, functools.partial(ask, source, arch, family, layers))
    except Exception as err:  # not cached: asked again next time
        logging.getLogger(__name__).warning("cannot build %s %s on the meta device (%s: %s); its CKA layers are "
                                            "checked only by its pass job", source, arch, type(err).__name__, err)
        return None


def check(config: dict[str, Any]) -> list[str]:
    """Every model of the CKA study has layers to hook (``evaluations.cka.layers``, resolved on its
    tower built on the meta device, :func:`layer_names`): one that has none is refused before any
    job, naming it and what to do."""
    if "cka" not in config["evaluations"]:
        return []
    from beyond_imagenet.model_specs import ModelError, ModelSpec, unknown_architecture_message
    from beyond_imagenet.study import takes_part

    layers = config["evaluations"]["cka"].get("layers", "blocks")
    problems = []
    for name, entry in config["models"].items():
        if not takes_part(entry, "cka") or unknown_architecture_message(entry["source"], entry["name"]):
            continue  # an unknown architecture is refused with its own message
        try:
            family = ModelSpec.from_config(name, entry).family
        except ModelError:
            continue
        found = layer_names(entry["source"], entry["name"], family, layers)
        if found is not None and not found["layers"]:
            problems.append(
                f"  evaluations.cka.layers: models.{name} ({entry['source']} {entry['name']}) has no layers to hook "
                f"for CKA: {found['error']}. Give `layers:` as a list of regular expressions over module names "
                "that match in every model of the study, or leave the model out of the study")
    return problems


def model_pairs(models: Mapping[str, Mapping[str, str]], pairs: str = "both",
                cross_pairs: str = "contrast") -> list[tuple[str, str]]:
    """Which (a, b) CKA matrices to compute; (a, a) is within-model.

    ``models``: name -> {"family", "paradigm"} in study order. ``cross_pairs='contrast'`` keeps
    the paper's two axes: same paradigm and different family (ConvNet vs ViT), or same family and
    different paradigm (supervised vs CLIP); ``'all'`` takes every pair.
    """
    if pairs not in ("within", "cross", "both"):
        raise ValueError(f"pairs must be within, cross or both, got {pairs!r}")
    names = list(models)
    out = [(m, m) for m in names] if pairs in ("within", "both") else []
    if pairs in ("cross", "both"):
        for a, b in itertools.combinations(names, 2):
            same_family = models[a]["family"] == models[b]["family"]
            same_paradigm = models[a]["paradigm"] == models[b]["paradigm"]
            if cross_pairs == "all" or same_family != same_paradigm:
                out.append((a, b))
    return out


def pairs(study) -> list[tuple[str, str]]:
    """(model_a, model_b) of every CKA matrix; (m, m) is within-model."""
    section = study.evaluations.get("cka", {})
    models = {m: {"family": study.models[m].family, "paradigm": study.models[m].paradigm}
              for m in study.evaluation_models("cka")}
    return model_pairs(models, section.get("pairs", "both"), section.get("cross_pairs", "contrast"))


def figure_kinds(study) -> list[str]:
    """Heatmap figures the pairs give: ``within`` and/or ``cross``."""
    found = pairs(study)
    return [k for k in ("within", "cross") if any((a == b) == (k == "within") for a, b in found)]


def matrix_file(study, dataset: str) -> str:
    return str(study.results / "metrics" / f"cka_{dataset}.h5")


def pass_file(study, model: str, dataset: str) -> str:
    """One model's pass over one dataset: its layers' Gram matrices per seeded batch (``passes.write_grams``)."""
    return str(study.results / "cka" / model / f"{dataset}.h5")


def pass_settings(study) -> dict[str, Any]:
    """The pass's own settings only (not its list of datasets: adding one reruns no pass)."""
    return {k: study.evaluations.get("cka", {}).get(k) for k in PASS_SETTINGS}


def pass_models(study) -> list[str]:
    """The models some pair names (study order): only they need a pass."""
    used = {m for pair in pairs(study) for m in pair}
    return [m for m in study.evaluation_models("cka") if m in used]


def pass_expect(study, model: str, dataset: str) -> dict[str, Any]:
    """What ``model``'s pass file of ``dataset`` must record (with its manifest's fingerprint):
    what compute_cka asks of it, and its cache key in the extraction job."""
    return {"model": model, "identity": study.model_identity(model), "settings": pass_settings(study),
            "dataset": dataset}


def _pass_current(path, expect, manifest) -> bool:
    from beyond_imagenet.evaluations.cka.passes import pass_is_current

    return pass_is_current(path, expect, manifest)


def _run_pass(*args, **kwargs):
    from beyond_imagenet.evaluations.cka.passes import run_pass

    return run_pass(*args, **kwargs)


def table(job) -> list[dict[str, Any]]:
    """Tidy numbers from the CKA matrices of every dataset -> cka.csv (inputs named by dataset)."""
    from beyond_imagenet.evaluations.cka.passes import cka_summary_rows, read_cka

    rows = []
    for dataset, path in job.input.items():
        matrices, _ = read_cka(path)
        rows += cka_summary_rows(matrices, job.params.models, dataset)
    return rows


def samples(job) -> list:
    """The bootstrap over **minibatches** (docs/evaluations.md §11): every model of a pass saw the
    same batches, so a matrix's per-batch HSIC terms are resampled (the batches of a pass are one
    unit, identical across models) and the matrix recomputed; a file without the terms (written
    before they were kept) gives empty intervals."""
    import numpy as np

    from beyond_imagenet.evaluations import Sample
    from beyond_imagenet.evaluations.cka.passes import matrix_rows, read_cka
    from beyond_imagenet.metrics.cka import cka_from_batch_terms

    models = job.params.models
    out = []
    for dataset, path in job.input.items():
        matrices, _ = read_cka(path)
        for m in matrices:
            if m.batches is None:
                continue
            owners = [m.model_a] if m.kind == "within" else [m.model_a, m.model_b]
            for owner in owners:
                partner = m.model_b if owner == m.model_a else m.model_a
                unit = f"{dataset}:within" if m.kind == "within" else f"{dataset}:cross:{partner}"
                n = len(m.batches["ab"])
                out.append(Sample(owner, unit, np.asarray([f"batch-{i}" for i in range(n)]), dict(m.batches),
                                  lambda d, m=m, dataset=dataset, owner=owner: matrix_rows(
                                      m, cka_from_batch_terms(d["ab"], d["aa"], d["bb"]), models, dataset, owner),
                                  counts="batches"))
    return out


def labels(study, wildcards) -> dict:
    """The figure's data: model labels, the study's ``label_models`` (None: not given) and the
    models with a paper_key (who is named past ``style.MANY_MODELS``, ``style.labelled_models``)."""
    return {"labels": {m: spec.label for m, spec in study.models.items()},
            "label_models": study.config.get("label_models"),
            "paper": [m for m, spec in study.models.items() if getattr(spec, "paper_key", None)]}


# ------------------------------------------------------------------------------------ figures
def _ticks(ax, axis: str, layers: Sequence[str]) -> None:
    """Ticks by block index (0 = the hooked layer nearest the input), the same way for every source:
    timm's ``stages.2.blocks.5`` and open_clip's ``transformer.resblocks.3`` name their blocks
    differently, so names would make two models' axes incomparable."""
    step = max(1, len(layers) // 8)
    positions = list(range(0, len(layers), step))
    getattr(ax, f"set_{axis}ticks")(positions)
    getattr(ax, f"set_{axis}ticklabels")([str(i) for i in positions], fontsize=6)


def _axis_label(layers: Sequence[str], which: str = "") -> str:
    """A short axis label (the model's name is in the panel title): long names overlapped the
    neighbouring panel."""
    return f"{which + ' ' if which else ''}block 0–{len(layers) - 1} (input → output)"


#: Past ``style.MANY_MODELS``, at most this many per-pair layer heatmaps beside the summary matrix.
MAX_CROSS_PANELS = 6


def _heatmap(ax, m, labels: Mapping[str, str], kind: str):
    image = ax.imshow(np.asarray(m.cka, dtype=float), origin="lower", cmap="magma", vmin=0.0, vmax=1.0,
                      aspect="auto", interpolation="nearest")
    a, b = labels.get(m.model_a, m.model_a), labels.get(m.model_b, m.model_b)
    ax.set_title(a if kind == "within" else f"rows: {a}\ncolumns: {b}", fontsize=8 if kind == "within" else 7)
    ax.set_ylabel(_axis_label(m.layers_a, "row" if kind == "cross" else ""), fontsize=7)
    ax.set_xlabel(_axis_label(m.layers_b, "column" if kind == "cross" else ""), fontsize=7)
    _ticks(ax, "x", m.layers_b)
    _ticks(ax, "y", m.layers_a)
    return image


def cross_models(matrices: Sequence[Any]) -> list[str]:
    """The models of the cross matrices, in file (study) order."""
    return list(dict.fromkeys(x for m in matrices if m.kind == "cross" for x in (m.model_a, m.model_b)))


def plot_cka(matrices: Sequence[Any], kind: str, labels: Mapping[str, str], dataset: str, n_images: int,
             paths: Sequence, label_models: Sequence[str] | None = None, paper: Sequence[str] = ()):
    """Layer × layer CKA heatmaps, one panel per model (``within``) or per model pair (``cross``).

    ``matrices``: :class:`beyond_imagenet.evaluations.cka.passes.CkaMatrix` items; rows (y) are the layers of model a
    from the input upwards, columns (x) the layers of model b; both labelled by block index.
    Past ``style.MANY_MODELS`` models the ``cross`` figure is a model × model matrix of each pair's
    last-layer CKA (the ``last_layer`` of cka.csv) with the layer heatmaps of the labelled models'
    pairs only (``label_models`` / ``paper``, ``style.labelled_models``; at most
    :data:`MAX_CROSS_PANELS`): one panel per pair grew to 435 panels at 30 models.
    Returns the saved (closed) figure.
    """
    from beyond_imagenet.style import many_models, suptitle_above

    chosen = [m for m in matrices if m.kind == kind]
    if not chosen:
        raise ValueError(f"no {kind}-model CKA matrices in the file")
    if kind == "cross" and many_models(len(cross_models(chosen))):
        return _plot_cross_matrix(chosen, labels, dataset, n_images, paths, label_models, paper)
    cols = min(len(chosen), 4 if kind == "within" else 3)
    rows = -(-len(chosen) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=((3.6 if kind == "within" else 4.0) * cols, 3.4 * rows),
                             squeeze=False)
    for ax in axes.flat[len(chosen):]:
        ax.set_visible(False)
    image = None
    for ax, m in zip(axes.flat, chosen):
        image = _heatmap(ax, m, labels, kind)
    suptitle_above(fig, f"Linear CKA ({kind}-model) on {dataset}, n={n_images} images", fontsize=10)
    if image is not None:
        fig.colorbar(image, ax=list(axes.flat[: len(chosen)]), shrink=0.8, label="CKA")
    save_figure(fig, paths)
    return fig


def _plot_cross_matrix(chosen, labels, dataset, n_images, paths, label_models, paper):
    from beyond_imagenet.style import labelled_models, model_fontsize, row_inches, suptitle_above

    found = cross_models(chosen)
    models = [m for m in labels if m in found] + [m for m in found if m not in labels]  # study order
    n = len(models)
    index = {m: i for i, m in enumerate(models)}
    summary = np.full((n, n), np.nan)
    np.fill_diagonal(summary, 1.0)  # a representation against itself
    for m in chosen:
        value = float(np.asarray(m.cka, dtype=float)[-1, -1])
        summary[index[m.model_a], index[m.model_b]] = summary[index[m.model_b], index[m.model_a]] = value
    named = set(labelled_models(models, label_models, paper))
    panels = [m for m in chosen if m.model_a in named and m.model_b in named][:MAX_CROSS_PANELS]
    size = model_fontsize(n)
    names = [labels.get(m, m) for m in models]
    label_inches = max(len(x) for x in names) * size * 0.55 / 72
    side = max(4.0, row_inches(n) * n)
    cols = min(3, len(panels))
    panel_rows = -(-len(panels) // 3) if panels else 0
    width = max(side + label_inches + 1.6, 4.0 * cols)
    height = side + label_inches + 0.6 + 3.6 * panel_rows + (0 if panels else 0.5)
    fig = plt.figure(figsize=(width, height))
    grid = fig.add_gridspec(1 + panel_rows, max(1, cols),
                            height_ratios=[side + label_inches] + [3.4] * panel_rows)
    ax = fig.add_subplot(grid[0, :])
    image = ax.imshow(summary, cmap=plt.get_cmap("magma").with_extremes(bad="0.82"), vmin=0.0, vmax=1.0, aspect="equal", interpolation="nearest")
    ax.set_xticks(range(n), names, rotation=90, fontsize=size)
    ax.set_yticks(range(n), names, fontsize=size)
    computed = int((np.isfinite(summary).sum() - n) // 2)
    ax.set_title(f"last-layer CKA of each model pair ({computed} of {n * (n - 1) // 2} pairs computed"
                 + ("; grey: not computed" if computed < n * (n - 1) // 2 else "") + ")", fontsize=8)
    bar = fig.colorbar(image, ax=ax, shrink=0.7, pad=0.02)
    bar.set_label("CKA", fontsize=7)
    bar.ax.tick_params(labelsize=6)
    for k, m in enumerate(panels):
        _heatmap(fig.add_subplot(grid[1 + k // 3, k % 3]), m, labels, "cross")
    note = (f"layer × layer heatmaps: the {len(panels)} pairs of the labelled models" if panels else
            "layer × layer heatmaps: none (name models in the study's label_models: to draw their pairs, "
            f"at most {MAX_CROSS_PANELS})")
    suptitle_above(fig, f"Linear CKA (cross-model) on {dataset}, n={n_images} images, {n} models\n{note}",
                   fontsize=10)
    save_figure(fig, paths)
    return fig


def draw(job) -> None:
    from beyond_imagenet.evaluations.cka.passes import read_cka

    matrices, attrs = read_cka(job.input[0])
    data = job.params.data
    plot_cka(matrices, job.wildcards.kind, data["labels"], job.wildcards.dataset, int(attrs["n_images"]),
             job.figure_paths(), data.get("label_models"), data.get("paper", ()))


CKA = register(Evaluation(
    name="cka",
    title="Representation similarity",
    description="minibatch linear CKA (unbiased HSIC) within and across models",
    reads="images",
    table=table,
    samples=samples,
    pair_ignore=("partner", "partner_label"),
    group_columns=("dataset", "partner", "kind"),
    figures=(Figure("cka", draw, "cka", variants=figure_kinds, variant_wildcard="kind", data=labels, chance=False,
                    source=lambda study, w: matrix_file(study, w.dataset)),),
    check=check,
    model_pass=ModelPass(models=pass_models, output=pass_file, expect=pass_expect, current=_pass_current,
                         run=_run_pass),
    headlines=(Headline("cka", {"metric": "mean_layer_similarity", "kind": "within"}, None,
                        "mean layer-to-layer CKA ({dataset})"),),
))

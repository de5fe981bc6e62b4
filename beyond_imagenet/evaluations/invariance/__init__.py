"""Transformation invariance (docs/evaluations.md §8): scale, shift and resolution variants.

Every variant is an extraction of its own (``outputs/<model>/<dataset>@<variant>.h5``, asked for
through the record's ``variants`` hook); the level equal to the standard evaluation is read from
the standard outputs, so no job exists for it. This package keeps the whole evaluation together:
``transforms`` (the variant transforms, ViT position-embedding resampling, open_clip at another
resolution), ``variants`` (variant names, the study's variants, the model built for one) and, here,
the tidy table, the figure and the study-side helpers.

The table: the standard outputs hold every image, a variant may have been run on a subset
(``max_images``), and every variant is scored on exactly the same images.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import pandas as pd

from beyond_imagenet.evaluations import Evaluation, Figure, Sample, Variants, register
from beyond_imagenet.metrics.invariance import invariance_metrics
from beyond_imagenet.profile import Headline
from beyond_imagenet.style import (
    CHANCE_ALPHA,
    CHANCE_TEXT,
    at_chance,
    chance_note,
    chance_of,
    interval_lookup,
    legend_outside,
    model_styles,
    n_text,
    plt,
    save_figure,
)

if TYPE_CHECKING:  # pragma: no cover
    from beyond_imagenet.evaluations.invariance.names import Variant

log = logging.getLogger(__name__)

#: Per-kind summary rows (``variant`` = ``<kind>-summary``): what the profile reads.
SUMMARY_METRICS = ("mean_top1", "retained_top1")


def _rows_of(out: Mapping[str, Any], ids: Sequence[str]) -> np.ndarray:
    """The row of each of ``ids`` (in that order) in ``out``; every id must be present."""
    row = {sid: i for i, sid in enumerate(out["ids"])}
    missing = [sid for sid in ids if sid not in row]
    if missing:
        raise ValueError(f"{len(missing)} image(s) missing from the outputs, e.g. {missing[:3]}")
    return np.asarray([row[sid] for sid in ids], dtype=np.int64)


def restrict(out: Mapping[str, Any], ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels of ``out`` for ``ids`` (in that order); every id must be present."""
    index = _rows_of(out, ids)
    return np.asarray(out["logits"])[index], np.asarray(out["labels"])[index]


def per_image(item, manifest, block) -> dict[str, np.ndarray]:
    """Per image: correct and the softmax probability of its label (masked to the set's classes
    first), row by row as :func:`beyond_imagenet.metrics.invariance.invariance_metrics`."""
    from beyond_imagenet.datasets.readers import class_space_mask
    from beyond_imagenet.metrics.calibration import softmax

    labels = np.asarray(block["labels"], dtype=np.int64)
    probs = softmax(block["logits"], class_space_mask(item["class_space"]))
    return {"correct": probs.argmax(axis=1) == labels, "prob": probs[np.arange(len(labels)), labels]}


def restrict_vectors(out: Mapping[str, Any], ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The per-image ``correct`` and ``prob`` of ``out`` (:func:`per_image`) for ``ids``, in that order."""
    index = _rows_of(out, ids)
    return np.asarray(out["correct"])[index], np.asarray(out["prob"])[index]


def invariance_rows(outputs: Mapping[Variant, Mapping[str, Any]], subset: Sequence[str],
                    class_mask, base: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows (``transform``, ``level``, ``variant``, ``metric``, ``value``) for one model and dataset.

    ``subset``: the ids the variants were asked to run on; images skipped as unreadable in any
    variant are left out of all of them, so the curves compare like with like.
    """
    from beyond_imagenet.evaluations.invariance.names import STANDARD_VALUES

    common = set(subset)
    for out in outputs.values():
        common &= set(out["ids"])
    ids = [sid for sid in subset if sid in common]
    if len(ids) < len(subset):
        log.warning("%s: %d of %d images missing from some variant (skipped); scoring %d",
                    base.get("model"), len(subset) - len(ids), len(subset), len(ids))
    rows = []
    per_kind: dict[str, list[tuple[float, bool]]] = {}
    for variant, out in outputs.items():
        if "correct" in out:  # read per image (per_image)
            correct, prob = restrict_vectors(out, ids)
            if not len(correct):
                raise ValueError("no samples")
            scores = {"top1": float(np.mean(correct)), "true_class_prob": float(np.mean(prob))}
        else:  # whole logits in memory
            scores = invariance_metrics(*restrict(out, ids), class_mask)
        # The standard extraction records no variant: that is how it was reused for this level.
        is_standard = out["attrs"].get("variant", "") == ""
        head = {**base, "transform": variant.kind, "level": variant.value, "variant": variant.name,
                "standard": is_standard}
        for metric in ("top1", "true_class_prob"):
            rows.append({**head, "metric": metric, "value": scores[metric]})
        rows.append({**head, "metric": "n_images", "value": len(ids)})
        rows.append({**head, "metric": "n_skipped", "value": int(out["attrs"].get("n_skipped", 0))})
        baseline = float(variant.value) == float(STANDARD_VALUES[variant.kind])
        per_kind.setdefault(variant.kind, []).append((scores["top1"], baseline))
    return rows + summary_rows(per_kind, base)


def summary_rows(per_kind: Mapping[str, list[tuple[float, bool]]], base: dict[str, Any]) -> list[dict[str, Any]]:
    """Per transform: ``mean_top1`` and ``retained_top1`` from its levels' (top-1, is baseline)."""
    rows = []
    for kind, scored in per_kind.items():
        # retained_top1: mean top-1 of the other levels over the baseline level's top-1 (scale 1,
        # shift 0, resolution 224; reused from the standard extraction or, for shift 0, extracted).
        # NaN without a baseline level in the list, or when its top-1 is 0.
        standard = [top1 for top1, is_base in scored if is_base]
        others = [top1 for top1, is_base in scored if not is_base]
        retained = float(np.mean(others) / standard[0]) if standard and standard[0] > 0 and others else float("nan")
        head = {**base, "transform": kind, "level": "", "variant": f"{kind}-summary", "standard": ""}
        rows.append({**head, "metric": "mean_top1", "value": float(np.mean([t for t, _ in scored]))})
        rows.append({**head, "metric": "retained_top1", "value": retained})
    return rows


# --------------------------------------------------------------------------- study-side helpers
def study_variant_names(study) -> list[str]:
    """Variant names of the study's invariance evaluation, in config order."""
    from beyond_imagenet.evaluations.invariance.names import study_variants

    return [v.name for v in study_variants(study.evaluations.get("invariance", {}))]


def is_standard_variant(study, model: str, variant: str, dataset: str) -> bool:
    """Whether the variant's transform is the one the standard extraction of ``dataset`` used
    (not for sets whose supervised transform is their own, e.g. ImageNet-C's normalise-only)."""
    from beyond_imagenet.evaluations.invariance.names import Variant

    return (Variant.parse(variant).is_standard(study.models[model].paradigm, study.model_protocol(model))
            and study.input_transform(dataset) == "protocol")


def extraction_variants(study, model: str, dataset: str) -> list[str]:
    """The variants of ``dataset`` that need an extraction of their own for ``model``."""
    if dataset not in study.evaluation_datasets("invariance"):
        return []
    return [v for v in study_variant_names(study) if not is_standard_variant(study, model, v, dataset)]


def variant_identity(study, dataset: str, variant: str) -> dict[str, Any]:
    """What a variant's output records besides the standard identity: the image subset it runs on
    (``max_images``; 0 = every image), so changing it recomputes the variants only."""
    return {"max_images": int(study.evaluations.get("invariance", {}).get("max_images") or 0)}


def build_variant(spec, variant: str, protocol: str, head=None, logit_scale: float = 100.0):
    """The model and transform that extract ``variant`` (inside an extraction job: imports torch)."""
    from beyond_imagenet.evaluations.invariance.variants import Variant, build_variant_model

    return build_variant_model(spec, Variant.parse(variant), protocol, head=head, logit_scale=logit_scale)


def variant_subset(samples, expect: Mapping[str, Any]) -> list:
    """The manifest samples a variant runs on: the subset its recorded identity names."""
    from beyond_imagenet.evaluations.invariance.names import spread_subset

    return spread_subset(samples, expect.get("max_images") or None)


def items(study) -> list[dict[str, Any]]:
    """The outputs the table reads, one per (dataset, model, variant); a standard level is read
    from the standard output (its item records the variant it stands for)."""
    out = []
    for dataset in study.evaluation_datasets("invariance"):
        for model in study.evaluation_models("invariance"):  # no features-only model
            for name in study_variant_names(study):
                standard = is_standard_variant(study, model, name, dataset)
                out.append({**study.item(model, dataset, None if standard else name), "level": name})
    return out


def check(config: dict[str, Any]) -> list[str]:
    """The variants are defined for 224-px CLIP models and the supervised / clip paradigms
    (docs/evaluations.md §8); every resolution level must be one the architecture can run at (a
    ConvNet whose total stride exceeds the image cannot). Features-only models take no part."""
    if "invariance" not in config["evaluations"]:
        return []
    from beyond_imagenet.evaluations.invariance.names import PARADIGM_NAMES as PARADIGMS
    from beyond_imagenet.model_specs import architecture_facts, unknown_architecture_message
    from beyond_imagenet.study import takes_part

    section = config["evaluations"]["invariance"]
    levels = sorted(int(r) for r in section.get("resolution", []))
    problems = []
    for name, entry in config["models"].items():
        if not takes_part(entry, "invariance") or unknown_architecture_message(entry["source"], entry["name"]):
            continue
        paradigm = entry.get("paradigm") or ("clip" if entry["source"] == "open_clip" else "supervised")
        if paradigm not in PARADIGMS:
            problems.append(f"  models.{name}.paradigm: the invariance variants are defined for paradigms "
                            f"{sorted(PARADIGMS)}, not {paradigm!r} (leave it out of the invariance study)")
        if entry["source"] == "open_clip":
            size = architecture_facts("open_clip", entry["name"])["image_size"]
            if size not in (None, 224):
                problems.append(
                    f"  models.{name}.name: {entry['name']} is built at {size} px; the invariance variants "
                    "(docs/evaluations.md §8) are defined for 224-px CLIP models (leave it out of the invariance study)")
                continue
        too_small = _levels_too_small(entry["source"], entry["name"], tuple(levels))
        if too_small:
            sizes, reason = too_small
            problems.append(
                f"  evaluations.invariance.resolution: models.{name} ({entry['source']} {entry['name']}) cannot run "
                f"at {', '.join(f'{s} px' for s in sizes)} ({reason}); remove these levels or the model")
    return problems


def _levels_too_small(source: str, arch: str, levels: tuple[int, ...]) -> tuple[list[int], str] | None:
    """The resolution levels below 224 px ``arch`` cannot run at, with the first error, or None.

    Each level is tried by building the architecture (random weights) on the ``meta`` device,
    resized as for the variant, and running a shape-only forward pass: no memory, a fraction of a
    second per architecture. Only levels below 224 px are tried, smallest first, and none above
    the smallest that runs (a network that runs at s px runs at any larger size)."""
    from beyond_imagenet.model_specs import cached_fact

    failed, reason = [], ""
    for level in (lv for lv in levels if lv < 224):
        # asked once per library version (it imports torch and the library), then read from the cache
        error = cached_fact(source, f"runs:{arch}@{level}", functools.partial(_run_error, source, arch, level))
        if error is None:
            break
        failed.append(level)
        reason = reason or error
    return (failed, reason) if failed else None


@functools.lru_cache(maxsize=256)
def _run_error(source: str, arch: str, size: int) -> str | None:
    """None if ``arch`` runs on a ``size``-px image (shape-only pass on the meta device), else why not.
    An architecture that cannot be built or traced this way is not refused here (None)."""
    import torch

    from beyond_imagenet.evaluations.invariance.transforms import resize_vit_pos_embed

    try:
        with torch.device("meta"):
            if source == "timm":
                import timm

                tower = resize_vit_pos_embed(timm.create_model(arch, pretrained=False), size)
            else:
                tower = _open_clip_meta_tower(arch, size)
                if tower is None:
                    return None
            tower.eval()
    except Exception as err:  # not the size's fault: the extraction reports it with its own message
        log.debug("cannot build %s %s on the meta device (%s); resolution not checked", source, arch, err)
        return None
    try:
        with torch.no_grad(), torch.device("meta"):
            tower(torch.empty(1, 3, size, size, device="meta"))
    except NotImplementedError as err:  # an operation without a meta kernel: cannot tell
        log.debug("cannot trace %s %s on the meta device (%s); resolution not checked", source, arch, err)
        return None
    except Exception as err:
        return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return None


def _open_clip_meta_tower(arch: str, size: int):
    """The image tower of an open_clip architecture built at ``size`` px (random weights), inside a
    meta-device context: a timm trunk through timm, a native ViT through open_clip's own class."""
    import open_clip

    from beyond_imagenet.models import _register_bundled_open_clip_configs

    _register_bundled_open_clip_configs()
    cfg = open_clip.get_model_config(arch)
    if not cfg:
        return None
    vision = cfg.get("vision_cfg", {})
    if vision.get("timm_model_name"):
        import timm

        from beyond_imagenet.evaluations.invariance.transforms import resize_vit_pos_embed

        trunk = timm.create_model(vision["timm_model_name"], pretrained=False, num_classes=0)
        return resize_vit_pos_embed(trunk, size)
    if isinstance(vision.get("layers"), int):  # a native open_clip ViT
        from open_clip.model import _build_vision_tower

        return _build_vision_tower(cfg["embed_dim"], {**vision, "image_size": size})
    return None  # ModifiedResNet (RN50 ...): not checked here


# ------------------------------------------------------------------------------------ figures
INVARIANCE_PANELS = (("scale", "scale factor"), ("shift", "shift (original px)"), ("resolution", "resolution (px)"))


INVARIANCE_METRICS = {"top1": "top-1 accuracy (%)", "true_class_prob": "mean true-class probability"}


def _guessing(table: pd.DataFrame, dataset: str, chance: Mapping[str, float] | None) -> set[str]:
    """Models at chance on ``dataset``: their top-1 at the standard level (the interval's low end
    where there is one) at or below the dataset's chance top-1."""
    level = chance_of(chance, dataset)
    if level is None:
        return set()
    rows = table[(table["dataset"] == dataset) & (table["metric"] == "top1")
                 & (table["standard"].astype(str) == "True")].drop_duplicates("model")
    bounds = interval_lookup(rows, ["model"])
    return {str(m) for m, v in zip(rows["model"], rows["value"].astype(float))
            if at_chance(v, bounds(m) if bounds else None, level)}


def plot_invariance(table: pd.DataFrame, dataset: str, metric: str, paths: Sequence,
                    paper: Mapping[str, Any] | None = None, chance: Mapping[str, float] | None = None):
    """Three panels (scale, shift, resolution): ``metric`` against the level, one line per model.

    ``paper``: the published ``invariance`` section (top-1 %); drawn thin and dotted for models
    with a ``paper_key`` when ``metric`` is top1. With ci_low / ci_high in the rows: a light band of
    the model's colour over the interval at each level. A model at chance (``chance``: dataset ->
    chance top-1) is drawn faded. The legend sits beside the panels; n (images) in the title.
    Returns the saved (closed) figure.
    """
    data = table[(table["dataset"] == dataset) & (table["metric"] == metric) & (table["level"].notna())]
    if data.empty:
        raise ValueError(f"no invariance rows for dataset {dataset!r} and metric {metric!r}")
    styles = model_styles(table)  # the whole table: the study's models
    scale = 100.0 if metric == "top1" else 1.0
    kinds = [(k, label) for k, label in INVARIANCE_PANELS if (data["transform"] == k).any()]
    guessing = _guessing(table, dataset, chance)
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds), 3.6), squeeze=False)
    for ax, (kind, xlabel) in zip(axes[0], kinds):
        rows = data[data["transform"] == kind]
        for model, sub in rows.groupby("model", sort=False):
            sub = sub.assign(level=sub["level"].astype(float)).sort_values("level")
            first = sub.iloc[0]
            style = styles[str(model)]
            ax.plot(sub["level"], sub["value"].astype(float) * scale, label=first["label"], color=style.color,
                    linestyle=style.linestyle, marker=style.marker,
                    alpha=CHANCE_ALPHA if str(model) in guessing else 1.0)
            band = interval_lookup(sub, ["level"], scale)
            if band is not None:
                bounds = [band(level) or (np.nan, np.nan) for level in sub["level"]]
                ax.fill_between(sub["level"].to_numpy(), [b[0] for b in bounds], [b[1] for b in bounds],
                                color=style.color, alpha=0.15, linewidth=0, label=f"_band:{model}")
            key = first.get("paper_key")
            published = (paper or {}).get(kind, {}).get("top1", {}).get(key) if metric == "top1" else None
            if published:
                ax.plot(paper[kind]["values"], published, color=style.color,
                        linestyle=":", linewidth=1, alpha=0.6)
        standard = rows.loc[rows["standard"].astype(str) == "True", "level"].astype(float).unique()
        for level in standard:
            ax.axvline(level, color="k", linewidth=0.6, linestyle=":")
        ax.set_xlabel(xlabel)
        ax.set_title(kind.capitalize())
        ax.set_ylabel(INVARIANCE_METRICS.get(metric, metric))
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    model_of = dict(zip(data["label"], data["model"].astype(str)))
    labels = [f"{label} ({CHANCE_TEXT})" if model_of.get(label) in guessing else label for label in labels]
    legend_outside(axes[0][-1], handles, labels)
    note = "; published top-1 dotted" if metric == "top1" and paper and data["paper_key"].notna().any() else ""
    counts = table[(table["dataset"] == dataset) & (table["metric"] == "n_images")]["value"].astype(float)
    n = n_text(counts)
    fig.suptitle(f"Transformation invariance on {dataset} ({n + ' images; ' if n else ''}standard level: vertical "
                 f"line{note})", fontsize=10)
    fig.tight_layout()
    if guessing:
        chance_note(fig)
    save_figure(fig, paths)
    return fig


# ------------------------------------------------------------------------------ the evaluation
def table(job) -> list[dict[str, Any]]:
    """Top-1 and mean true-class probability per (model, dataset, variant), in config order of
    datasets, models and variants."""
    from beyond_imagenet.datasets.readers import class_space_mask
    from beyond_imagenet.evaluations.invariance.names import Variant, spread_subset
    from beyond_imagenet.workflow import reduced_item

    max_images = job.params.settings["max_images"]
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for item in job.params.cached:
        grouped.setdefault((item["dataset"], item["model"]), []).append(item)
    rows = []
    for (dataset, model), group in grouped.items():
        outputs, manifest = {}, None
        for item in group:
            manifest, out = reduced_item(job, item, per_image, samples=True)
            outputs[Variant.parse(item["level"])] = out
        subset = [sid for sid, _ in spread_subset(manifest["samples"], max_images)]
        mask = class_space_mask(group[0]["class_space"])
        rows += invariance_rows(outputs, subset, mask, {**job.params.models[model], "dataset": dataset})
    return rows


def samples(job) -> list[Sample]:
    """One sample per (model, dataset): every variant's per-image correctness and true-class
    probability on the common images, so a resample draws the same images for all variants."""
    from beyond_imagenet.evaluations.invariance.names import STANDARD_VALUES, Variant, spread_subset
    from beyond_imagenet.workflow import reduced_item

    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for item in job.params.cached:
        grouped.setdefault((item["dataset"], item["model"]), []).append(item)
    out_samples = []
    for (dataset, model), group in grouped.items():
        outputs, manifest = {}, None
        for item in group:
            manifest, out = reduced_item(job, item, per_image, samples=True)
            outputs[Variant.parse(item["level"])] = out
        subset = [sid for sid, _ in spread_subset(manifest["samples"], job.params.settings["max_images"])]
        common = set(subset).intersection(*(set(out["ids"]) for out in outputs.values()))
        ids = [sid for sid in subset if sid in common]
        heads, correct, prob = [], [], []
        for variant, out in outputs.items():
            variant_correct, variant_prob = restrict_vectors(out, ids)
            correct.append(variant_correct)
            prob.append(variant_prob)
            heads.append(({"dataset": dataset, "transform": variant.kind, "level": variant.value,
                           "variant": variant.name, "standard": out["attrs"].get("variant", "") == ""},
                          float(variant.value) == float(STANDARD_VALUES[variant.kind])))

        def rows(d, heads=heads, dataset=dataset):
            found, per_kind = [], {}
            for v, (head, baseline) in enumerate(heads):
                top1 = float(np.mean(d["correct"][:, v]))
                found += [{**head, "metric": "top1", "value": top1},
                          {**head, "metric": "true_class_prob", "value": float(np.mean(d["prob"][:, v]))}]
                per_kind.setdefault(head["transform"], []).append((top1, baseline))
            return found + summary_rows(per_kind, {"dataset": dataset})

        data = {"correct": np.stack(correct, axis=1), "prob": np.stack(prob, axis=1)}
        out_samples.append(Sample(model, dataset, np.asarray(ids, dtype=object), data, rows))
    return out_samples


def metric_variants(study) -> list[str]:
    return list(INVARIANCE_FIGURE_METRICS)


#: The figure's metrics (one figure each): ``invariance_<metric>_<dataset>``.
INVARIANCE_FIGURE_METRICS = ("top1", "true_class_prob")


def published(study, wildcards) -> dict:
    """The published top-1 curves, on ImageNet val only."""
    from beyond_imagenet.paper_results import load_paper_results

    kind = study.datasets[wildcards.dataset].kind
    return {"paper": load_paper_results()["invariance"] if kind == "imagenet_val" else None}


def draw(job) -> None:
    from beyond_imagenet.tables import read_table

    plot_invariance(read_table(job.input[0]), job.wildcards.dataset, job.wildcards.metric, job.figure_paths(),
                    paper=job.params.data["paper"], chance=job.params.chance)


INVARIANCE = register(Evaluation(
    name="invariance",
    title="Invariance",
    description="top-1 and true-class probability under scale, shift and resolution changes",
    class_spaces=frozenset({"imagenet1k", "imagenet_r", "imagenet_a"}),
    table=table,
    settings=("max_images",),
    group_columns=("dataset", "transform", "level", "variant"),
    figures=(Figure("invariance", draw, "invariance", variants=metric_variants, variant_wildcard="metric",
                    data=published),),
    # Top-1 kept under the transform: mean over the non-baseline levels / the baseline's top-1.
    headlines=(Headline("invariance", {"metric": "retained_top1"}, True,
                        "{transform}: % of top-1 retained ({dataset})", by=("dataset", "transform"), scale=100,
                        accuracy={"metric": "top1"}, n={"metric": "n_images"}),),
    check=check,
    variants=Variants(names=extraction_variants, build=build_variant, subset=variant_subset, identity=variant_identity),
    samples=samples,
))

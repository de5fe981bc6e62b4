"""The evaluation registry: one :class:`Evaluation` record per evaluation, like the model sources
(``models.SOURCES``) and dataset kinds (``data/datasets.yaml``).

A record says everything the rest of the workflow needs to know about one evaluation: which label
spaces and dataset kinds it accepts and its own config check; which cached outputs it reads
(standard ones, or extra extraction variants); the function that turns them into its tidy table
(and which of its settings that function uses: the compute job's params); its figures (one
function each); its profile headline; the published numbers drawn beside it. ``Study``, the rules,
the profile and the report read this registry; no other module keys anything by evaluation name.

Adding an evaluation ``X``: ``beyond_imagenet/evaluations/X.py`` (its record, table and figures,
registered with :func:`register`), ``beyond_imagenet/metrics/X.py`` (its pure math),
``rules/X.smk`` (its compute and plot rules, included from the Snakefile), its settings schema
``schemas/evaluations/X.schema.yaml``, a ``report/X.rst`` caption and an import line at the
bottom of this file. The README's "Layout" section walks through it.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from beyond_imagenet.profile import Headline

if TYPE_CHECKING:  # pragma: no cover
    from beyond_imagenet.study import Study
    from beyond_imagenet.workflow import Job

Rows = list[dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class Figure:
    """One figure of an evaluation, drawn by ``draw(job)`` from the evaluation's table.

    Files: ``results/figures/<name>[_<variant>]_<dataset>.{png,pdf}`` for each dataset of the
    evaluation (``per_dataset``) and each value of ``variants(study)`` (e.g. the CKA heatmap's
    ``within``/``cross``), or ``<name>.{png,pdf}`` for one figure over all datasets.
    ``data(study, wildcards)``: what the drawing uses besides its input table (published numbers,
    labels, a title), passed as the job's ``data`` param, so a change redraws it.
    """

    name: str
    draw: Callable[["Job"], Any]
    caption: str
    per_dataset: bool = True
    variants: Callable[["Study"], Sequence[str]] | None = None
    variant_wildcard: str = "kind"
    data: Callable[["Study", Any], dict[str, Any]] | None = None
    # What the figure is drawn from: the evaluation's table, or another of its files.
    source: Callable[["Study", Any], str] | None = None
    # Whether the study's ``layout: paired`` setting (schemas/evaluations) applies: the figure then
    # also reads the evaluation's comparisons (the margins' intervals), its second input.
    paired: bool = False
    # Whether the drawing marks models at chance: the plot job then gets the chance top-1 of the
    # datasets it draws (``figure_chance``) as its ``chance`` param.
    chance: bool = True

    def stem(self, dataset: str | None = None, variant: str | None = None) -> str:
        parts = [self.name, *([variant] if variant else []), *([dataset] if dataset else [])]
        return "_".join(parts)

    def pattern(self) -> str:
        """The file stem with Snakemake wildcards (``{dataset}``, ``{kind}``)."""
        return self.stem("{dataset}" if self.per_dataset else None,
                         f"{{{self.variant_wildcard}}}" if self.variants else None)


@dataclasses.dataclass(frozen=True)
class Sample:
    """One model's images of one set (a dataset, a VTAB task), as the bootstrap resamples them
    (docs/evaluations.md §11; beyond_imagenet/uncertainty.py).

    ``unit``: the name of the set of images: it seeds the resamples, so models scored on the same
    images get identical ones, and pairs the samples of two models. ``ids``: one per image (what
    pairs images across models). ``data``: per-image arrays (first axis: the images), reduced once
    from the output (correct vectors, confidences, factor memberships), not the logits. ``rows``:
    ``data`` -> the table rows of this sample with their grouping columns (``dataset`` ...) but not
    the model's, counts left out (they get no interval); run on the data and on every resample.
    ``strata``: one label per image to resample within (each stratum keeps its size), or None.
    ``correct``: metric -> the ``data`` key of its per-image 0/1 vector (McNemar's test).
    """

    model: str
    unit: str
    ids: Any
    data: dict[str, Any]
    rows: Callable[[dict[str, Any]], Rows]
    strata: Any = None
    correct: dict[str, str] = dataclasses.field(default_factory=dict)
    #: What one id is (the comparisons' ``n_unit``): "images", or "batches" (CKA resamples its batches).
    counts: str = "images"
    #: row -> the ``data`` key of the per-image values the row averages, NaN where an image is left
    #: out (e.g. ImageNet-ReaL's images without a label): the row's n counts the finite ones. None: every image.
    row_data: Callable[[Mapping[str, Any]], str | None] | None = None


@dataclasses.dataclass(frozen=True)
class Variants:
    """The extra extractions an evaluation asks for (``<dataset>@<variant>``, e.g. invariance's
    rescaled or shifted images), everything the machinery needs to know about them, so neither
    ``Study`` nor an extraction job names an evaluation or imports its modules.

    ``names(study, model, dataset)``: the variants of ``dataset`` that need an extraction of their
    own for ``model``. ``identity(study, dataset, variant)``: what a variant's output records besides
    the standard identity (part of its cache key; e.g. the image subset it runs on), or None.
    ``build(spec, variant, protocol, head, logit_scale)``: the ``LoadedModel`` that extracts the
    variant; ``subset(samples, expect)``: the manifest samples it runs on, from its recorded
    identity. Both run inside extraction jobs only: keep their heavy imports (torch) inside them.
    """

    names: Callable[["Study", str, str], list[str]]
    build: Callable[..., Any]
    subset: Callable[[Sequence, dict[str, Any]], list] | None = None
    identity: Callable[["Study", str, str], dict[str, Any]] | None = None


@dataclasses.dataclass(frozen=True)
class ModelPass:
    """An evaluation's own pass of a model over a dataset's images (``reads="images"``: CKA's Gram
    matrices per batch), run by the model's extraction job with the network that job already built
    and the device it already holds, so the pass costs no job, start-up or GPU submission of its own.
    The machinery (``Study.pass_plan``, the extraction job) knows it through these fields only.

    ``models(study)``: the models that need the pass. ``output(study, model, dataset)``: the file it
    writes (atomically). ``expect(study, model, dataset)``: what that file must record (its cache
    key: a file recording anything else is computed again; a change reruns the model's job).
    ``current(path, expect, manifest)``: whether a file on disk is that file (reused).
    ``run(loaded, spec, manifest, out, expect, device, num_workers, on_bad_image)``: computes and writes
    it. ``current`` and ``run`` run inside extraction jobs only: keep their heavy imports inside them.
    """

    models: Callable[["Study"], Sequence[str]]
    output: Callable[["Study", str, str], str]
    expect: Callable[["Study", str, str], dict[str, Any]]
    current: Callable[..., bool]
    run: Callable[..., Any]


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """One evaluation; see the module docstring. Field by field:

    ``title``: its report category. ``class_spaces`` / ``kinds``: the datasets it accepts (None =
    any). ``reads``: ``logits`` (ImageNet-1k logits: the model needs a classifier), ``features``
    or ``images`` (runs its own pass). ``table``: cached outputs -> rows (run by
    ``scripts/compute_table.py``); ``settings``: the keys of ``evaluations.<name>`` it uses (the
    compute job's params); ``sort_by``: row order when not the input order; ``group_columns``:
    what identifies a row besides model and metric. ``check(config)``: extra config problems
    (lines naming keys). ``variants``: the extra outputs it needs extracted (``<dataset>@<variant>``),
    a :class:`Variants` hook; ``model_pass``: its own pass over the images (``reads="images"``),
    run in each model's extraction job, a :class:`ModelPass` hook; ``input_transform(study, dataset)``: the transform it asks for a
    dataset's standard extraction (None = the study's protocol). ``samples(job)``: the images
    behind its rows as :class:`Sample` records (None: its table gets empty ``ci_low`` / ``ci_high``
    and no comparisons); ``combine(rows)``: a model's rows computed across its samples (e.g. an
    average over benchmarks) from the rows of its samples, on the data and on every resample.
    """

    name: str
    title: str
    description: str
    class_spaces: frozenset[str] | None = None
    kinds: frozenset[str] | None = None
    reads: str = "logits"
    table: Callable[["Job"], Rows] | None = None
    settings: tuple[str, ...] = ()
    sort_by: tuple[str, ...] | None = None
    group_columns: tuple[str, ...] = ()
    figures: tuple[Figure, ...] = ()
    headlines: tuple[Headline, ...] = ()
    check: Callable[[dict[str, Any]], list[str]] | None = None
    variants: Variants | None = None
    model_pass: ModelPass | None = None
    # Columns that do not pair two models' rows in the comparisons (CKA: a within row's partner).
    pair_ignore: tuple[str, ...] = ()
    input_transform: Callable[["Study", str], str | None] | None = None
    samples: Callable[["Job"], list[Sample]] | None = None
    combine: Callable[[Rows], Rows] | None = None

    def figure(self, name: str) -> Figure:
        for figure in self.figures:
            if figure.name == name:
                return figure
        raise KeyError(f"evaluation {self.name} has no figure {name!r}; its figures: "
                       f"{', '.join(f.name for f in self.figures)}")


def layout(study, evaluation: str) -> str:
    """The evaluation's figure layout setting: ``models`` (default) or ``paired``."""
    return study.evaluations.get(evaluation, {}).get("layout", "models")


def published_section(section: str) -> Callable[["Study", Any], dict[str, Any]]:
    """A figure's ``data``: the paper's ``section`` of published numbers (``paper_results.yaml``)
    when a model of the study is a paper model (``paper_key``), else None."""

    def data(study, wildcards) -> dict[str, Any]:
        from beyond_imagenet.paper_results import load_paper_results

        has_paper_models = any(spec.paper_key for spec in study.models.values())
        return {"paper": load_paper_results()[section] if has_paper_models else None}

    return data


def chance_levels(study) -> dict[str, float]:
    """The chance top-1 of every study dataset with a known label-space size (``readers.chance_level``),
    keyed by dataset name; a VTAB dataset's tasks as ``<dataset>/<task folder>``. Figures and the
    profile get it as a param (a model whose accuracy interval reaches it is drawn as at chance)."""
    from beyond_imagenet.datasets.readers import chance_level

    out = {}
    for name, spec in study.datasets.items():
        level = chance_level(spec.class_space)
        if level is None and spec.reader == "labelled_folder":  # your own classes: 1 / their number
            from beyond_imagenet.datasets.labelled import class_count

            n = class_count(spec.root, spec.labels)
            level = 1.0 / n if n else None
        if level is not None:
            out[name] = level
        for task in getattr(spec, "tasks", None) or ():
            level = chance_level(spec.class_space, task)
            if level is not None:
                out[f"{name}/{task}"] = level
    # Sorted: a lookup table, so the study's dataset order is no part of the jobs' params (a study
    # with its keys reordered reruns nothing).
    return dict(sorted(out.items()))


def figure_chance(study, evaluation: str, figure: Figure, wildcards) -> dict[str, float]:
    """The chance levels one plot job draws with: those of its dataset (a per-dataset figure) or of
    the evaluation's datasets, VTAB tasks included; nothing else, so adding a dataset to another
    evaluation reruns none of its figures."""
    dataset = getattr(wildcards, "dataset", None) if figure.per_dataset else None
    datasets = [dataset] if dataset else study.evaluation_datasets(evaluation)
    return {k: v for k, v in chance_levels(study).items() if k.split("/", 1)[0] in datasets}


EVALUATIONS: dict[str, Evaluation] = {}


def register(evaluation: Evaluation) -> Evaluation:
    if evaluation.name in EVALUATIONS:
        raise ValueError(f"evaluation {evaluation.name!r} is registered twice")
    EVALUATIONS[evaluation.name] = evaluation
    return evaluation


def get(name: str) -> Evaluation:
    try:
        return EVALUATIONS[name]
    except KeyError:
        raise KeyError(f"unknown evaluation {name!r}; registered: {', '.join(EVALUATIONS)}") from None


def get_figure(qualified: str) -> tuple[Evaluation, Figure]:
    """``"<evaluation>/<figure>"`` -> the records."""
    evaluation, _, figure = qualified.partition("/")
    record = get(evaluation)
    return record, record.figure(figure)


#: The built-in evaluations, in the order of the profile's columns.
BUILT_IN = ("accuracy", "calibration", "robustness", "imagenet_x", "shape_bias", "pug", "transfer", "invariance",
            "cka")
for _name in BUILT_IN:
    importlib.import_module(f"beyond_imagenet.evaluations.{_name}")

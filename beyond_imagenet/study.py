"""A study = models x datasets x evaluations: config validation, output paths and cache keys.

The Snakefile and every script go through :class:`Study`, so paths and the identity recorded in
(and checked against) each cached output are defined once.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from beyond_imagenet.datasets import DatasetError, DatasetSpec, resolve_dataset
from beyond_imagenet.datasets.vtab import expand_dataset
from beyond_imagenet.evaluations import EVALUATIONS
from beyond_imagenet.model_specs import (
    OPEN_CLIP_SCHEMES,
    ModelError,
    ModelSpec,
    local_dir_files,
    unknown_architecture_message,
    unknown_pretrained_message,
)

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"

log = logging.getLogger(__name__)

class ConfigError(ValueError):
    """The study config is invalid; the message names every offending key."""


#: Resamples a percentile interval needs beyond each of its ends (docs/evaluations.md §11): with
#: fewer, an end is the minimum or maximum of a handful of replicates, and one differing image
#: makes two models "distinguishable".
MIN_TAIL_RESAMPLES = 5


def min_resamples(level: float) -> int:
    """The fewest bootstrap resamples for a ``level`` interval: ``MIN_TAIL_RESAMPLES`` in each tail
    of ``(1 - level) / 2`` (200 at 0.95, 1,000 at 0.99)."""
    import math

    return math.ceil(round(MIN_TAIL_RESAMPLES / ((1 - level) / 2), 6))


def _uncertainty_problems(config: dict[str, Any]) -> list[str]:
    section = config["uncertainty"]
    level, resamples = section["level"], section["resamples"]
    if resamples >= min_resamples(level):
        return []
    return [(f"  uncertainty.resamples: {resamples} resamples leave {resamples * (1 - level) / 2:g} beyond each "
             f"end of a {level:g} interval; use at least {min_resamples(level)} for level {level:g} "
             f"({MIN_TAIL_RESAMPLES} in each tail, docs/evaluations.md §11), or a lower level")]


@functools.lru_cache(maxsize=4)
def load_schema(path: str | os.PathLike = SCHEMA_PATH) -> dict[str, Any]:
    """The study schema, with each registered evaluation's settings schema
    (``schemas/evaluations/<name>.schema.yaml``, next to the main one) under ``evaluations``."""
    with open(path) as f:
        schema = yaml.safe_load(f)
    folder = Path(path).parent / "evaluations"
    properties = schema["properties"]["evaluations"]["properties"]
    for name in EVALUATIONS:
        file = folder / f"{name}.schema.yaml"
        if not file.is_file():
            raise FileNotFoundError(f"evaluation {name!r} is registered but has no settings schema {file}")
        with open(file) as f:
            properties[name] = yaml.safe_load(f)
    return schema


def _with_defaults(validator_class):
    """A validator that also fills ``default`` values into the instance (jsonschema FAQ recipe)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """A subschema with its local ``$ref`` (``#/$defs/...``) followed."""
    while isinstance(schema, dict) and "$ref" in schema and schema["$ref"].startswith("#/"):
        target = root
        for part in schema["$ref"][2:].split("/"):
            target = target[part]
        schema = target
    return schema


def _types(schema: dict[str, Any], root: dict[str, Any]) -> set[str]:
    """Every JSON type a subschema (or any of its oneOf/anyOf branches) accepts."""
    schema = _resolve(schema, root)
    if not isinstance(schema, dict):
        return set()
    kind = schema.get("type", [])
    found = {kind} if isinstance(kind, str) else set(kind)
    for branch in schema.get("oneOf", []) + schema.get("anyOf", []):
        found |= _types(branch, root)
    return found


def _whole_number(value: Any, schema: dict[str, Any], root: dict[str, Any]) -> Any:
    """``value`` as an int where it is a float with no fraction (``15.0``, as YAML tools and
    ``--config n_bins=15.0`` write it) and the schema wants an integer: JSON Schema accepts 15.0 as
    an integer, but jobs use it as one (``range(15.0)`` fails inside a job) and its text is part of
    the params (``15.0`` and ``15`` would be two cache keys)."""
    if isinstance(value, float) and value.is_integer() and "integer" in (t := _types(schema, root)) \
            and "number" not in t:
        return int(value)
    return value


def normalise_integers(instance: Any, schema: dict[str, Any], root: dict[str, Any]) -> None:
    """Make every whole-number float the schema wants as an integer an int, in place, recursively
    (properties, additionalProperties, array items, oneOf/anyOf branches), so every job sees ints."""
    schema = _resolve(schema, root)
    if not isinstance(schema, dict):
        return
    branches = [_resolve(b, root) for b in schema.get("oneOf", []) + schema.get("anyOf", [])]
    if isinstance(instance, dict):
        for sub in [schema, *branches]:
            properties = sub.get("properties", {}) if isinstance(sub, dict) else {}
            extra = sub.get("additionalProperties") if isinstance(sub, dict) else None
            for key in list(instance):
                child = properties.get(key, extra if isinstance(extra, dict) else None)
                if child is not None:
                    instance[key] = _whole_number(instance[key], child, root)
                    normalise_integers(instance[key], child, root)
    elif isinstance(instance, list):
        for sub in [schema, *branches]:
            items = sub.get("items") if isinstance(sub, dict) else None
            if isinstance(items, dict):
                for i, item in enumerate(instance):
                    instance[i] = _whole_number(item, items, root)
                    normalise_integers(instance[i], items, root)


def validate_config(config: dict[str, Any], schema_path: str | os.PathLike = SCHEMA_PATH) -> dict[str, Any]:
    """Validate in place (filling defaults) and cross-check names; raise ConfigError naming keys.

    Whole-number floats of integer settings (``n_bins: 15.0``) become ints first
    (:func:`normalise_integers`); a fractional one (``15.5``) is refused naming the key."""
    from beyond_imagenet.zoo import expand_model_lists, input_size_notes

    # models_from: expanded into models: before anything else reads them (beyond_imagenet/zoo.py).
    listed = expand_model_lists(config)
    if listed:
        raise ConfigError("invalid study config:\n" + "\n".join(listed))
    schema = load_schema(str(schema_path))
    normalise_integers(config, schema, schema)
    validator = _with_defaults(jsonschema.Draft202012Validator)(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = []
        for err in errors:
            message = err.message
            if err.validator == "oneOf" and err.context:
                message = f"{err.instance!r} is not valid: " + "; or ".join(sorted({c.message for c in err.context}))
            lines.append(f"  {_key(err.absolute_path)}: {message}")
        raise ConfigError("invalid study config:\n" + "\n".join(lines))
    for entry in config["models"].values():  # a python model is named by its loader unless named
        if entry["source"] == "python":
            entry.setdefault("name", entry["loader"])
    expand_user_paths(config)
    problems = []
    for evaluation, body in config["evaluations"].items():
        for name in body.get("datasets", []):
            if name not in config["datasets"]:
                problems.append(
                    f"  evaluations.{evaluation}.datasets: unknown dataset {name!r}; "
                    f"defined under datasets: {', '.join(config['datasets'])}"
                )
    resources = config.get("resources_dir", "resources")
    for name, entry in config["datasets"].items():
        if entry.get("root") and entry.get("archive"):
            problems.append(f"  datasets.{name}: give `root:` (a folder in the layout) or `archive:` (to be "
                            "reorganised by the workflow), not both")
        try:
            spec = resolve_dataset(name, entry, resources)
            # A vtab entry also stands for one dataset per (task, split), named <name>-<task>-<split>.
            clashes = sorted((set(expand_dataset(spec, entry)) - {name}) & set(config["datasets"]))
        except DatasetError as err:
            problems.append(f"  {err}")
            continue
        if clashes:
            problems.append(f"  datasets.{name}: its task splits {clashes} clash with datasets of the same name")
        for evaluation, body in config["evaluations"].items():
            if name not in body.get("datasets", []):
                continue
            record = EVALUATIONS[evaluation]
            if record.class_spaces and spec.class_space not in record.class_spaces:
                problems.append(
                    f"  evaluations.{evaluation}.datasets: {name!r} ({spec.kind}, {spec.class_space}) "
                    f"cannot be used for {evaluation}; it needs one of {sorted(record.class_spaces)}"
                )
            if record.kinds and spec.kind not in record.kinds:
                problems.append(
                    f"  evaluations.{evaluation}.datasets: {name!r} is a {spec.kind} dataset; {evaluation} "
                    f"needs one of the kinds {sorted(record.kinds)}"
                )
    for evaluation in config["evaluations"]:  # each evaluation's own checks
        if EVALUATIONS[evaluation].check:
            problems += EVALUATIONS[evaluation].check(config)
    problems += _head_problems(config)
    problems += _own_space_problems(config)
    for name, entry in config["models"].items():
        schemed = entry["source"] == "open_clip" and entry["name"].startswith(OPEN_CLIP_SCHEMES)
        if schemed:  # the repository's or folder's own weights
            if isinstance(entry.get("pretrained"), str):
                problems.append(f"  models.{name}.pretrained: {entry['name'].split(':')[0]}: names carry their own "
                                "weights; leave `pretrained` out")
            if entry["name"].startswith("local-dir:"):
                try:
                    local_dir_files(entry["name"])
                except ModelError as err:
                    problems.append(f"  models.{name}.name: {err}")
        elif entry["source"] == "open_clip" and entry.get("pretrained", True) is True and not entry.get("checkpoint"):
            problems.append(
                f"  models.{name}.pretrained: open_clip models need a pretrained tag (e.g. laion400m_e31) "
                "or false for random weights"
            )
        unknown = unknown_architecture_message(entry["source"], entry["name"])
        if unknown:
            problems.append(f"  models.{name}.name: {unknown}")
        elif not entry.get("checkpoint"):  # with a checkpoint, `pretrained` is not used
            tag = unknown_pretrained_message(entry["source"], entry["name"], entry.get("pretrained", True))
            if tag:
                problems.append(f"  models.{name}.pretrained: {tag}")
        if entry.get("checkpoint"):
            from beyond_imagenet.checkpoints import (
                CheckpointError,
                resolve_checkpoint_path,
            )

            try:
                path = resolve_checkpoint_path(entry["checkpoint"])
            except CheckpointError as err:
                problems.append(f"  models.{name}.checkpoint: {err}")
            else:
                if not path.is_file():
                    problems.append(f"  models.{name}.checkpoint: file {path} does not exist")
    unknown = [m for m in config.get("label_models", []) if m not in config["models"]]
    if unknown:
        problems.append(f"  label_models: {unknown} are not models of the study; models: {', '.join(config['models'])}")
    problems += _group_problems(config)
    problems += _split_problems(config)
    problems += _uncertainty_problems(config)
    if problems:
        raise ConfigError("invalid study config:\n" + "\n".join(problems))
    for note in features_only_notes(config) + input_size_notes(config) + label_space_notes(config):
        log.warning("%s", note)
    canonical_order(config)
    return config


def _head_problems(config: dict[str, Any]) -> list[str]:
    """``source: python``, ``num_classes`` and ``head``: what only makes sense for some sources, and
    a classifier of the user's own classes in an evaluation that reads ImageNet-1k logits."""
    from beyond_imagenet.model_specs import loader_problem

    problems = []
    for name, entry in config["models"].items():
        source, key = entry["source"], f"  models.{name}"
        if source == "python":
            problem = loader_problem(entry["loader"])
            if problem:
                problems.append(f"{key}.loader: {problem}")
            if isinstance(entry.get("pretrained"), str):
                problems.append(f"{key}.pretrained: a python model's weights are its loader's, or `checkpoint:`; "
                                "a pretrained tag means nothing here")
        else:
            for only in ("loader", "args"):
                if only in entry:
                    problems.append(f"{key}.{only}: only for `source: python` (this model's source is {source})")
        if entry.get("head", "keep") == "drop" and source == "open_clip":
            problems.append(f"{key}.head: open_clip weights have no classifier to drop; set `features_only: true` "
                            "to leave out the zero-shot head")
        if not entry.get("num_classes"):
            continue
        if source == "open_clip":
            problems.append(f"{key}.num_classes: an open_clip model's logits are its zero-shot ImageNet head; "
                            "num_classes is for timm and python models with a classifier of your own classes")
        if entry.get("features_only") or entry.get("head") == "drop":
            problems.append(f"{key}.num_classes: a features-only model (features_only / head: drop) has no "
                            "classifier; leave num_classes out, or keep the head")
        if source == "timm" and not entry.get("checkpoint") and entry.get("pretrained", True) is not False:
            problems.append(f"{key}.num_classes: the pretrained weights' head has other classes (timm would put "
                            "a random classifier in its place); give the fine-tuned weights as `checkpoint:`, "
                            "or `pretrained: false` for random weights")
        problems += _label_space_problems(config, name, entry)
    return problems


def _logit_datasets(config: dict[str, Any]):
    """(evaluation, dataset, resolved spec) of every dataset of an evaluation that reads logits;
    datasets that do not resolve are left to the datasets' own checks."""
    resources = config.get("resources_dir", "resources")
    for evaluation, body in config["evaluations"].items():
        if EVALUATIONS[evaluation].reads != "logits":
            continue
        for dataset in body.get("datasets", []):
            try:
                yield evaluation, dataset, resolve_dataset(dataset, config["datasets"][dataset], resources)
            except (DatasetError, KeyError):
                continue  # reported with the datasets


def _own_space_problems(config: dict[str, Any]) -> list[str]:
    """A labelled folder of the user's own classes in an evaluation that reads logits is scored with
    the models whose head is of those classes (``num_classes``): refused when the study has none."""
    problems = []
    for evaluation, dataset, spec in _logit_datasets(config):
        if any(own_logits(e) and takes_part(e, evaluation) for e in config["models"].values()):
            continue
        if spec.class_space == OWN_SPACE:
            problems.append(
                f"  evaluations.{evaluation}.datasets: {dataset!r} ({spec.kind}, {OWN_SPACE}) cannot be used for "
                f"{evaluation} by any model of this study: it scores the logits of a head of the folder's own "
                "classes (`num_classes:`, docs/data-and-weights.md), and no model has one. Linear probes and "
                "CLIP zero-shot on it are transfer's")
    return problems


def _label_space_problems(config: dict[str, Any], name: str, entry: dict[str, Any]) -> list[str]:
    """A ``num_classes`` model in an evaluation that reads logits is scored only on datasets whose
    labels are its own classes: every ImageNet-derived (or VTAB) dataset of such an evaluation is
    refused, naming the model, the evaluation and the dataset."""
    problems = []
    for evaluation, dataset, spec in _logit_datasets(config):
        if not takes_part(entry, evaluation):
            continue
        if spec.class_space != OWN_SPACE:
            problems.append(
                f"  models.{name}.num_classes: its {entry['num_classes']} logits are classes of your own, "
                f"but evaluations.{evaluation} scores ImageNet-1k logits on {dataset!r} ({spec.class_space}). "
                f"Score it on a labelled folder of its {entry['num_classes']} classes, take its backbone's "
                f"features only (`head: drop`: transfer, cka), or leave {evaluation} out of this study")
            continue
        from beyond_imagenet.datasets.labelled import class_count

        classes = class_count(spec.root, getattr(spec, "labels", None))  # a cheap look: folder names or CSV
        if classes is not None and classes != entry["num_classes"]:
            problems.append(
                f"  models.{name}.num_classes: {entry['num_classes']} classes, but {dataset!r} of "
                f"evaluations.{evaluation} has {classes}: its logits must be the folder's classes, in sorted "
                "class-name order")
    return problems


def expand_user_paths(config: dict[str, Any]) -> None:
    """Expand ``~`` / ``~user`` in the settings that are paths on this machine, in place, once, at
    load: nothing below the shell expands them, so ``root: ~/photos`` was looked up as a folder
    literally named ``~`` (and ``results_dir: ~/runs`` created one). Every job sees the expanded
    path (its params and the Study's paths); a path without ``~`` is left exactly as written, so
    no cached output changes identity."""

    def expand(holder: dict[str, Any], key: str) -> None:
        value = holder.get(key)
        if isinstance(value, str) and value.startswith("~"):
            holder[key] = os.path.expanduser(value)

    for key in ("results_dir", "resources_dir"):
        expand(config, key)
    expand(config.get("extraction", {}), "lock_dir")
    for entry in config.get("datasets", {}).values():
        expand(entry, "root")
        expand(entry, "archive")
        expand(entry, "labels")
    for entry in config.get("models", {}).values():
        expand(entry, "checkpoint")  # pkg://... does not start with ~


#: Top-level mappings whose entries keep the study's order (each entry's own keys are sorted): the
#: models' order is the row order of the tables, of figures and of every comparison pair (a - b);
#: the order of datasets and evaluations is the order of planning and messages only (no job's
#: params depend on it: an extraction job's items are sorted, rules/common.smk group_items).
ORDERED_MAPPINGS = ("models", "datasets", "evaluations")


def canonical_order(config: dict[str, Any]) -> dict[str, Any]:
    """Sort the keys of every mapping of the config, recursively and in place, but keep the order
    of the entries of ``ORDERED_MAPPINGS`` (their own keys are sorted). Snakemake compares a job's
    params by their text, where a dict's keys come in insertion order: the same study with its keys
    in another order (a YAML tool rewrote it) would rerun every job. Lists keep their order."""
    for key, value in list(config.items()):
        if key in ORDERED_MAPPINGS and isinstance(value, dict):
            for entry in value.values():
                _sort_keys(entry)
        else:
            _sort_keys(value)
    _reorder(config, sorted(config, key=str))
    return config


def _sort_keys(value: Any) -> None:
    if isinstance(value, dict):
        for child in value.values():
            _sort_keys(child)
        _reorder(value, sorted(value, key=str))
    elif isinstance(value, list):
        for child in value:
            _sort_keys(child)


def _reorder(mapping: dict[str, Any], keys: list) -> None:
    """Put ``mapping``'s keys in ``keys`` order in place (Snakemake holds the config object itself)."""
    if list(mapping) != keys:
        items = [(k, mapping[k]) for k in keys]
        mapping.clear()
        mapping.update(items)


#: The class space of a labelled folder of the user's own classes (datasets/labelled.py).
OWN_SPACE = "own"


def own_logits(entry: dict[str, Any]) -> bool:
    """Whether a model entry's logits are classes of the user's own (``num_classes``), not ImageNet-1k."""
    return bool(entry.get("num_classes"))


def label_space_notes(config: dict[str, Any]) -> list[str]:
    """One line per evaluation that reads logits and has a labelled folder of the user's own classes:
    the models with ImageNet-1k logits it leaves out there (they score the ImageNet sets only)."""
    notes = []
    resources = config.get("resources_dir", "resources")
    for evaluation, body in config["evaluations"].items():
        if EVALUATIONS[evaluation].reads != "logits":
            continue
        own = [d for d in body.get("datasets", [])
               if resolve_dataset(d, config["datasets"][d], resources).class_space == OWN_SPACE]
        imagenet = [m for m, e in config["models"].items() if takes_part(e, evaluation) and not own_logits(e)]
        if own and imagenet:
            notes.append(f"evaluations.{evaluation}: {', '.join(imagenet)} (ImageNet-1k logits) not scored on "
                         f"{', '.join(own)} (classes of your own): only models with `num_classes:` of those "
                         "classes are")
    return notes


def takes_part(entry: dict[str, Any], evaluation: str) -> bool:
    """Whether a model entry takes part in an evaluation: a ``features_only`` model (or ``head:
    drop``) has no ImageNet-1k logits, so it is left out of every evaluation that reads them; a
    python model is left out of those with extraction variants (invariance: the network is rebuilt
    at other resolutions with the libraries' own preprocessing, which a loader does not offer)."""
    record = EVALUATIONS[evaluation]
    if (entry.get("features_only") or entry.get("head") == "drop") and record.reads == "logits":
        return False
    return not (entry.get("source") == "python" and record.variants is not None)


def features_only_notes(config: dict[str, Any]) -> list[str]:
    """One line per features-only model: the evaluations of the study it is left out of."""
    notes = []
    for name, entry in config["models"].items():
        left_out = [ev for ev in config["evaluations"] if not takes_part(entry, ev)]
        if not left_out:
            continue
        kept = [ev for ev in config["evaluations"] if takes_part(entry, ev)]
        if entry.get("features_only") or entry.get("head") == "drop":
            what, why = ("features_only" if entry.get("features_only") else "head: drop"), "they need ImageNet-1k logits"
        else:
            what, why = "source python", "their variants rebuild the network at other resolutions"
        notes.append(f"models.{name}: {what}; left out of {', '.join(left_out)} ({why}); it takes part in "
                     f"{', '.join(kept) if kept else 'no evaluation of this study'}")
    return notes


class _StrictLoader(yaml.SafeLoader):
    """``yaml.safe_load`` that refuses a key given twice in one mapping (PyYAML keeps the last)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:  # the keys written here; what a merge key (<<:) brings may be overridden
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}: first on line {seen[key]}, again on line {line} "
                "(YAML keeps only the last one; remove or rename one of them)", key_node.start_mark)
        seen[key] = line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a study YAML strictly: a syntax error or a duplicate key raises ConfigError naming the
    file and the line(s). Snakemake's own loader keeps the last of two equal keys silently."""
    try:
        with open(path, encoding="utf-8") as f:
            config = yaml.load(f, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
        problem = " ".join(p for p in (err.context, err.problem) if p)
        raise ConfigError(f"{where}: {problem}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err})") from None
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: a study config is a mapping of keys (models:, datasets:, evaluations:), "
                          f"not a {type(config).__name__}")
    return config


def check_config_files(paths) -> None:
    """Re-read every config file of a run strictly (duplicate keys, syntax): see read_config_file."""
    for path in paths:
        if os.path.isfile(path):  # Snakemake has read it already; one gone since is its business
            read_config_file(path)


def _group_problems(config: dict[str, Any]) -> list[str]:
    """``extraction.groups``: known datasets, each in one group, names that are not dataset names."""
    problems, seen = [], {}
    for group, names in config["extraction"].get("groups", {}).items():
        if group in config["datasets"] or group == "all":
            problems.append(f"  extraction.groups.{group}: a group may not be named like a dataset or 'all'")
        for name in names:
            if name not in config["datasets"]:
                problems.append(f"  extraction.groups.{group}: unknown dataset {name!r}; defined under datasets: "
                                f"{', '.join(config['datasets'])}")
            elif name in seen:
                problems.append(f"  extraction.groups.{group}: {name!r} is already in group {seen[name]!r}; "
                                "a dataset is extracted by one job")
            seen.setdefault(name, group)
    return problems


def _split_problems(config: dict[str, Any]) -> list[str]:
    """``extraction.split``: study datasets with one file each, in no named group (the schema has
    checked that each K is a positive whole number)."""
    problems = []
    grouped = {d: g for g, names in config["extraction"].get("groups", {}).items() for d in names}
    for name in config["extraction"].get("split", {}):
        key = f"  extraction.split.{name}"
        if "@" in name:
            dataset = name.split("@", 1)[0]
            problems.append(f"{key}: variants are not split; name the dataset ({dataset!r}): its standard file is "
                            "split, its invariance variants are extracted by their usual group's job")
        elif name not in config["datasets"]:
            problems.append(f"{key}: unknown dataset {name!r}; defined under datasets: {', '.join(config['datasets'])}")
        elif config["datasets"][name].get("kind") == "vtab":
            problems.append(f"{key}: a vtab dataset is not split (its task splits are many small files, extracted "
                            "by one job per model); split a dataset that is one large file")
        elif name in grouped:
            problems.append(f"{key}: {name!r} is also in extraction.groups.{grouped[name]}; a split dataset is "
                            "extracted by its own part jobs: remove it from the group")
    return problems


def split_group(group: str) -> tuple[str, int, int] | None:
    """``(dataset, part, parts)`` of a part group ``<dataset>@part-<k>-of-<K>`` (extraction.split), else None."""
    match = re.fullmatch(r"(.+)@part-([0-9]+)-of-([0-9]+)", group)
    return (match.group(1), int(match.group(2)), int(match.group(3))) if match else None


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    config = read_config_file(path)
    try:
        return validate_config(config)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


class Study:
    def __init__(self, config: dict[str, Any]):
        self.config = config
        self.results = Path(config.get("results_dir", "results"))
        self.resources = config.get("resources_dir", "resources")
        try:
            self.models = {n: ModelSpec.from_config(n, e) for n, e in config["models"].items()}
        except ModelError as err:
            raise ConfigError(str(err)) from None
        self.datasets: dict[str, DatasetSpec] = {}
        for n, e in config["datasets"].items():
            # A vtab entry adds one dataset per extracted (task, split): datasets/vtab.py.
            self.datasets.update(expand_dataset(resolve_dataset(n, e, self.resources), e))
        self.evaluations: dict[str, dict[str, Any]] = config["evaluations"]
        self._plans: dict[str, dict[str, list[tuple[str, str | None]]]] = {}
        self._pass_plans: dict[str, dict[str, list[tuple[str, str]]]] = {}
        self._pass_models: dict[str, set[str]] = {}

    # ------------------------------------------------------------------------------- paths
    def output(self, model: str, dataset: str, variant: str | None = None) -> str:
        """The cached output of (model, dataset[, variant]), as its extraction job writes it under
        ``results/extracted/<model>/`` and every reader reads it. It is no Snakemake output (only
        its group's marker is, :meth:`output_marker`): Snakemake deleting a rerun job's outputs
        leaves it alone, so a rerun of a group reuses every file whose extraction key still matches."""
        suffix = f"@{variant}" if variant else ""
        return str(self.results / "extracted" / model / f"{dataset}{suffix}.h5")

    def manifest(self, dataset: str) -> str:
        return str(self.results / "manifests" / f"{dataset}.json")

    def head(self, model: str) -> str:
        return str(self.results / "heads" / f"{model}.h5")

    def metric(self, evaluation: str) -> str:
        return str(self.results / "metrics" / f"{evaluation}.csv")

    def figure(self, name: str, ext: str = "png") -> str:
        return str(self.results / "figures" / f"{name}.{ext}")

    # ------------------------------------------------------------------------ what to run
    def evaluation_datasets(self, evaluation: str) -> list[str]:
        return list(self.evaluations.get(evaluation, {}).get("datasets", []))

    def extraction_datasets(self, dataset: str) -> list[str]:
        """What is extracted for a study dataset: itself, or (vtab) one dataset per task split."""
        spec = self.datasets[dataset]
        return list(spec.split_datasets().values()) if hasattr(spec, "split_datasets") else [dataset]

    def evaluation_models(self, evaluation: str) -> list[str]:
        """The models (config order) an evaluation runs on: all of them, but a ``features_only``
        model is left out of the evaluations that read ImageNet-1k logits, and a model is left
        out of one where it scores none of its datasets (:meth:`scores`)."""
        return [m for m in self.models if self.runs_on(evaluation, m)]

    def model_evaluations(self, model: str) -> list[str]:
        """The study's evaluations ``model`` takes part in (config order). Asked of the one model
        only: per output at parse time, so a scan over every model would make the plan quadratic
        in the number of models (128 models: 43 s instead of 8)."""
        return [ev for ev in self.evaluations if self.runs_on(ev, model)]

    def runs_on(self, evaluation: str, model: str) -> bool:
        """Whether ``evaluation`` runs on ``model`` (:meth:`evaluation_models`)."""
        return takes_part(self.config["models"][model], evaluation) and \
            any(self.scores(model, evaluation, d) for d in self.evaluation_datasets(evaluation))

    def scores(self, model: str, evaluation: str, dataset: str) -> bool:
        """Whether ``evaluation`` scores ``model`` on ``dataset``: an evaluation that reads logits
        needs them in the dataset's label space, ImageNet-1k's for every ImageNet-derived set, the
        model's own classes (``num_classes``) for a labelled folder of the user's own classes
        (class space ``own``). Validation refuses a ``num_classes`` model on an ImageNet set; an
        ImageNet model is left out of an own-class set (:func:`label_space_notes`)."""
        if not takes_part(self.config["models"][model], evaluation):
            return False
        if EVALUATIONS[evaluation].reads != "logits":
            return True
        return own_logits(self.config["models"][model]) == (self.datasets[dataset].class_space == OWN_SPACE)

    def evaluation_pairs(self, evaluation: str) -> list[tuple[str, str]]:
        """(model, dataset) of every standard output the evaluation reads: datasets in config order,
        models in config order within each, the pairs it scores only (:meth:`scores`)."""
        return [(m, d) for d in self.evaluation_datasets(evaluation) for m in self.evaluation_models(evaluation)
                if self.scores(m, evaluation, d)]

    def extraction_targets(self) -> list[str]:
        pairs = {(m, x) for ev in self.evaluations if EVALUATIONS[ev].reads != "images"
                 for m, d in self.evaluation_pairs(ev) for x in self.extraction_datasets(d)}
        return sorted(self.output(m, d) for m, d in pairs)

    def all_outputs(self) -> list[str]:
        """Every output an extraction job of the study writes (standard outputs and variants)."""
        return sorted({self.output(m, d, v) for m in self.models
                       for items in self.extraction_plan(m).values() for d, v in items})

    def all_markers(self) -> list[str]:
        """The group marker of every extraction job of the study (what a reader of every output
        depends on in Snakemake's eyes)."""
        return sorted({self.group_marker(m, g) for m in self.models for g in self.job_groups(m)})

    # ------------------------------------------------------ extraction jobs (groups)
    def group_marker(self, model: str, group: str) -> str:
        """The output of the extraction job of (model, group): the list of what it wrote (and each
        file's size and time, so a file deleted or replaced since makes the group rerun)."""
        return str(self.results / "extracted" / model / f"{group}.group.json")

    def output_marker(self, model: str, dataset: str, variant: str | None = None) -> str:
        """The group marker a reader of :meth:`output` takes as its Snakemake input: a rerun of the
        group reruns its readers; the file itself is found through the job's params."""
        group = self.group_of(model, dataset, variant)
        if group is None:
            what = f"{dataset}@{variant}" if variant else dataset
            raise ConfigError(f"no extraction job of this study writes {what} for model {model}; its groups: "
                              f"{', '.join(sorted(self.extraction_plan(model))) or 'none'}")
        return self.group_marker(model, group)

    def output_markers(self, items) -> list[str]:
        """The markers of the groups that write ``items`` (Study.item records), each once, in order."""
        return list(dict.fromkeys(self.output_marker(i["model"], i["dataset"], i["variant"] or None) for i in items))

    def extraction_plan(self, model: str) -> dict[str, list[tuple[str, str | None]]]:
        """Group name -> the (extraction dataset, variant or None) one job of ``model`` writes.

        ``extraction.group``: ``dataset`` = a group per study dataset (named after it; a vtab
        dataset's task splits together) and one per invariance dataset for its variants
        (``<dataset>@variants``); ``model`` = everything in group ``all``. ``extraction.groups``
        names groups of datasets explicitly (their standard outputs). ``extraction.split`` takes a
        dataset out of its group: it is a group of its own (named after it), whose file its part
        jobs and their merge write (:meth:`split_parts`). An evaluation's ``variants`` hook
        (invariance) adds the extra outputs it needs (never split: they follow ``group``)."""
        if model in self._plans:
            return self._plans[model]
        by_model = self.config["extraction"].get("group", "dataset") == "model"
        # Only the datasets of the evaluations the model takes part in that read cached outputs (cka runs
        # its own pass over the images): a dataset only logit evaluations read is not extracted for a
        # features-only model.
        evaluations = self.model_evaluations(model)
        used = [d for d in self.config["datasets"] if any(d in self.evaluation_datasets(ev) and self.scores(model, ev, d)
                                                          for ev in evaluations if EVALUATIONS[ev].reads != "images")]
        plan: dict[str, list[tuple[str, str | None]]] = {}
        for d in used:
            plan.setdefault(self._standard_group(d), []).extend((x, None) for x in self.extraction_datasets(d))
        for record in (EVALUATIONS[ev] for ev in evaluations):  # extra outputs an evaluation asks for
            if not record.variants:
                continue
            for d in self.evaluation_datasets(record.name):
                variants = record.variants.names(self, model, d)
                if variants:
                    plan.setdefault("all" if by_model else f"{d}@variants", []).extend((d, v) for v in variants)
        self._plans[model] = plan
        return plan

    def _standard_group(self, dataset: str) -> str:
        """The group whose job extracts ``dataset``'s standard output: a split dataset is its own
        group, written by its part jobs and their merge (:meth:`split_parts`); else its group in
        ``extraction.groups``, else ``all`` (``group: model``) or its own name (``group: dataset``)."""
        settings = self.config["extraction"]
        if dataset in settings.get("split", {}):
            return dataset
        explicit = {d: g for g, names in settings.get("groups", {}).items() for d in names}
        return explicit.get(dataset) or ("all" if settings.get("group", "dataset") == "model" else dataset)

    def pass_plan(self, model: str) -> dict[str, list[tuple[str, str]]]:
        """Group name -> the (evaluation, dataset) passes one extraction job of ``model`` runs: an
        evaluation's own pass over the images (its registry ``model_pass`` hook; CKA), with the network
        the job builds anyway, in the group that extracts the dataset (``extraction.group: model``:
        ``all``; a split dataset's or an unextracted one's: ``<dataset>@passes``, or the dataset's
        own group under ``group: dataset``)."""
        if model in self._pass_plans:
            return self._pass_plans[model]
        by_model = self.config["extraction"].get("group", "dataset") == "model"
        split = self.config["extraction"].get("split", {})
        plan: dict[str, list[tuple[str, str]]] = {}
        for ev in self.model_evaluations(model):
            hook = EVALUATIONS[ev].model_pass
            if hook is None:
                continue
            if ev not in self._pass_models:
                self._pass_models[ev] = set(hook.models(self))
            if model not in self._pass_models[ev]:
                continue
            for d in self.evaluation_datasets(ev):
                group = "all" if by_model else f"{d}@passes" if d in split else self._standard_group(d)
                plan.setdefault(group, []).append((ev, d))
        self._pass_plans[model] = plan
        return plan

    def job_groups(self, model: str) -> list[str]:
        """Every extraction job (group) of ``model``: those that extract outputs, then those that only
        run passes (:meth:`pass_plan`)."""
        groups = list(self.extraction_plan(model))
        return groups + [g for g in self.pass_plan(model) if g not in groups]

    def pass_output(self, model: str, evaluation: str, dataset: str) -> str:
        """The file of ``model``'s pass of ``evaluation`` over ``dataset`` (no Snakemake output: its
        group's marker is, :meth:`pass_marker`)."""
        return EVALUATIONS[evaluation].model_pass.output(self, model, dataset)

    def pass_marker(self, model: str, evaluation: str, dataset: str) -> str:
        """The group marker a reader of a pass file takes as its Snakemake input."""
        for group, passes in self.pass_plan(model).items():
            if (evaluation, dataset) in passes:
                return self.group_marker(model, group)
        raise ConfigError(f"no extraction job of this study runs the {evaluation} pass over {dataset} for model "
                          f"{model}")

    def split_parts(self, model: str, group: str) -> int | None:
        """K where the extraction group ``group`` of ``model`` is a split dataset (``extraction.split``):
        K part jobs (groups ``<dataset>@part-<k>-of-<K>``, :meth:`part_groups`) extract it and one
        merge job writes its file and its marker; None for a group extracted by one job."""
        parts = self.config["extraction"].get("split", {}).get(group)
        return parts if parts and group in self.extraction_plan(model) else None

    def part_groups(self, model: str, dataset: str) -> list[str]:
        """The groups of the part jobs of a split dataset, whose markers its merge job reads."""
        parts = self.split_parts(model, dataset)
        if parts is None:
            raise ConfigError(f"{dataset} is not split for model {model} (extraction.split)")
        return [f"{dataset}@part-{k}-of-{parts}" for k in range(1, parts + 1)]

    def variant_owner(self, model: str, dataset: str, variant: str) -> str:
        """The evaluation whose ``variants`` hook asks for ``<dataset>@<variant>`` of ``model``."""
        for ev in self.model_evaluations(model):
            hook = EVALUATIONS[ev].variants
            if hook and dataset in self.evaluation_datasets(ev) and variant in hook.names(self, model, dataset):
                return ev
        raise ConfigError(f"no evaluation of this study asks for the variant {variant!r} of {dataset} for {model}")

    def group_of(self, model: str, dataset: str, variant: str | None = None) -> str | None:
        """The extraction group that writes (model, dataset, variant), or None if no job does."""
        for group, items in self.extraction_plan(model).items():
            if (dataset, variant or None) in items:
                return group
        return None

    def model_columns(self, model: str) -> dict[str, str]:
        """Grouping columns every metric row carries, so figures need only the tables."""
        spec = self.models[model]
        return {"model": model, "label": spec.label, "family": spec.family, "paradigm": spec.paradigm,
                "paper_key": spec.paper_key or "", "training_data": spec.training_data}

    # -------------------------------------------------------------------------- cache keys
    def model_identity(self, model: str) -> dict[str, Any]:
        """What a model's outputs depend on: part of every cache key and recorded in every output."""
        identity = {**self.head_identity(model), "protocol": self.model_protocol(model)}
        if self.models[model].needs_zero_shot_head:
            identity["logit_scale"] = float(self.config["zero_shot"]["logit_scale"])
        if self.models[model].features_only:  # only when set: the other models' cache keys are unchanged
            identity["features_only"] = True
        return identity

    def model_protocol(self, model: str) -> str:
        """The preprocessing protocol of a model: its own ``preprocessing:``, else the study's."""
        return self.models[model].preprocessing or self.config["preprocessing"]

    def head_identity(self, model: str) -> dict[str, Any]:
        """What a zero-shot head depends on: the weights and the templates (not the protocol or the
        logit scale, which act on the image side)."""
        from beyond_imagenet.model_specs import checkpoint_sha256

        spec = self.models[model]
        identity = {"model": model, "model_source": spec.source, "model_arch": spec.arch, "weights": spec.weights_tag}
        if spec.source == "python":  # the loader's code (its module file) and arguments
            from beyond_imagenet.model_specs import loader_sha256

            identity.update(loader=spec.loader, loader_sha256=loader_sha256(spec.loader),
                            loader_args=spec.loader_args)
        if spec.num_classes:  # only when set: the other models' cache keys are unchanged
            identity["num_classes"] = spec.num_classes
        if spec.head != "keep":
            identity["head"] = spec.head
        if spec.source == "open_clip" and spec.arch.startswith("local-dir:") and not spec.checkpoint:
            from beyond_imagenet.model_specs import local_dir_sha256

            identity["local_dir_sha256"] = local_dir_sha256(spec.arch)
        if spec.checkpoint:
            identity["checkpoint_sha256"] = checkpoint_sha256(spec.checkpoint_path)
            if spec.checkpoint_format != "auto":
                identity["checkpoint_format"] = spec.checkpoint_format
        if spec.needs_zero_shot_head:
            identity["zero_shot_templates"] = str(self.config["zero_shot"]["templates"])
        return identity

    def expected_attrs(self, model: str, dataset: str, manifest: dict[str, Any],
                       variant: str | None = None) -> dict[str, Any]:
        """What an output file must record to be reused for (model, dataset, variant)."""
        from beyond_imagenet.workflow import expected_attrs

        return expected_attrs(self.output_identity(model, dataset, variant), manifest)

    def output_identity(self, model: str, dataset: str, variant: str | None = None) -> dict[str, Any]:
        """The part of :meth:`expected_attrs` known before the manifest is built: the model's
        identity, the dataset, its transform and, for a variant, the image subset it ran on."""
        spec = self.datasets[dataset]
        identity = {**self.model_identity(model), "dataset": dataset, "dataset_kind": spec.kind,
                    "class_space": spec.class_space, "variant": variant or "",
                    "input_transform": self.input_transform(dataset)}
        if variant:  # what the evaluation asking for it records (invariance: the image subset)
            hook = EVALUATIONS[self.variant_owner(model, dataset, variant)].variants
            if hook.identity:
                identity.update(hook.identity(self, dataset, variant))
        identity["arrays"] = ",".join(self.stored_arrays(model, dataset, variant))
        return identity

    def stored_arrays(self, model: str, dataset: str, variant: str | None = None) -> list[str]:
        """The large arrays (``logits``, ``features``) an output of ``model`` holds: those some
        evaluation of the study that reads ``dataset`` (a VTAB task split: its study dataset) with
        this model reads (its record's ``reads``); a variant's, those of the evaluations whose
        ``variants`` hook asks for it. The reader refuses a file lacking one (extract.check_attrs),
        so an evaluation that starts reading features re-extracts the outputs it reads."""
        wanted = set()
        for evaluation in self.model_evaluations(model):
            record = EVALUATIONS[evaluation]
            if record.reads not in ("logits", "features"):
                continue
            for name in self.evaluation_datasets(evaluation):
                if not self.scores(model, evaluation, name):
                    continue
                if variant:
                    hit = name == dataset and record.variants is not None and \
                        variant in record.variants.names(self, model, name)
                else:
                    hit = dataset in self.extraction_datasets(name)
                if hit:
                    wanted.add(record.reads)
        return sorted(wanted)

    def input_transform(self, dataset: str) -> str:
        """How supervised models resize and crop this set's images (``models.INPUT_TRANSFORMS``).

        ``normalize_only`` for kinds the catalogue marks ``presized`` (ImageNet-C, cue-conflict:
        224 px already), ``protocol`` (the study's preprocessing) otherwise, unless an evaluation
        of the set asks for another through its ``input_transform`` hook (robustness re-crops
        ImageNet-C under ``imagenet_c_recrop``; PUG's ``transform: paper``)."""
        from beyond_imagenet.datasets import load_catalog

        for evaluation in self.evaluations:
            hook = EVALUATIONS[evaluation].input_transform
            wanted = hook(self, dataset) if hook else None
            if wanted:
                return wanted
        if load_catalog()[self.datasets[dataset].kind].get("presized", False):
            return "normalize_only"
        return "protocol"

    # ------------------------------------------------------------- what a job is given (params)
    def item(self, model: str, dataset: str, variant: str | None = None) -> dict[str, Any]:
        """One cached output as a job's params describe it: where it is, its manifest, what it must
        record (``expect``, completed with the manifest by ``workflow.expected_attrs``), and the
        dataset's kind and label space."""
        spec = self.datasets[dataset]
        return {"model": model, "dataset": dataset, "variant": variant or "", "kind": spec.kind,
                "class_space": spec.class_space, "output": self.output(model, dataset, variant),
                "manifest": self.manifest(dataset), "expect": self.output_identity(model, dataset, variant)}

    def model_entry(self, model: str) -> dict[str, Any]:
        """What a job needs to build the model (``ModelSpec`` fields); the label, paper_key and
        training_data (display only) are left out, so relabelling a model reruns no model job."""
        import dataclasses

        entry = dataclasses.asdict(self.models[model])
        entry.pop("label")
        entry.pop("paper_key")
        entry.pop("checkpoint_sha256")  # given to a job by its identity params (workflow.model_spec)
        entry.pop("loader_sha256")
        entry.pop("training_data")
        # Fields added for own heads and python models, only when set: the params (and so the jobs)
        # of the other models are unchanged.
        for key, default in (("num_classes", None), ("head", "keep"), ("loader", None), ("loader_args", "")):
            if entry[key] == default:
                entry.pop(key)
        return entry

    def dataset_entry(self, dataset: str) -> dict[str, Any]:
        """What a job needs to resolve a dataset (``workflow.dataset_spec``): its config entry and
        the resources folder; for a VTAB task split, its parent's entry with only its task."""
        spec = self.datasets[dataset]
        parent = getattr(spec, "parent", None)
        if parent:
            entry = {**self.config["datasets"][parent], "tasks": [spec.task]}
            return {"name": dataset, "parent": parent, "entry": entry, "resources": self.resources}
        entry = self.config["datasets"][dataset]
        if "splits" in entry:  # a labelled folder's splits are drawn from its manifest (splits_file)
            entry = {k: v for k, v in entry.items() if k != "splits"}
        return {"name": dataset, "entry": entry, "resources": self.resources}

    def splits_file(self, dataset: str) -> str:
        """A labelled folder's splits (datasets/labelled.py draw_manifest_splits): apart from its
        manifest, so that new ``splits:`` rerun the probes and never the extraction."""
        return str(self.results / "splits" / f"{dataset}.json")


def main(argv: list[str] | None = None) -> int:
    """``python -m beyond_imagenet.study FILE...``: check study files (syntax with file and line,
    duplicate keys, schema) without starting Snakemake."""
    import sys

    paths = sys.argv[1:] if argv is None else argv
    failed = 0
    for path in paths:
        try:
            load_config(path)
            print(f"{path}: ok")
        except (ConfigError, OSError) as err:
            print(err, file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

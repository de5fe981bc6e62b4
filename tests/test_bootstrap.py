"""Bootstrap intervals and paired comparisons (docs/evaluations.md §11)."""

from __future__ import annotations

import numpy as np
import pytest

from beyond_imagenet.metrics.bootstrap import (
    mcnemar_exact,
    paired_difference,
    percentile_interval,
    resample_indices,
    unit_seed,
)


def test_resample_indices_are_seeded_and_stratified():
    a = list(resample_indices(10, 3, unit_seed(0, "x")))
    b = list(resample_indices(10, 3, unit_seed(0, "x")))
    c = list(resample_indices(10, 3, unit_seed(0, "y")))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    strata = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 2])
    for idx in resample_indices(10, 20, 1, strata):
        assert np.array_equal(np.bincount(strata[idx], minlength=3), [3, 2, 5])


def test_percentile_interval_by_hand():
    values = np.arange(101, dtype=float)  # quantiles of 0..100 are the percent itself
    assert percentile_interval(values, 0.9) == pytest.approx((5.0, 95.0))
    assert percentile_interval([1.0, np.nan, 3.0], 0.5) == pytest.approx((1.5, 2.5))  # NaN left out
    low, high = percentile_interval([np.nan, np.nan], 0.95)
    assert np.isnan(low) and np.isnan(high)


def test_mcnemar_exact_by_hand():
    # 3 discordant images, all in favour of a: p = 2 * 0.5**3 = 0.25
    a = np.array([1, 1, 1, 1, 0], dtype=bool)
    b = np.array([0, 0, 0, 1, 0], dtype=bool)
    assert mcnemar_exact(a, b) == pytest.approx(0.25)
    assert mcnemar_exact(b, a) == pytest.approx(0.25)
    # 1 vs 5 discordant: p = 2 * (C(6,0) + C(6,1)) / 2**6 = 14 / 64
    a = np.array([1] + [0] * 5 + [1, 0], dtype=bool)
    b = np.array([0] + [1] * 5 + [1, 0], dtype=bool)
    assert mcnemar_exact(a, b) == pytest.approx(14 / 64)
    assert mcnemar_exact(a, a) == 1.0


def test_paired_difference_of_a_model_with_itself_is_zero_with_zero_width():
    correct = np.random.default_rng(0).random(200) < 0.7
    assert paired_difference(np.mean, correct, correct, 200, 3) == (0.0, 0.0, 0.0)


def test_interval_covers_the_true_value_at_about_its_nominal_rate():
    """500 simulated data sets of 200 Bernoulli(0.7) images: the 90% interval of the mean covers 0.7
    in about 90% of them (percentile intervals run a little short at this N: tolerance 5 points)."""
    rng = np.random.default_rng(123)
    covered = 0
    n_sets = 500
    for k in range(n_sets):
        x = (rng.random(200) < 0.7).astype(float)
        reps = [x[idx].mean() for idx in resample_indices(len(x), 300, unit_seed(k, "coverage"))]
        low, high = percentile_interval(reps, 0.9)
        covered += low <= 0.7 <= high
    assert abs(covered / n_sets - 0.9) < 0.05, covered / n_sets


def test_intervals_shrink_as_n_grows():
    rng = np.random.default_rng(5)
    widths = []
    for n in (100, 400, 1600):
        x = (rng.random(n) < 0.6).astype(float)
        low, high = percentile_interval([x[i].mean() for i in resample_indices(n, 400, 0)], 0.95)
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2]
    assert widths[0] / widths[2] == pytest.approx(4, rel=0.35)  # 1/sqrt(N)


# ------------------------------------------------------------------------- the generic engine
def _accuracy_samples(correct_by_model, unit="d"):
    from beyond_imagenet.evaluations import Sample

    ids = np.asarray([f"i{k}" for k in range(len(next(iter(correct_by_model.values()))))], dtype=object)
    return [Sample(m, unit, ids, {"c": np.asarray(c, dtype=bool)},
                   lambda d: [{"dataset": unit, "metric": "top1", "value": float(d["c"].mean())}],
                   correct={"top1": "c"}) for m, c in correct_by_model.items()]


def test_engine_intervals_and_comparisons():
    from beyond_imagenet.evaluations import get
    from beyond_imagenet.uncertainty import add_intervals, compare, replicates_by_model

    rng = np.random.default_rng(1)
    correct = {"a": rng.random(300) < 0.8, "b": rng.random(300) < 0.5}
    correct["c"] = correct["a"].copy()
    samples = _accuracy_samples(correct)
    uncertainty = {"level": 0.95, "resamples": 200, "seed": 0}
    reps = replicates_by_model(samples, uncertainty)
    models = {m: {"model": m, "label": m.upper()} for m in correct}
    rows = [{**models[m], "dataset": "d", "metric": "top1", "value": float(c.mean())} for m, c in correct.items()]
    rows.append({**models["a"], "dataset": "d", "metric": "n_images", "value": 300})
    out = add_intervals(rows, reps, 0.95)
    assert [r["value"] for r in out] == [r["value"] for r in rows]
    assert all(r["ci_low"] <= r["value"] <= r["ci_high"] for r in out[:3])
    assert np.isnan(out[3]["ci_low"])  # a count
    pairs = {(r["model_a"], r["model_b"]): r for r in compare(get("accuracy"), samples, reps, uncertainty, models)}
    assert set(pairs) == {("a", "b"), ("a", "c"), ("b", "c")}
    same = pairs[("a", "c")]
    assert same["difference"] == 0 and same["ci_low"] == 0 and same["ci_high"] == 0 and same["mcnemar_p"] == 1.0
    assert same["distinguishable"] is False
    far = pairs[("a", "b")]
    assert far["distinguishable"] is True and far["mcnemar_p"] < 1e-6 and far["ci_low"] > 0
    assert far["difference"] == pytest.approx(100 * (correct["a"].mean() - correct["b"].mean()))
    assert {(r["n"], r["n_unit"]) for r in pairs.values()} == {(300, "images")}  # every comparison states its n


def test_a_comparison_states_the_images_it_is_over():
    """n: the images both models were scored on (common ids); a combined row (the robustness
    average): the sum over the sets it averages, not over every set of the evaluation."""
    from beyond_imagenet.evaluations import Sample, get
    from beyond_imagenet.uncertainty import compare, replicates_by_model

    rng = np.random.default_rng(2)
    uncertainty = {"level": 0.95, "resamples": 50, "seed": 0}

    def sample(model, unit, n, drop=0):
        ids = np.asarray([f"{unit}{k}" for k in range(drop, n)], dtype=object)
        correct = rng.random(len(ids)) < 0.6
        benchmark = "imagenet_val" if unit == "val" else unit
        return Sample(model, unit, ids, {"c": correct},
                      lambda d, b=benchmark: [{"dataset": b, "benchmark": b, "corruption": "", "severity": "",
                                               "metric": "top1", "value": float(d["c"].mean())}],
                      correct={"top1": "c"})

    # a lacks nothing; b lacks the first 10 images of imagenet_r: 90 in common there
    samples = [sample("a", "val", 50), sample("a", "imagenet_r", 100), sample("a", "imagenet_sketch", 30),
               sample("b", "val", 50), sample("b", "imagenet_r", 100, drop=10), sample("b", "imagenet_sketch", 30)]
    record = get("robustness")
    reps = replicates_by_model(samples, uncertainty, record.combine)
    models = {m: {"model": m, "label": m} for m in ("a", "b")}
    (row,) = compare(record, samples, reps, uncertainty, models)  # the headline: the average of the shifted sets
    assert row["n"] == 90 + 30  # the shifted sets' common images; clean ImageNet is not in the average


def test_real_rests_on_the_val_images_with_a_real_label():
    """ImageNet-ReaL leaves out val images without a ReaL label: its n, and its share of the
    robustness average's n, count only the labelled ones (not every val image)."""
    from beyond_imagenet.evaluations import Sample, get
    from beyond_imagenet.evaluations.robustness import _row_data, robustness_sample
    from beyond_imagenet.metrics.robustness import real_labels
    from beyond_imagenet.uncertainty import compare, replicates_by_model

    table = real_labels()
    unlabelled = sorted(name for name, labels in table.items() if not labels)[:2]
    labelled = sorted(name for name, labels in table.items() if labels)[:6]
    names = np.asarray(unlabelled + labelled, dtype=object)
    uncertainty = {"level": 0.95, "resamples": 40, "seed": 0}
    rng = np.random.default_rng(3)
    samples = []
    for model in ("a", "b"):
        predicted = rng.integers(0, 1000, len(names))
        data, strata, rows = robustness_sample({"ids": names, "predicted": predicted,
                                                "correct": rng.random(len(names)) < 0.5},
                                               "imagenet_val", "imagenet1k", real=True)
        assert np.isnan(data["real"][:2]).all() and not np.isnan(data["real"][2:]).any()
        samples.append(Sample(model, "imagenet_val", names, data,
                              lambda d, rows=rows: [{"dataset": "imagenet_val", **r} for r in rows(d)],
                              strata=strata, row_data=_row_data))
        ids = np.asarray([f"r{k}" for k in range(10)], dtype=object)
        samples.append(Sample(model, "imagenet_r", ids, {"c": rng.random(10) < 0.5},
                              lambda d: [{"dataset": "imagenet_r", "benchmark": "imagenet_r", "corruption": "",
                                          "severity": "", "metric": "top1", "value": float(d["c"].mean())}]))
    record = get("robustness")
    reps = replicates_by_model(samples, uncertainty, record.combine)
    n = {dict(k).get("benchmark"): e.n for k, e in reps["a"].items()}
    assert n["imagenet_real"] == 6 and n["imagenet_val"] == 8 and n["imagenet_r"] == 10
    (row,) = compare(record, samples, reps, uncertainty, {m: {"model": m, "label": m} for m in ("a", "b")})
    assert row["n"] == 6 + 10  # ReaL's labelled images and ImageNet-R's; clean val is not in the average


# --------------------------------------------------------------------------------- workflow


@pytest.mark.workflow
def test_default_study_tables_carry_intervals(default_study):
    import pandas as pd

    from conftest import default_config

    from beyond_imagenet.tables import read_table

    workdir, _ = default_study
    metrics = workdir / "results" / "metrics"
    for name in ("accuracy", "calibration", "robustness", "imagenet_x", "shape_bias", "pug", "transfer",
                 "invariance", "cka"):
        table = read_table(metrics / f"{name}.csv")
        assert {"ci_low", "ci_high"} <= set(table.columns), name
        if name == "cka":
            continue
        has = table["ci_low"].notna()
        assert has.any(), f"{name}: no interval at all"
        ok = table[has]
        assert ((ok["ci_low"] <= ok["ci_high"] + 1e-12)).all(), name
        counts = table["metric"].astype(str).str.startswith("n_") | (table["metric"] == "bin_count")
        assert table.loc[counts, "ci_low"].isna().all(), f"{name}: a count has an interval"
    comparisons = pd.read_csv(metrics / "comparisons.csv", keep_default_na=False, na_values=[""])
    models = len(default_config()["models"])  # the default study: 4 random-weight models and the 3 Lite
    top1 = comparisons[comparisons["evaluation"] == "accuracy"]
    assert len(top1) == models * (models - 1) // 2
    assert top1["mcnemar_p"].notna().all()
    assert set(comparisons["evaluation"]) >= {"accuracy", "calibration", "robustness", "imagenet_x", "shape_bias",
                                             "pug", "transfer", "invariance"}
    assert (workdir / "results" / "figures" / "comparisons.png").is_file()
    profile = read_table(metrics / "profile.csv")
    assert "rank_significant" in profile.columns


@pytest.mark.workflow
def test_changing_the_bootstrap_reruns_no_extraction(tiny_config, tmp_path):
    from conftest import run_snakemake, write_config

    tiny_config["evaluations"] = {k: v for k, v in tiny_config["evaluations"].items()
                                  if k in ("accuracy", "calibration", "transfer")}
    tiny_config["evaluations"]["calibration"]["datasets"] = ["imagenet_val"]
    tiny_config["datasets"] = {k: v for k, v in tiny_config["datasets"].items() if k in ("imagenet_val", "vtab")}
    tiny_config["datasets"]["vtab"].update(tasks=["dtd"], split_sizes={"train800": 8, "val200": 4, "test": 8})
    tiny_config["evaluations"]["transfer"]["probe"] = {"device": "cpu", "epochs": 1, "weight_decays": {"num": 2}}
    tiny_config["uncertainty"] = {"resamples": 200}
    configfile = write_config(tmp_path / "study.yaml", tiny_config)
    workdir = tmp_path / "work"
    workdir.mkdir()
    run_snakemake(configfile, workdir)
    tiny_config["uncertainty"] = {"resamples": 210}
    planned = run_snakemake(write_config(tmp_path / "study2.yaml", tiny_config), workdir, dryrun=True)
    assert planned, "the changed bootstrap reran nothing"
    assert not {"extract_outputs", "probe_transfer", "build_manifest"} & set(planned), planned
    allowed = {"compute_accuracy", "compute_calibration", "compute_transfer", "compute_comparisons",
               "plot_comparisons", "compute_profile", "plot_profile", "plot_calibration",
               "plot_transfer", "compute_across_models", "plot_across_models", "plot_vs_imagenet", "results_page",
               "all"}
    assert set(planned) <= allowed, planned
    print("planned after changing uncertainty.resamples:", dict(planned))

"""The placement study: sweeps, the comparison's statistics and files, MC dropout, variance shift."""
import glob
import json
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from conftest import ROOT
from conftest import tiny_source
from scipy import stats as scipy_stats

import models
from dropzoo import compare
from dropzoo import config as config_lib
from dropzoo import contrasts
from dropzoo import flags as flags_lib
from dropzoo import outcomes
from dropzoo import rates_report
from dropzoo import records
from dropzoo import regime
from dropzoo import report
from dropzoo import site_stats
from dropzoo import sources
from dropzoo import stats
from dropzoo import sweep
from dropzoo import uncertainty
from dropzoo import variants
from dropzoo import verify
from dropzoo.errors import DataError

# ------------------------------------------------------------------ statistics


def test_mean_ci_against_the_t_table():
    mean, std, half = stats.mean_ci([1.0, 2.0, 3.0])
    assert (mean, std) == (2.0, 1.0)
    assert half == pytest.approx(4.302652729911275 / math.sqrt(3))  # t(0.975, df=2) = 4.3027
    mean, std, half = stats.mean_ci([0.5])
    assert mean == 0.5 and math.isnan(std) and math.isnan(half)


def test_paired_p_value_matches_the_formula_and_beats_welch_on_shared_seeds():
    # Seeds move both variants together; the paired test sees the steady +0.01.
    base = np.array([0.950, 0.962, 0.941, 0.958, 0.947, 0.955, 0.960, 0.944])
    other = base + np.array([0.010, 0.002, 0.009, 0.017, 0.004, 0.012, -0.003, 0.011])
    d = other - base
    t = d.mean() / (d.std(ddof=1) / math.sqrt(d.size))
    assert stats.paired_p_value(other, base) == pytest.approx(2 * scipy_stats.t.sf(abs(t), d.size - 1))
    assert stats.paired_p_value(other, base) < 0.05 < scipy_stats.ttest_ind(other, base, equal_var=False).pvalue
    # No p below the exact sign-flip test's 2/2^n: 4 seeds of a steady +0.01 give 2/16, not the t-test's 0.0005.
    steady = np.array([0.010, 0.012, 0.009, 0.011])
    assert scipy_stats.ttest_rel(base[:4] + steady, base[:4]).pvalue < 0.001
    assert stats.paired_p_value(base[:4] + steady, base[:4]) == 2 / 16
    assert stats.paired_p_value([0.9, 0.8], [0.9, 0.8]) == 1.0
    # The same gap at every seed: no t-test (0 / 0); the exact sign-flip test's 2 / 2^n.
    assert stats.paired_p_value([0.75, 0.5], [0.5, 0.25]) == 0.5
    assert stats.paired_p_value([0.75] * 6, [0.5] * 6) == 2 / 64
    # One gap up to float rounding is one gap (the t-test said 7e-13 from two seeds).
    assert stats.paired_p_value([1.0001, 2.0001], [1.0, 2.0]) == 0.5
    assert math.isnan(stats.paired_p_value([0.9], [0.8]))
    with pytest.raises(ValueError, match="one value per seed"):
        stats.paired_p_value([0.9, 0.8], [0.8])


def test_holm_adjusts_step_down_in_the_given_order():
    # m = 4: sorted 0.01, 0.02, 0.03, 0.04 -> x4, x3, x2, x1, then running maxima.
    assert stats.holm([0.04, 0.01, 0.03, 0.02]) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert stats.holm([0.001, 0.5]) == pytest.approx([0.002, 0.5])
    assert stats.holm([0.3, 0.4]) == pytest.approx([0.6, 0.6])  # capped by the running max, at most 1
    adjusted = stats.holm([0.01, float("nan"), 0.04])  # NaN is not a comparison
    assert adjusted[0] == pytest.approx(0.02) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.04)
    assert stats.holm([]) == []


def test_expected_calibration_error_by_hand():
    p = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.3, 0.7]])
    y = np.array([0, 1, 0, 1])
    # One example per bin: |1-.9|, |0-.8|, |1-.6|, |1-.7| averaged.
    assert uncertainty.expected_calibration_error(p, y, bins=10) == pytest.approx(0.4)
    # One bin: accuracy 0.75 equals mean confidence 0.75.
    assert uncertainty.expected_calibration_error(p, y, bins=1) == pytest.approx(0.0)
    assert stats.negative_log_likelihood(p, y) == pytest.approx(-np.mean(np.log([0.9, 0.2, 0.6, 0.7])))


# ------------------------------------------------------------------- the sweep


def test_expand_covers_placements_seeds_and_activations():
    base = config_lib.TrainConfig(model="dense_mlp", seed=5)
    configs = sweep.expand(base, {"placement": ["all"], "activation": ["relu", "tanh"]}, seeds=2)
    assert len(configs) == len(models.list_placements("dense_mlp", norm="none")) * 2 * 2
    assert {c.seed for c in configs} == {5, 6}
    dirs = {sweep.run_dir("root", c) for c in configs}
    assert len(dirs) == len(configs)
    assert "root/dense_mlp/before_dense-tanh/seed6" in dirs and "root/dense_mlp/before_dense/seed5" in dirs
    with pytest.raises(config_lib.ConfigError, match="unknown placement 'nowhere'"):
        sweep.expand(base, {"placement": ["canonical", "nowhere"]})
    with pytest.raises(config_lib.ConfigError, match=r"--seeds must be a positive integer, got 0"):
        sweep.expand(base, seeds=0)
    with pytest.raises(config_lib.ConfigError, match="must be a positive integer, got True"):
        sweep.expand(base, seeds=True)
    # A dict without a seed starts at the default seed (it raised KeyError); a numpy count is a count.
    assert [c.seed for c in sweep.expand({"model": "dense_mlp"}, seeds=np.int64(3))] == [0, 1, 2]


def test_a_variant_is_not_named_by_data_fields_its_source_does_not_read():
    """An image-folder run beside mnist_sample runs: --dataset varies, but the image run never read it."""
    configs = [config_lib.TrainConfig(model="dense_mlp", dataset="mnist_sample"),
               config_lib.TrainConfig(model="dense_mlp", image_dir="/data/shapes", test_image_dir="/data/shapes_test"),
               config_lib.TrainConfig(model="dense_mlp", idx_dir="/data/idx")]
    varying = sweep.varying_fields(configs)
    assert {"dataset", "image_dir", "test_image_dir", "idx_dir"} <= set(varying)
    assert [sweep.variant_name(c, varying) for c in configs] == [
        "canonical-datasetmnist_sample", "canonical-image_dirshapes-test_image_dirshapes_test", "canonical-idx_diridx"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("study"))
    base = config_lib.TrainConfig(model="dense_mlp", dataset="tiny", epochs=2, batch_size=16,
                                  optimizer="adam", learning_rate=0.003)
    configs = sweep.expand(base, {"placement": ["canonical", "before_activation"]}, seeds=2)
    runs = [(c, sweep.run_dir(root, c)) for c in configs]
    results = sweep.run_sweep(runs, source=tiny_source(), verbose=0)
    noise = np.random.default_rng(5).integers(0, 256, (24, 28, 28, 1)).astype(np.uint8)
    ood = sources.array_source("noise", None, (noise, np.zeros(24, np.int64)))
    comparison = compare.compare_runs(root, mc_samples=8, source=tiny_source(), ood=ood)
    return root, runs, results, comparison


@pytest.mark.slow
def test_sweep_trains_every_run_in_its_own_directory(study):
    root, runs, results, _ = study
    assert [w for _, w, _ in results] == [w for _, w in runs]
    assert all(isinstance(m, dict) and m["export_check"]["passed"] for _, _, m in results)
    assert sorted(os.path.relpath(w, root) for _, w in runs) == [
        "dense_mlp/before_activation/seed0", "dense_mlp/before_activation/seed1",
        "dense_mlp/canonical/seed0", "dense_mlp/canonical/seed1"]


@pytest.mark.slow
def test_same_seed_means_same_data_weights_and_masks(study):
    """With ReLU, dropout before or after the activation trains the very same model."""
    _, _, results, _ = study
    by = {(c.placement, c.seed): m for c, _, m in results}
    for seed in (0, 1):
        assert by[("canonical", seed)]["history"] == by[("before_activation", seed)]["history"]
        assert by[("canonical", seed)]["test_loss"] == by[("before_activation", seed)]["test_loss"]
    assert by[("canonical", 0)]["history"] != by[("canonical", 1)]["history"]


@pytest.mark.slow
def test_rerunning_a_sweep_retrains_nothing(study):
    _, runs, results, _ = study
    trained = [w for _, w in runs if os.path.isdir(os.path.join(w, "saved_model"))]
    assert len(trained) == 2  # canonical per seed; before_activation is identical by construction
    stamps = [os.path.getmtime(os.path.join(w, "saved_model", "saved_model.pb")) for w in trained]
    again = sweep.run_sweep(runs, source=tiny_source(), verbose=0)
    assert [m["test_loss"] for _, _, m in again] == [m["test_loss"] for _, _, m in results]
    assert stamps == [os.path.getmtime(os.path.join(w, "saved_model", "saved_model.pb")) for w in trained]


@pytest.mark.slow
def test_a_comparison_stopped_half_way_leaves_no_comparison_md_and_no_mix(study, tmp_path, monkeypatch):
    """eval.py stopped while writing left the new comparison.md beside an older comparison's other files."""
    root = study[0]
    out = tmp_path / "comparison"
    compare.compare_runs(root, source=tiny_source(), output_dir=str(out))
    whole = sorted(os.listdir(out))
    (out / "sizes.md").write_text("an older comparison's")

    def stopped(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "write_hparams", stopped)
    with pytest.raises(KeyboardInterrupt):
        compare.compare_runs(root, source=tiny_source(), output_dir=str(out))
    left = sorted(os.listdir(out))
    assert "comparison.md" not in left and "sizes.md" not in left and "hparams" not in left and left
    monkeypatch.undo()
    compare.compare_runs(root, source=tiny_source(), output_dir=str(out))
    assert sorted(os.listdir(out)) == whole


@pytest.mark.slow
def test_comparison_writes_table_csv_png_and_hparams(study):
    root, _, results, comparison = study
    paths = comparison["paths"]
    table = {e["variant"]: e for e in comparison["table"]}
    assert set(table) == {"dense_mlp/canonical", "dense_mlp/before_activation"}
    canonical = table["dense_mlp/canonical"]
    accs = [m["test_accuracy"] for c, _, m in results if c.placement == "canonical"]
    mean, std, half = stats.mean_ci(accs)
    assert canonical["seeds"] == 2
    assert canonical["test_accuracy"]["mean"] == pytest.approx(mean, abs=1e-6)
    assert canonical["test_accuracy"]["ci95"] == pytest.approx(half, abs=1e-6)
    before = table["dense_mlp/before_activation"]  # identical models: no test, said instead
    assert before["identical_to"] == "dense_mlp/canonical"
    assert before["test_accuracy"] == canonical["test_accuracy"]
    [contrast] = comparison["contrasts"]  # every variant against the baseline
    assert contrast["identical"] and contrast["test_accuracy"] is None
    assert {"ece", "brier", "mc_accuracy", "mc_nll", "mc_ece", "mc_brier", "train_time_sec", "train_accuracy",
            "gap_accuracy", "ood_auroc_entropy", "ood_fpr95_mc_mutual_information"} <= set(canonical)
    with open(paths["uncertainty.md"]) as f:
        uncertainty_text = f.read()
    assert "Out-of-distribution data: noise" in uncertainty_text
    assert "| MC Brier |" in uncertainty_text and "OOD AUROC (mc mutual information)" in uncertainty_text
    cell = f"{canonical['ood_auroc_entropy']['mean']:.4f} ± {canonical['ood_auroc_entropy']['ci95']:.4f}"
    assert cell in uncertainty_text
    for name in ("reliability.png", "mc_samples.png"):
        with open(paths[name], "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(paths["comparison.md"]) as f:
        text = f.read()
    assert "| dense_mlp/canonical | 2 | `dense1.post:0.5` |" in text and "MC acc %" in text
    assert "identical by construction" in text and "Regime: " in text
    # How well `none` fits its training data stands beside its validation rise (or is absent without one).
    assert "of its training data" not in text
    [line] = regime.lines({"train_examples": 3600, "steps": 348, "none_overfit": True,
                                  "none_validation_rise": 1.051, "overfit_threshold": 1.05,
                                  "none_train_accuracy": 0.834})
    assert line.endswith("1.051x its best epoch's; overfitting means ≥ 1.05x); it fits 83.4% of its training "
                         "data (dropout off).")
    with open(paths["comparison.csv"]) as f:
        lines = f.read().splitlines()
    assert lines[0].startswith("variant,seeds,sites,precision,test_accuracy_mean,test_accuracy_std,"
                               "test_accuracy_ci95,test_accuracy_n,") and len(lines) == 3
    with open(paths["contrasts.csv"]) as f:
        assert f.read().splitlines()[0].startswith("a,b,metric,identical,verdict,n,difference")
    with open(paths["comparison.png"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    sessions = set()
    for path in glob.glob(os.path.join(paths["hparams"], "**", "events.out.tfevents.*"), recursive=True):
        for event in tf.compat.v1.train.summary_iterator(path):
            if any(v.tag == "_hparams_/session_start_info" for v in event.summary.value):
                sessions.add(os.path.relpath(os.path.dirname(path), paths["hparams"]))
    assert len(sessions) == 4
    # Each column's domain is its values, so the dashboard lists and filters them.
    from tensorboard.plugins.hparams import plugin_data_pb2

    [root] = glob.glob(os.path.join(paths["hparams"], "events.out.tfevents.*"))
    experiment = next(plugin_data_pb2.HParamsPluginData.FromString(v.metadata.plugin_data.content).experiment
                      for event in tf.compat.v1.train.summary_iterator(root) for v in event.summary.value
                      if v.tag == "_hparams_/experiment")
    domains = {info.name: {value.string_value or value.number_value for value in info.domain_discrete.values}
               for info in experiment.hparam_infos}
    assert domains["placement"] == {"canonical", "before_activation"} and domains["seed"] == {0.0, 1.0}, domains
    # Its metrics named and scaled as comparison.md shows them (fractions under bare tags read as other numbers).
    shown = {info.name.tag: info.display_name for info in experiment.metric_infos}
    assert shown["test_accuracy_percent"] == "test acc %" and shown["test_loss"] == "test NLL"
    with open(paths["runs.json"]) as f:
        first = json.load(f)[0]
    [events] = glob.glob(os.path.join(paths["hparams"], first["variant"], f"seed{first['seed']}", "events.*"))
    written = {v.tag: float(tf.make_ndarray(v.tensor)) for event in tf.compat.v1.train.summary_iterator(events)
               for v in event.summary.value if v.tag == "test_accuracy_percent"}
    assert written["test_accuracy_percent"] == pytest.approx(100 * first["test_accuracy"], rel=1e-6)


def test_baseline_is_found_from_the_recorded_config_keeping_kind_and_activation():
    def recorded(**fields):
        return config_lib.TrainConfig(model="m", **fields).to_dict()

    sigmoid = recorded(placement="before_activation", activation="sigmoid")
    base = variants.baseline_config(sigmoid, "after_activation")
    assert variants.variant_label(base) == "m/after_activation-sigmoid"
    assert variants.variant_key(base) == variants.variant_key(recorded(placement="after_activation",
                                                                     activation="sigmoid"))
    sites = recorded(sites="dense1.pre:0.5", kind="classic", activation="tanh")
    assert variants.variant_label(sites) == "m/sites-dense1.pre_0.5-classic-tanh"
    assert variants.variant_label(variants.baseline_config(sites, "canonical")) == "m/canonical-classic-tanh"
    # The seed and where a run executed do not make another variant; the rate does.
    assert variants.variant_key(recorded(seed=3, strategy="mirrored")) == variants.variant_key(recorded())
    assert variants.variant_key(recorded(rate=0.3)) != variants.variant_key(recorded())
    # A run recorded before a field existed is the same variant as one recorded after.
    older = {k: v for k, v in recorded().items() if k not in ("bn_momentum", "keras_model")}
    assert variants.variant_key(older) == variants.variant_key(recorded())


def test_comparison_of_an_empty_directory_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no finished runs"):
        compare.compare_runs(str(tmp_path))


# ------------------------------------------------------------- variance shift


@pytest.mark.parametrize("kind,keep_scale", [("inverted", 1.0), ("classic", 0.5)])
def test_variance_shift_matches_a_hand_computation(kind, keep_scale):
    model = models.build("dense_mlp", "dense1.post:0.5", kind=kind, seed=0)
    x = np.random.default_rng(0).uniform(0, 1, (256, 28, 28, 1)).astype("float32")
    kernel, bias = model.get_layer("dense1").get_weights()
    h = np.maximum(x.reshape(256, -1).astype(np.float64) @ kernel + bias, 0.0)  # what enters the site
    entry = site_stats.site_statistics(model, x)["dense1.post"]
    for mode in ("train", "inference"):  # no dropout upstream: the input is the same in both modes
        assert entry[mode]["in_mean"] == pytest.approx(h.mean(), rel=1e-5)
        assert entry[mode]["in_var"] == pytest.approx(h.var(), rel=1e-5)
    # Inference: identity (inverted) or x (1 - rate) (classic).
    assert entry["inference"]["out_mean"] == pytest.approx(keep_scale * h.mean(), rel=1e-5)
    assert entry["inference"]["out_var"] == pytest.approx(keep_scale ** 2 * h.var(), rel=1e-5)
    # Training: the mean is kept in expectation; the variance grows to
    # E[(m h s)^2] - (E[m h s])^2 with m ~ Bernoulli(0.5), s = 2 (inverted) or 1 (classic).
    s = 2.0 if kind == "inverted" else 1.0
    expected_var = 0.5 * s ** 2 * (h ** 2).mean() - (keep_scale * h.mean()) ** 2
    se = math.sqrt(0.5 * s ** 2 * (h ** 2).mean() / h.size)
    assert abs(entry["train"]["out_mean"] - keep_scale * h.mean()) < 5 * se
    assert entry["train"]["out_var"] == pytest.approx(expected_var, rel=0.05)
    assert entry["variance_ratio"] == pytest.approx(expected_var / (keep_scale ** 2 * h.var()), rel=0.05)
    # Half the non-zero units dropped, within 4 binomial standard errors.
    live = int((h != 0).sum())
    assert entry["rate"] == 0.5 and abs(entry["drop_fraction"] - 0.5) < 4 * math.sqrt(0.25 / live)


def test_drop_fraction_is_logged_for_bernoulli_sites_only_and_can_see_a_broken_rate():
    x = np.random.default_rng(2).uniform(0.5, 1.5, (256, 28, 28, 1)).astype("float32")
    gaussian = models.build("dense_mlp", "dense1.post:0.3", kind="gaussian", seed=0)
    assert "drop_fraction" not in site_stats.site_statistics(gaussian, x)["dense1.post"]
    model = models.build("dense_mlp", "dense1.post:0.3", seed=0)
    entry = site_stats.site_statistics(model, x)["dense1.post"]
    assert entry["rate"] == pytest.approx(0.3) and abs(entry["drop_fraction"] - 0.3) < 0.05
    layer = model.get_layer("dense1.post")  # a layer that drops more than its rate says
    layer.call = lambda inputs, training=False: (
        keras.random.dropout(inputs, 0.6, seed=layer.seed_generator) if training else inputs)
    entry = site_stats.site_statistics(model, x)["dense1.post"]
    assert entry["rate"] == pytest.approx(0.3) and abs(entry["drop_fraction"] - 0.6) < 0.05


def test_probe_does_not_move_the_training_mask_stream():
    model = models.build("dense_mlp", seed=0)
    x = np.random.default_rng(1).uniform(0, 1, (8, 28, 28, 1)).astype("float32")
    before = [v.numpy().copy() for layer in model.layers for v in layer.variables if "seed" in v.path]
    site_stats.site_statistics(model, x)
    after = [v.numpy() for layer in model.layers for v in layer.variables if "seed" in v.path]
    assert all(np.array_equal(a, b) for a, b in zip(before, after)) and before


def test_probe_leaves_batch_norm_statistics_as_they_were():
    # A training-mode call moves BN's moving statistics toward its batch; the probe runs once an epoch in the
    # variants with dropout only, so left in, it would treat `none` and the others differently.
    model = models.build("dense_mlp", "dense1.post:0.5", norm="batch", seed=0)
    x = np.random.default_rng(1).uniform(0, 1, (64, 28, 28, 1)).astype("float32")
    moving = [v for v in model.non_trainable_variables if "moving" in v.path]
    before = [v.numpy().copy() for v in model.weights]
    assert site_stats.site_statistics(model, x)["dense1.post"] and moving
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(before, model.weights))


@pytest.mark.slow
def test_a_user_error_inside_a_sweep_is_one_line_and_the_sweep_goes_on(tmp_path, monkeypatch):
    from dropzoo.errors import ExportError

    real = verify.verify_export
    calls = []

    def fail_first(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 1:
            raise ExportError(f"export at {path} failed verification:\nrandom ops in serving graph")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(verify, "verify_export", fail_first)
    base = config_lib.TrainConfig(model="dense_mlp", dataset="tiny", epochs=1, batch_size=16,
                                  optimizer="adam", learning_rate=0.003)
    runs = [(c, sweep.run_dir(str(tmp_path), c)) for c in sweep.expand(base, seeds=2)]
    results = sweep.run_sweep(runs, source=tiny_source(), verbose=0)
    failed, finished = results[0][2], results[1][2]
    assert failed.startswith("ExportError: export at ") and "\n" not in failed
    assert "Traceback" not in failed and isinstance(finished, dict)
    assert "FAILED ExportError" in outcomes.summary(results).splitlines()[0]


# ------------------------------------------------- rate x placement


def _row(placement, rate, seed, validation_loss, test_accuracy, test_loss=0.3):
    config = config_lib.TrainConfig(model="m", placement=placement, rate=rate, seed=seed).to_dict()
    return {"run": f"r/{placement}/{rate}/{seed}", "variant": variants.variant_label(config), "seed": seed,
            "config": config, "validation_loss": validation_loss, "test_accuracy": test_accuracy,
            "test_loss": test_loss, "identical_to": None}


def test_each_placements_rate_is_chosen_on_validation_loss_never_on_test():
    # Validation prefers 0.1 for canonical; the test split would prefer 0.5.
    rows = [_row("canonical", 0.1, s, 0.20 + 0.01 * s, 0.95) for s in range(3)]
    rows += [_row("canonical", 0.5, s, 0.30 + 0.01 * s, 0.99) for s in range(3)]
    rows += [_row("none", 0.1, s, 0.40, 0.90) for s in range(3)]
    rows += [_row("none", 0.5, s, 0.35, 0.80 + (0.0, 0.004, 0.001)[s]) for s in range(3)]
    for r in rows:  # as runs record them: the sites at each run's own rate
        r["sites"] = f"dense1.post:{r['config']['rate']:g},pool1.post:{r['config']['rate']:g}:spatial" if (
            r["config"]["placement"] == "canonical") else ""
    variants.label_rows(rows)
    tuned = compare.tune_rates(rows)
    chosen = {g["variant"]: g["rate"] for g in tuned["grid"] if g["selected"]}
    # The rates of a placement met (its sites held them apart); the control, one network at every rate, chose
    # nothing: its lowest rate names it (its runs here trained apart, as on two machines: not picked by their loss).
    assert chosen == {"m/canonical": 0.1, "m/none": 0.1}
    chosen_rows = variants.label_rows(compare.at_selected_rates(rows, tuned))
    table = compare.summarise(chosen_rows)
    assert [e["variant"] for e in table] == ["m/canonical-rate0.1", "m/none-rate0.1"]
    assert table[0]["test_accuracy"]["mean"] == pytest.approx(0.95)
    # The baseline is found at its own chosen rate, and paired by seed.
    [contrast] = contrasts.contrast_table(chosen_rows, compare.baseline_pairs(chosen_rows), report.DEFAULT_MARGINS)
    assert contrast["a"] == "m/none-rate0.1" and contrast["b"] == "m/canonical-rate0.1"
    assert contrast["test_accuracy"]["difference"] == pytest.approx(-0.05)
    # Three seeds cannot differ at 0.05, however far apart (an exact sign-flip test's p is at least 2/2^3).
    assert contrast["test_accuracy"]["p"] == 0.25 and contrast["test_accuracy"]["verdict"] == [stats.INCONCLUSIVE]
    assert "| m/canonical | 0.1 * | 3 |" in rates_report.markdown(tuned["grid"])
    assert compare.tune_rates([r for r in rows if r["config"]["rate"] == 0.1]) is None  # one rate each
    # A run at its placement's own rates (no --rate) is its own variant, not a point of the grid.
    own = _row("canonical", None, 0, 0.01, 0.99)
    own["sites"] = "dense1.post:0.5,pool1.post:0.25:spatial"
    with_own = variants.label_rows(rows + [own])
    grid = [(g["rate"], g["selected"]) for g in compare.tune_rates(with_own)["grid"] if g["variant"] == "m/canonical"]
    assert sorted(grid, key=str) == [(0.1, True), (0.5, False), (None, True)]  # its own low loss chose nothing
    assert own in compare.at_selected_rates(with_own, compare.tune_rates(with_own))
    control = ("m/none-rate0.1 has no dropout sites: its rates are one network (trained once), so the rate its label "
               "carries was not chosen by anything; it stands for every rate")
    assert tuned["notes"] == [control]
    # A diverged seed (validation loss NaN) is left out of its rate's mean, not the rate out of the choice.
    rows[3]["validation_loss"] = rows[3]["test_loss"] = float("nan")
    tuned = compare.tune_rates(rows)
    assert [g["validation_loss"] for g in tuned["grid"]][:2] == pytest.approx([0.21, 0.315])
    # Survivors of a rate whose seeds diverged do not win it the choice, however low their loss.
    for r in rows[3:5]:
        r["validation_loss"] = float("nan")
    rows[5]["validation_loss"] = 0.01
    assert {g["variant"]: g["rate"] for g in compare.tune_rates(rows)["grid"] if g["selected"]}["m/canonical"] == 0.1
    rows[4]["validation_loss"], rows[5]["validation_loss"] = 0.31, 0.32
    assert tuned["notes"] == ["seed 0 of m/canonical-rate0.5 left out of the rate grid's mean test_loss (not finite)",
                              "seed 0 of m/canonical-rate0.5 left out of the rate grid's mean validation_loss "
                              "(not finite)", control]


def test_a_variant_without_dropout_pairs_with_the_baseline_of_its_own_mask_generator():
    # `none` draws no masks (no generator); its baseline has one. With baselines from two
    # generators, a variant with masks pairs with its own generator's, never the other's.
    rows = []
    for placement, generator in [("canonical", "kbit-fields-v1"), ("canonical", "keras-stateless-dropout"),
                                 ("none", None), ("conv", "kbit-fields-v1")]:
        for s in range(2):
            row = _row(placement, 0.5, s, 0.3, 0.9)
            row["mask_generator"] = generator
            rows.append(row)
    rows = variants.label_rows(rows)
    groups = records.group(rows)
    pairs = {(groups[a][0]["config"]["placement"], groups[a][0].get("mask_generator"),
              groups[b][0].get("mask_generator")) for a, b in compare.baseline_pairs(rows)}
    assert ("conv", "kbit-fields-v1", "kbit-fields-v1") in pairs
    assert not any(p == "conv" and b != "kbit-fields-v1" for p, _, b in pairs)
    assert [p for p in pairs if p[0] == "none"] == []  # two candidate baselines, neither its own: none chosen
    notes = []
    compare.baseline_pairs(rows, notes=notes)
    assert notes == ["m/none-rate0.5 - canonical is not tested: canonical is split into m/canonical-rate0.5 "
                     "[mask_generator kbit-fields-v1] and m/canonical-rate0.5 "
                     "[mask_generator keras-stateless-dropout], and none of them is m/none-rate0.5's own; plan it "
                     "with --contrasts naming one of them"]
    # Split by the sites recorded (another version's placement): labels a --contrasts cannot write (A:B), so
    # the note names a fix that can be typed.
    by_sites = [{**_row("canonical", 0.5, s, 0.3, 0.9), "sites": "dense1.post:0.5" if s < 2 else "dense1.pre:0.5"}
                for s in range(4)] + [{**_row("none", 0.5, s, 0.3, 0.9), "sites": "none"} for s in range(4)]
    notes = []
    assert compare.baseline_pairs(variants.label_rows(by_sites), notes=notes) == []
    assert len(notes) == 1 and notes[0].endswith("compare each directory apart, or train one of them again with "
                                                 "this code"), notes
    only_new = [r for r in rows if r.get("mask_generator") != "keras-stateless-dropout"]
    pairs = {groups[a][0]["config"]["placement"] for a, b in compare.baseline_pairs(only_new)}
    assert pairs == {"none", "conv"}


def test_a_rate_grid_without_validation_loss_is_a_clear_error():
    rows = [{**_row("canonical", rate, 0, None, 0.9), "sites": f"dense1.post:{rate:g}"} for rate in (0.1, 0.5)]
    with pytest.raises(ValueError, match="no finite validation loss .*--validation_fraction > 0, or compare each "
                                         "rate's runs alone"):
        compare.tune_rates(rows)
    # The control alone (no dropout sites: one network at every rate) has nothing to choose: not refused.
    control = [{**_row("none", rate, 0, None, 0.9), "sites": ""} for rate in (0.1, 0.5)]
    assert compare.tune_rates(control)["selected"]


def test_a_rate_is_chosen_on_the_seeds_all_rates_ran_and_a_single_rate_needs_no_validation():
    """A rate run on one easy seed beat a rate better on every seed, by its mean over that seed alone."""
    rows = [_row("canonical", 0.25, s, (1.98, 1.84, 1.91)[s], 0.9) for s in range(3)]
    rows += [_row("canonical", 0.5, 1, 1.87, 0.9)]
    rows += [_row("conv", 0.5, s, None, 0.9) for s in range(3)]  # one rate, no validation: nothing to choose
    rows += [_row("none", rate, s, 0.4, 0.9) for rate in (0.25, 0.5) for s in range(3)]
    for r in rows:  # as runs record them
        r["sites"] = "" if r["config"]["placement"] == "none" else f"dense1.post:{r['config']['rate']:g}"
    variants.label_rows(rows)
    tuned = compare.tune_rates(rows)
    grid = {(g["variant"], g["rate"]): g for g in tuned["grid"]}
    assert grid["m/canonical", 0.25]["selected"] and grid["m/canonical", 0.25]["validation_loss"] == 1.84
    assert grid["m/conv", 0.5]["selected"] and grid["m/conv", 0.5]["only"]
    assert "m/canonical's rate was chosen on the seeds all its rates ran (1), leaving out of the choice rate 0.25: " \
           "seeds 0, 2" in tuned["notes"]
    text = rates_report.markdown(tuned["grid"])
    assert "| m/canonical | 0.25 * | 3 (1 in the choice) | 1.8400 |" in text and "| m/conv | 0.5 - | 3 |" in text
    assert "flatters it against a variant with nothing to choose" in text
    apart = [r for r in rows if r["config"]["placement"] == "canonical"]
    apart[-1]["seed"] = 7
    assert "m/canonical's rates share no seed with a finite validation loss" in " ".join(
        compare.tune_rates(apart)["notes"])
    # Every seed the rates share diverged: each rate's own seeds choose (it stopped the comparison, naming a missing
    # validation loss), and the note says so.
    shared = [dict(r) for r in rows if r["config"]["placement"] == "canonical"]
    shared[3]["seed"] = 1  # (moved to seed 7 above)
    shared[1]["validation_loss"] = shared[3]["validation_loss"] = float("nan")  # seed 1 of both rates
    tuned = compare.tune_rates(shared)
    assert [g["rate"] for g in tuned["grid"] if g["selected"]] == [0.25]
    assert "m/canonical's rates share no seed with a finite validation loss" in " ".join(tuned["notes"])
    # A variant without dropout at rates on other seeds: one network, no note that a rate was chosen.
    nodrop = [r for r in rows if r["config"]["placement"] == "none"][:-1]
    assert not any("chosen on the seeds" in note for note in compare.tune_rates(nodrop)["notes"])


def test_rate_heat_maps_are_written(tmp_path):
    rows = [_row(p, rate, s, 0.2 + rate, 0.9 + rate / 10, 0.3 - rate / 10)
            for p in ("canonical", "none") for rate in (0.1, 0.25, 0.5) for s in range(2)]
    path = str(tmp_path / "rates.png")
    rates_report.plot(path, compare.tune_rates(rows)["grid"], "title")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_rate_and_norm_lists_sweep_and_name_their_variants():
    fv = flags.FlagValues()
    flags_lib.define_train_flags(fv)
    fv(["train.py", "--model=dense_mlp", "--rate=0.1,0.5", "--norm=none,batch", "--workdir=root"])
    runs = flags_lib.train_plan(fv)
    assert sorted(os.path.relpath(w, "root") for _, w in runs) == [
        "dense_mlp/canonical-batchnorm-rate0.1/seed0", "dense_mlp/canonical-batchnorm-rate0.5/seed0",
        "dense_mlp/canonical-rate0.1/seed0", "dense_mlp/canonical-rate0.5/seed0"]
    fv = flags.FlagValues()
    flags_lib.define_train_flags(fv)
    fv(["train.py", "--rate=0.1,abc"])
    with pytest.raises(config_lib.ConfigError, match=r"^--rate must be a number in \[0, 1\), got 'abc'"):
        flags_lib.train_plan(fv)


# ------------------------------------------- identical by construction


# canonical and after_activation are one site set under two names (dense1.post:0.5),
# so only before_activation separates when the rule stops applying.
@pytest.mark.parametrize("activation,kind,trained", [("relu", "inverted", 1), ("tanh", "inverted", 2),
                                                     ("relu", "gaussian", 2)])
@pytest.mark.slow
def test_the_relu_trio_is_trained_once_and_reported_three_times(tmp_path, activation, kind, trained):
    base = config_lib.TrainConfig(model="dense_mlp", dataset="tiny", epochs=1, batch_size=16,
                                  optimizer="adam", learning_rate=0.003, activation=activation, kind=kind)
    configs = sweep.expand(base, {"placement": ["canonical", "after_activation", "before_activation"]})
    runs = [(c, sweep.run_dir(str(tmp_path), c)) for c in configs]
    results = sweep.run_sweep(runs, source=tiny_source(), verbose=0)
    assert sum("identical_to" not in m for _, _, m in results) == trained
    assert sum(os.path.isdir(os.path.join(w, "saved_model")) for _, w in runs) == trained
    comparison = compare.compare_runs(str(tmp_path), source=tiny_source())
    table = {e["variant"]: e for e in comparison["table"]}
    suffix = ("" if kind == "inverted" else f"-{kind}") + ("" if activation == "relu" else f"-{activation}")
    assert len(table) == 3
    identical = {v: e["identical_to"] for v, e in table.items() if e["identical_to"]}
    if trained == 1:
        assert identical == {f"dense_mlp/after_activation{suffix}": "dense_mlp/canonical",
                             f"dense_mlp/before_activation{suffix}": "dense_mlp/canonical"}
        same = {e["test_accuracy"]["mean"] for e in table.values()}
        assert len(same) == 1
        with open(comparison["paths"]["comparison.md"]) as f:
            assert f.read().count("(= dense_mlp/canonical, identical by construction)") == 2
        assert all(c["identical"] for c in comparison["contrasts"])
        assert "identical by construction to" in outcomes.summary(results)
    else:
        assert identical == {f"dense_mlp/after_activation{suffix}": f"dense_mlp/canonical{suffix}"}
        tested = {c["a"]: c for c in comparison["contrasts"] if not c["identical"]}
        assert tested[f"dense_mlp/before_activation{suffix}"]["test_accuracy"]["n"] == 1


def test_bn_variance_shift_matches_a_hand_computation():
    model = models.build("dense_mlp", "dense1.pre:0.5", norm="batch", seed=0)
    x = np.random.default_rng(3).uniform(0, 1, (64, 28, 28, 1)).astype("float32")
    bn = model.get_layer("dense1.bn")
    learned = np.random.default_rng(4).uniform(0.5, 2.0, 128).astype("float32")
    bn.moving_variance.assign(learned)
    # What dense1.bn sees when serving: dense1 of the undropped input (no bias with BN).
    [kernel] = model.get_layer("dense1").get_weights()
    served = (x.reshape(64, -1).astype(np.float64) @ kernel).var(axis=0)
    shift = learned / served
    entry = site_stats.norm_statistics(model, x)["dense1.bn"]
    assert entry["channels"] == 128
    assert entry["variance_shift_mean"] == pytest.approx(shift.mean(), rel=1e-4)
    assert entry["variance_shift_max"] == pytest.approx(shift.max(), rel=1e-4)
    assert site_stats.norm_statistics(models.build("dense_mlp", seed=0), x) == {}  # no BN, no entry
    # After 435 steps at momentum 0.99, 0.99^435 of the initial variance 1 is still in it.
    remaining = 0.99 ** 435
    bn.moving_variance.assign(((served * 1.5) * (1 - remaining) + remaining).astype("float32"))
    debiased = site_stats.norm_statistics(model, x, steps=435)["dense1.bn"]
    assert debiased["variance_shift_mean"] == pytest.approx(1.5, rel=1e-4)
    assert site_stats.norm_statistics(model, x)["dense1.bn"]["variance_shift_mean"] > 1.5


def _plan(*args):
    fv = flags.FlagValues()
    flags_lib.define_train_flags(fv)
    fv(["train.py", *args])
    return flags_lib.train_plan(fv)


def test_any_scalar_field_sweeps_and_names_its_variant_only_where_it_varies():
    runs = _plan("--model=dense_mlp", "--learning_rate=0.1,1", "--epochs=2,3", "--workdir=root")
    assert sorted(os.path.relpath(w, "root") for _, w in runs) == [
        "dense_mlp/canonical-epochs2-learning_rate0.1/seed0", "dense_mlp/canonical-epochs2-learning_rate1/seed0",
        "dense_mlp/canonical-epochs3-learning_rate0.1/seed0", "dense_mlp/canonical-epochs3-learning_rate1/seed0"]
    assert sorted((c.epochs, c.learning_rate) for c, _ in runs) == [(2, 0.1), (2, 1.0), (3, 0.1), (3, 1.0)]
    # A field given once names nothing: the layout of a run with the defaults is unchanged.
    [(config, workdir)] = _plan("--model=dense_mlp", "--learning_rate=0.1")
    assert workdir == "runs/dense_mlp/canonical/seed0" and config.learning_rate == 0.1
    # Fields whose values hold commas are never split.
    [(config, _)] = _plan("--model=dense_mlp", "--sites=dense1.pre:0.2,dense1.post:0.3")
    assert config.sites == "dense1.pre:0.2,dense1.post:0.3"
    with pytest.raises(config_lib.ConfigError, match=r"^--epochs must be an integer, got 'x'"):
        _plan("--epochs=2,x")
    with pytest.raises(config_lib.ConfigError, match="has an empty item"):
        _plan("--learning_rate=0.1,,1")


def test_placement_all_is_resolved_per_norm():
    runs = _plan("--model=dense_mlp", "--placement=all", "--norm=none,batch")
    by_norm = {norm: {c.placement for c, _ in runs if c.norm == norm} for norm in ("none", "batch")}
    assert by_norm["batch"] == set(models.list_placements("dense_mlp"))
    assert by_norm["none"] == by_norm["batch"] - {"bn_before", "bn_after_last"}


def test_every_config_field_is_a_train_flag_and_the_reference_is_current():
    fv = flags.FlagValues()
    flags_lib.define_train_flags(fv)
    assert set(config_lib.FIELDS) <= set(fv)
    for name, field in config_lib.FIELDS.items():
        assert fv[name].help.startswith(field.metadata["help"])
    with open(os.path.join(ROOT, "docs", "flags.md")) as f:
        assert f.read() == flags_lib.markdown_reference(), "regenerate: python -m dropzoo.flags > docs/flags.md"


def test_a_sweep_silences_only_tensorflows_retracing_warning_and_only_while_it_runs(monkeypatch, caplog):
    """Each run builds its own functions; TensorFlow calls that retracing, twice per run. Other warnings stay."""
    def train(config, workdir, **kwargs):
        tf.get_logger().warning("5 out of the last 11 calls to <function f> triggered tf.function retracing. Tracing")
        tf.get_logger().warning("a warning that says something")
        return {"config": config.to_dict()}

    monkeypatch.setattr(sweep.trainer, "train_and_evaluate", train)
    caplog.set_level("WARNING")
    configs = sweep.expand(config_lib.TrainConfig(model="dense_mlp"), {"placement": ["canonical", "none"]})
    sweep.run_sweep([(c, f"w{i}") for i, c in enumerate(configs)], source=tiny_source(), verbose=0)
    assert [r.getMessage() for r in caplog.records if r.name == "tensorflow"] == ["a warning that says something"] * 2
    caplog.clear()
    tf.get_logger().warning("5 out of the last 11 calls to <function f> triggered tf.function retracing. Tracing")
    assert len([r for r in caplog.records if r.name == "tensorflow"]) == 1  # after the sweep, as TensorFlow has it


@pytest.mark.parametrize("args,error,message", [
    # Each passed --dry_run ("N to train"), then failed as training started.
    (["--train_size=100000"], "DataError", "--train_size=100000 must be between 2 and the 4,000 training examples"),
    (["--train_size=500,100000"], "DataError", "--train_size=100000 must be between"),
    (["--steps_per_execution=5"], "ValueError", "--steps_per_execution=5 does not divide the 29 steps per epoch"),
    (["--strategy=multi_worker"], "DistributeError", "--strategy=multi_worker needs TF_CONFIG naming the cluster"),
])
def test_a_dry_run_refuses_what_training_would_refuse_at_its_start(args, error, message, tmp_path, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    runs = _plan("--model=dense_mlp", "--dataset=mnist_sample", f"--workdir={tmp_path}", *args)
    with pytest.raises(ValueError) as info:
        sweep.dry_run(runs)[0]
    assert type(info.value).__name__ == error and str(info.value).startswith(message), str(info.value)
    assert "to train" in sweep.dry_run(_plan("--model=dense_mlp", "--dataset=mnist_sample", "--train_size=500",
                                             f"--workdir={tmp_path}"))[0]


def test_a_sweep_refuses_a_train_size_its_data_cannot_give_before_the_smaller_sizes_train(tmp_path, monkeypatch):
    """--train_size=500,100000 trained the 500 run, then failed the other: said first, as a dry run says it."""
    trained = []
    monkeypatch.setattr(sweep.trainer, "train_and_evaluate", lambda config, workdir, **_: trained.append(workdir))
    runs = _plan("--model=dense_mlp", "--dataset=mnist_sample", "--train_size=500,100000", f"--workdir={tmp_path}")
    with pytest.raises(DataError, match="^--train_size=100000 must be between 2 and the 4,000 training examples"):
        sweep.run_sweep(runs, verbose=0)
    assert trained == [] and not os.listdir(tmp_path)


def test_a_dry_run_checks_a_prepared_tfds_datasets_sizes(tmp_path):
    """tfds data was read from its description alone, so a --train_size or --steps_per_execution it cannot take
    passed --dry_run and failed as training started. Prepared, its splits' recorded sizes are checked (nothing
    read); tfds' own test dataset is prepared here from generated images, without the network."""
    import tensorflow_datasets as tfds

    class DryRunDigits(tfds.core.GeneratorBasedBuilder):  # registered as dry_run_digits: 20 train, 20 test
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, supervised_keys=("image", "label"), features=tfds.features.
                                         FeaturesDict({"image": tfds.features.Image(shape=(28, 28, 1)),
                                                       "label": tfds.features.ClassLabel(num_classes=10)}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(), "test": self._generate_examples()}

        def _generate_examples(self):
            for i in range(20):
                yield i, {"image": np.full((28, 28, 1), i, np.uint8), "label": i % 10}

    DryRunDigits(data_dir=str(tmp_path / "tfds")).download_and_prepare()
    data = ["--model=dense_mlp", "--dataset=dry_run_digits", f"--tfds_data_dir={tmp_path / 'tfds'}",
            f"--workdir={tmp_path / 'w'}"]
    for args, message in ((["--train_size=100"], "--train_size=100 must be between 2 and the 20 training examples "
                                                 "of tfds:dry_run_digits"),
                          (["--train_size=5"], "--train_size=5 is below the 10 classes of tfds:dry_run_digits"),
                          (["--batch_size=4", "--steps_per_execution=4"], "--steps_per_execution=4 does not divide "
                                                                          "the 5 steps per epoch")):
        with pytest.raises(ValueError, match=f"^{message}"):
            sweep.dry_run(_plan(*data, *args))[0]
    assert "1 run(s), 1 to train" in sweep.dry_run(_plan(*data, "--train_size=12"))[0]


def test_a_sweeps_summary_says_who_finished_a_run_in_words():
    """'finished earlier by vm pid 5588' read as a VM's process; the host and the process are named as such."""
    outcome = {"test_accuracy": 0.97, "trained_by": {"host": "vm", "pid": 5588}}
    assert outcomes.summary([(None, "runs/a", outcome)]).splitlines()[0] == (
        "runs/a  test_accuracy=0.9700  (finished earlier, by process 5588 on host vm)")

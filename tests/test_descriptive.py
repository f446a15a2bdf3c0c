"""descriptive.md: the medians, ranges, counts, signs, BN shifts and times a study's text quotes."""
import numpy as np
import pytest

from dropzoo import config as config_lib
from dropzoo import contrasts
from dropzoo import descriptive
from dropzoo import report
from dropzoo import variants
from dropzoo.errors import ConfigError


def _rows(placement, accuracies, losses, cpu=None, wall=None, shifts=None):
    config = config_lib.TrainConfig(model="m", placement=placement).to_dict()
    return [{"run": f"r/{placement}/{seed}", "seed": seed, "config": {**config, "seed": seed}, "sites": placement,
             "precision": "float32", "test_accuracy": a, "test_loss": nll, "identical_to": None, "data_source": "d",
             "train_accuracy": min(1.0, a + 0.02), "batch_accuracy": a + 0.01, "cpu": cpu,
             "wall_time_sec": None if wall is None else wall[seed], "train_time_sec": None if wall is None
             else wall[seed] - 5, "norm_shifts": shifts and {"conv1.bn": shifts[seed]}}
            for seed, (a, nll) in enumerate(zip(accuracies, losses))]


def _comparison(rows, planned):
    variants.label_rows(rows)
    table = [{"variant": label} for label in sorted({r["variant"] for r in rows})]
    tested = contrasts.contrast_table(rows, contrasts.planned_pairs(rows, planned), report.DEFAULT_MARGINS)
    return {"rows": rows, "compared": rows, "table": table, "contrasts": tested, "rates": None}


def test_the_figures_are_the_seeds_own_medians_counts_and_signs():
    dropout = [0.97, 0.96, 0.975, 0.95, 0.965]
    none = [0.96, 0.90, 0.975, 0.85, 0.97]
    rows = _rows("after_activation", dropout, [0.1, 0.12, 0.09, 0.15, 0.1], "Xeon (AMX)", [60, 70, 80, 90, 100],
                 shifts=[1.0, 1.1, 1.2, 1.3, 1.4])
    rows += _rows("none", none, [0.12, 0.3, 0.09, 0.5, 0.11], None, [30, 40, 50, 60, 70])
    text = descriptive.markdown(_comparison(rows, [("after_activation", "none")]), report.CONTRASTS,
                                descriptive.accuracy_levels(["95", "90%"]))
    # From Python: one level (a NumPy number too), or eval.py's comma list as one string.
    assert descriptive.accuracy_levels(np.int64(95)) == (95.0,)
    assert descriptive.accuracy_levels("95,90%") == descriptive.accuracy_levels(["95", "90%"]) == (95.0, 90.0)
    lines = text.splitlines()
    row = next(line for line in lines if line.startswith("| m/none |"))
    assert row == ("| m/none | 5 | 85.00 / 96.00 / 97.50 | 87.00 / 98.00 / 99.50 | 86.00 / 97.00 / 98.50 "
                   "| 2 of 5 | 1 of 5 |")
    assert "- m/none below 95%: 85.00 (seed 3), 90.00 (seed 1)" in lines
    assert "- m/none below 90%: 85.00 (seed 3)" in lines
    assert not any(line.startswith("- m/after_activation below") for line in lines)
    d = np.subtract(dropout, none)
    contrast = next(line for line in lines if line.startswith("| m/after_activation - m/none |"))
    cells = [c.strip() for c in contrast.strip("|").split("|")]
    assert cells[1] == f"{100 * d.mean():+.2f} / {100 * np.median(d):+.2f}"
    assert cells[2] == f"{(d > 0).sum()} / {(d == 0).sum()} / {(d < 0).sum()}" == "3 / 1 / 1"
    assert "| m/after_activation | 1.20 / 1.20 / 1.40 |" in lines
    assert "| Xeon (AMX) | 5 | 0 | 60 / 80 / 100 | 0.11 | 55 / 75 / 95 | 0.10 |" in lines
    assert "| CPU not recorded | 5 | 0 | 30 / 50 / 70 | 0.069 | 25 / 45 / 65 | 0.062 |" in lines


def test_a_run_identical_by_construction_is_timed_once_and_a_missing_or_resumed_time_is_said():
    rows = _rows("after_activation", [0.97, 0.96, 0.95], [0.1, 0.1, 0.1], "EPYC (AVX2)", [60, 70, 28])
    twin = _rows("before_activation", [0.97, 0.96], [0.1, 0.1], "EPYC (AVX2)", [60, 70])
    for r, of in zip(twin, rows):
        r["identical_to"] = of["run"]
    rows[1]["wall_time_sec"] = None
    # Resumed after its last epoch: 28 s of wall time and 0.04 s of training were its last session's, not the run's
    # (records.row gives an older record's training time as None); today's records sum every session's training.
    rows[2].update(resumed_from_epoch=40, train_time_sec=None)
    text = descriptive.time_lines(rows + twin)
    assert text[2] == ("| EPYC (AVX2) | 3 | 1 | 60 / 60 / 60 | 0.017 (1 of 2 runs) | 55 / 60 / 65 | "
                       "0.033 (2 of 3 runs) |")
    rows[2].update(train_time_sec=75.0)
    assert descriptive.time_lines(rows + twin)[2].endswith("| 55 / 65 / 75 | 0.054 |")
    # A spread over fewer values than seeds says so; a level is compared as a fraction (0.57 is not below 57%).
    assert descriptive._spread([0.5, None, 0.7], 100) == "50.00 / 60.00 / 70.00 (2 of 3)"
    low = _rows("none", [0.57, 0.56], [0.1, 0.1])
    assert "| 1 of 2 |" in descriptive.variants_lines([{"variant": "m/none"}], [{**r, "variant": "m/none"}
                                                                             for r in low], (57.0,))[2]


def test_a_rate_grid_shows_every_rates_variance_shift_and_leaves_out_variants_without_batchnorm():
    """The shift grows with the rate of the dropout feeding a BN layer: a table of the chosen rates alone hid it."""
    rows = []
    for rate, shift in ((0.1, 1.2), (0.5, 2.6)):
        for r in _rows("bn_before", [0.97, 0.96], [0.1, 0.1], shifts=[shift, shift]):
            rows.append({**r, "run": f"{r['run']}/{rate}", "config": {**r["config"], "rate": rate}})
    rows += _rows("none", [0.96, 0.95], [0.1, 0.1])  # no BN: no row
    comparison = _comparison(rows, [])
    chosen = next(label for label in (r["variant"] for r in rows) if label.endswith("rate0.1"))
    comparison.update(table=[{"variant": chosen}, {"variant": "m/none"}],
                      compared=[r for r in rows if r["variant"] in (chosen, "m/none")])
    text = descriptive.markdown(comparison, report.CONTRASTS)
    assert "| m/bn_before-rate0.1 | 1.20 / 1.20 / 1.20 |" in text and "| m/bn_before-rate0.5 | 2.60" not in text
    assert "| m/none |  |" not in text  # (the chosen rate only, without the grid)
    comparison["rates"] = {"chosen": "a rate grid"}
    lines = descriptive.markdown(comparison, report.CONTRASTS).splitlines()
    shifts = lines[lines.index("| variant | conv1.bn |") + 2:]
    assert shifts[:3] == ["| m/bn_before-rate0.1 | 1.20 / 1.20 / 1.20 |",
                          "| m/bn_before-rate0.5 | 2.60 / 2.60 / 2.60 |", ""]
    assert "; every rate of the grid (variants identical by construction, as none at each rate, once)" in "\n".join(
        lines)
    # BN without dropout at each rate of the grid: trained once, the other rate's runs its copies, shown once.
    for rate in (0.1, 0.5):
        for r in _rows("bn_none", [0.96, 0.95], [0.1, 0.1], shifts=[1.0, 1.0]):
            rows.append({**r, "run": f"{r['run']}/{rate}", "config": {**r["config"], "rate": rate},
                         "identical_to": f"{r['run']}/0.1" if rate == 0.5 else None})
    comparison = {**_comparison(rows, []), "rates": {"chosen": "a rate grid"}}
    text = descriptive.markdown(comparison, report.CONTRASTS)
    assert "| m/bn_none-rate0.1 | 1.00 / 1.00 / 1.00 |" in text and "| m/bn_none-rate0.5 | 1.00 /" not in text
    assert "| m/bn_before-rate0.5 | 2.60 / 2.60 / 2.60 |" in text


def test_runs_identical_by_construction_are_not_counted_as_trained():
    """'240 runs trained in float32' where 40 were records of the 200 trained."""
    rows = _rows("after_activation", [0.97, 0.96], [0.1, 0.1]) + _rows("before_activation", [0.97], [0.1])
    rows[2]["identical_to"] = rows[0]["run"]
    assert descriptive.runs_trained(rows) == "2 runs trained in float32 (and 1 recorded as identical by construction " \
                                             "to a trained run)"
    assert descriptive.runs_trained(rows[:1]) == "1 run trained in float32"
    assert descriptive.runs_trained(rows[2:]) == "1 run recorded as identical by construction to runs trained " \
                                                 "elsewhere, in float32"


def test_a_metrics_record_gives_its_times_cpu_batch_accuracy_and_bn_shifts():
    metrics = {"wall_time_sec": 12.5, "history": {"accuracy": [0.5, 0.9]},
               "machine": {"cpu": "AMD EPYC", "cpu_kind": "AVX-512 BF16", "cores": 2},
               "dropout_stats": {"conv1.bn": {"variance_shift_mean": 1.5, "channels": 4},
                                 "dense1.post": {"rate": 0.5, "drop_fraction": 0.49}}}
    assert descriptive.record_fields(metrics) == {"wall_time_sec": 12.5, "resumed_from_epoch": 0, "batch_accuracy": 0.9,
                                                  "norm_shifts": {"conv1.bn": 1.5},
                                                  "cpu": "AMD EPYC (AVX-512 BF16), 2 cores available"}
    assert descriptive.record_fields({"resumed_from_epoch": 3}) == {
        "wall_time_sec": None, "resumed_from_epoch": 3, "batch_accuracy": None, "norm_shifts": None, "cpu": None}


@pytest.mark.parametrize("level", ["ninety", "0", "0.95", "101", "-5"])
def test_an_accuracy_level_outside_0_to_100_is_refused(level):
    with pytest.raises(ConfigError, match=r"^--accuracy_below takes test accuracies in percent"):
        descriptive.accuracy_levels([level])


def test_eval_refuses_a_bad_accuracy_level_in_one_line(tmp_path, eval_main, capsys):
    assert eval_main(f"--runs_dir={tmp_path}", "--accuracy_below=0.95x") == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: --accuracy_below takes test accuracies in percent, from 1 to 100 (e.g. "
        "--accuracy_below=95,80 for 95% and 80%), got '0.95x'")

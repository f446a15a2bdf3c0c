"""Training speed against the hardware: FLOP/s achieved over what the linear ops reach alone.

    python benchmarks/train_throughput.py                      # mnist_sample, 12 epochs, 3 seeds (~11 min on 2 cores)
    python benchmarks/train_throughput.py --epochs=4 --seeds=1
    python benchmarks/train_throughput.py --idx_dir=DIR        # the full MNIST IDX files in DIR

The headline is efficiency: a training run's achieved GFLOP/s (examples/s
times the model's training FLOPs per example, models/flops.py) over the
rate its dominant convolution reaches alone, forward and backward, on the
same machine, in the same process and precision (benchmarks/op_rates.py).
Beside it: the rate of a 2048x2048 matmul, and each linear op's time alone
against the step's, which says how much of a step is spent outside them.

Trainings, with the same batch and data (and, per seed, the same initial
weights):

1. keras_mnist_cnn, the classic example exactly as its script does it, in
   Keras' own layers (the zoo's initial weights for the seed): NumPy
   arrays scaled to float32, one-hot labels, float32 global policy,
   Adadelta(learning_rate=1.0), `model.fit(x, y, batch_size=128,
   epochs=N, validation_data=(x_test, y_test))`, on the examples the trainer
   trains on (its validation hold-out left out);
2. keras_mnist_cnn, `dropzoo.trainer.train_and_evaluate` with TrainConfig
   defaults but `precision="float32"`: the accuracy reference (same data
   order, initial weights and dropout seeds as 3; only the precision
   differs). Where auto picks float32, 2 would be 3 again and is not run;
3. keras_mnist_cnn, the trainer with TrainConfig defaults;
4. each of --other_models (tf_layers_cnn), the trainer with its defaults.

Each runs for seeds 0..N-1 (--seeds, default 3), the ways taking turns, and
the ops alone are timed again before each seed's turn and after the last.
Accuracies are means over the seeds: on 1,000 test images one image is
0.1 pp, and a single run's accuracy moves by a few images with the seed.

Examples/s are per epoch, training steps only (validation excluded), the
first epoch of each run excluded (it pays for tracing). The headline figure
of each way is the median of its fastest quarter of epochs
(common.fast_phase_rate: on a shared VM epochs run at full or about half
speed, whatever the setting, and an all-epochs mean depends on which way
drew more slow epochs); the ops alone are rated the same way, call by call.
Targets: keras_mnist_cnn with the trainer defaults at >= 80% of conv2's
rate alone where auto picks float32 (AVX2), >= 45% where it picks bfloat16
(AMX, AVX-512 BF16: the convolutions run several times faster there),
and (where the defaults are not float32) the defaults' mean test accuracy
within 0.3 percentage points of 2's after the same epochs.
The examples/s of the defaults over the classic example's is printed too.
"""
import os
import sys
import tempfile

if __package__ in (None, ""):  # run as a file: import this checkout, not an installed copy
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dropzoo import environment  # noqa: E402  (light: no TensorFlow)

environment.set_defaults()  # before TensorFlow loads: as train.py and eval.py run
environment.import_tensorflow()  # without the start-up banner, as train.py and eval.py
import keras  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

import models  # noqa: E402
from benchmarks import common  # noqa: E402
from benchmarks import op_rates  # noqa: E402
from dropzoo import callbacks as callbacks_lib  # noqa: E402
from dropzoo import config as config_lib  # noqa: E402
from dropzoo import data as data_lib  # noqa: E402
from dropzoo import errors  # noqa: E402
from dropzoo import files  # noqa: E402
from dropzoo import flags as flags_lib  # noqa: E402
from dropzoo import performance  # noqa: E402
from dropzoo import sources  # noqa: E402
from dropzoo import trainer  # noqa: E402
from models import activations  # noqa: E402
from models import layers as dropout_layers  # noqa: E402
from models import pooling  # noqa: E402

# keras_mnist_cnn, trainer defaults: of conv2's rate alone, by the precision auto picked. In bf16
# (AMX, AVX-512 BF16) the convolutions run several times faster than in float32 and what surrounds
# them weighs more, so the same trainer reaches a smaller share.
EFFICIENCY_TARGETS = {"float32": 0.80, "mixed_bfloat16": 0.45, "mixed_float16": 0.45}


def efficiency_target(precision):
    """The efficiency keras_mnist_cnn's trainer defaults should reach in `precision`."""
    return EFFICIENCY_TARGETS.get(precision, EFFICIENCY_TARGETS["float32"])


ACCURACY_TOLERANCE_PP = 0.3
MODEL = "keras_mnist_cnn"  # the classic example's network


# The zoo's layers of the classic example's network -> Keras' own classes (their configs are Keras').
KERAS_OWN = {activations.Activation: keras.layers.Activation, pooling.MaxPooling2D: keras.layers.MaxPooling2D,
             dropout_layers.Float32Dropout: keras.layers.Dropout}


def keras_own(model):
    """`model` (the zoo's build) in Keras' own layers, with its initial weights: the classic example as its script
    writes it, untouched by the zoo's process-wide switches (compiled masks, ReLU and pooling gradients), which a
    trainer run before it leaves set."""
    stock = keras.models.clone_model(model, clone_function=lambda layer: KERAS_OWN.get(
        type(layer), type(layer)).from_config(layer.get_config()))
    zoo = [layer.name for layer in stock.layers if not type(layer).__module__.startswith("keras.")]
    if zoo:  # a zoo layer KERAS_OWN lacks: the example would not be Keras' own
        raise RuntimeError(f"the classic example kept the zoo's layers {zoo}: add their Keras classes to KERAS_OWN")
    stock.set_weights(model.get_weights())
    return stock


def train_classic(x_train, y_train, x_test, y_test, *, epochs, batch_size, seed):
    """The classic example's recipe; returns (steady per-epoch examples/s, test accuracy)."""
    keras.mixed_precision.set_global_policy("float32")
    keras.utils.set_random_seed(seed)
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    x_train = x_train.astype("float32") / 255
    x_test = x_test.astype("float32") / 255
    y_train = keras.utils.to_categorical(y_train, num_classes)
    y_test = keras.utils.to_categorical(y_test, num_classes)
    model = keras_own(models.build(MODEL, "canonical", num_classes=num_classes, input_shape=x_train.shape[1:],
                                   seed=seed))
    model.compile(loss=keras.losses.categorical_crossentropy,
                  optimizer=keras.optimizers.Adadelta(learning_rate=1.0), metrics=["accuracy"])
    throughput = callbacks_lib.Throughput()  # times training steps only, like the trainer's
    model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, verbose=0,
              validation_data=(x_test, y_test), callbacks=[throughput])
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    return common.steady_rates([s for _, s in throughput.epochs], len(x_train)), float(accuracy)


def train_project(source, *, epochs, batch_size, seed, **overrides):
    """The trainer with TrainConfig defaults (plus `overrides`); returns its metrics.

    The SavedModel is exported and checked as in any run; model.keras and the
    TFLite models are not (they take seconds and say nothing about training).
    """
    config = config_lib.TrainConfig(**sources.config_arguments(source.origin), epochs=epochs, batch_size=batch_size,
                                    seed=seed, **overrides)
    with tempfile.TemporaryDirectory() as workdir:
        return trainer.train_and_evaluate(config, workdir, source=source, verbose=0,
                                          serving_artifacts=False)


def _speed(epoch_rates, accuracies):
    """A way's figures from its runs' steady per-epoch rates and test accuracies."""
    rates = [rate for run in epoch_rates for rate in run]
    return {"examples_per_sec": common.fast_phase_rate(rates),
            "all_epochs_examples_per_sec": len(rates) / sum(1 / r for r in rates),
            "num_epochs_timed": len(rates),
            "test_accuracy": sum(accuracies) / len(accuracies),
            "per_seed_accuracy": list(accuracies)}


def _summary(runs, model=MODEL):
    """The trainer's figures over seeds (per-seed accuracies kept)."""
    rates = [common.steady_rates(m["epoch_train_seconds"], m["data"]["num_train"]) for m in runs]
    return {**_speed(rates, [m["test_accuracy"] for m in runs]), "model": model,
            "precision": runs[0]["precision"]["policy"],
            "jit_compile": runs[0]["jit_compile"]["enabled"],
            "steps_per_execution": runs[0]["steps_per_execution"]["used"]}


# --ablation: the trainer defaults with one setting put back, seed 0 each.
ABLATIONS = {"trainer defaults but --steps_per_execution=1, seed 0": {"steps_per_execution": 1},
             # what auto's "XLA on CPU trains these models several times slower" rests on
             "trainer defaults but --jit_compile=true, seed 0": {"jit_compile": "true"}}


def run(source, *, epochs=12, batch_size=128, seeds=3, compare_float32=True, ablation=False,
        other_models=("tf_layers_cnn",), log=print):
    """Trains every way, times the ops alone, and returns every figure the tables show.

    Each way trains with seeds 0..seeds-1, the ways taking turns; speeds
    are fast-phase rates over all of a way's steady epochs, accuracies are
    means over seeds (see the module docstring).
    """
    x, y = common.arrays(source.train)
    num_val = data_lib.validation_size(len(y), 0.1)  # TrainConfig's default hold-out
    x_test, y_test = common.arrays(source.test)
    auto_precision = performance.choose_precision("auto")[0]
    compare_float32 = compare_float32 and auto_precision != "float32"
    # The (model, precision) of every way: the classic example is float32, the defaults auto.
    used = {(MODEL, "float32"), (MODEL, auto_precision)} | {(name, auto_precision) for name in other_models}
    shapes = {"input_shape": source.image_shape, "num_classes": source.num_classes}
    references = {(name, precision): op_rates.References(models.build(name, seed=0, **shapes),
                                                         batch_size=batch_size, precision=precision)
                  for name, precision in sorted(used)}
    classic_runs, float32_runs, default_runs, ablation_runs = [], [], [], {}
    other_runs = {name: [] for name in other_models}

    def sample_references():
        log("timing the linear ops alone ...")
        for reference in references.values():
            reference.sample()

    for seed in range(seeds):
        sample_references()
        log(f"classic example, seed {seed}: {epochs} epochs on {len(y) - num_val} examples ...")
        classic_runs.append(train_classic(x[num_val:], y[num_val:], x_test, y_test,
                                          epochs=epochs, batch_size=batch_size, seed=seed))
        if compare_float32:
            log(f"trainer --precision=float32, seed {seed} ...")
            float32_runs.append(train_project(source, epochs=epochs, batch_size=batch_size,
                                              seed=seed, precision="float32"))
        log(f"trainer defaults, seed {seed} ...")
        default_runs.append(train_project(source, epochs=epochs, batch_size=batch_size, seed=seed))
        for label, overrides in (ABLATIONS.items() if ablation and seed == 0 else ()):  # beside the defaults' seed 0
            log(f"{label} ...")
            ablation_runs[label] = train_project(source, epochs=epochs, batch_size=batch_size, seed=0, **overrides)
        for name in other_models:
            log(f"trainer defaults --model={name}, seed {seed} ...")
            other_runs[name].append(train_project(source, epochs=epochs, batch_size=batch_size,
                                                  seed=seed, model=name))
    sample_references()
    # Each ablation against the defaults' seed 0, trained just before it (the machine's speed drifts over a run).
    ablations = {}
    if ablation_runs and seeds > 1:  # (with one seed the defaults' row is that run)
        ablations["trainer defaults, seed 0 (the ablations' baseline)"] = _summary(default_runs[:1])
    ablations.update({label: _summary([run]) for label, run in ablation_runs.items()})
    result = {"machine": common.machine(), "dataset": source.name, "epochs": epochs,
              "batch_size": batch_size, "seeds": seeds, "num_train": len(y) - num_val,
              "num_test": len(y_test), "auto_precision": auto_precision,
              "classic": {**_speed([r for r, _ in classic_runs], [a for _, a in classic_runs]),
                          "model": MODEL, "precision": "float32", "jit_compile": False,
                          "steps_per_execution": 1},
              "trainer_float32": _summary(float32_runs) if float32_runs else None,
              "trainer_defaults": _summary(default_runs),
              "other_models": {name: _summary(runs, name) for name, runs in other_runs.items()},
              "ablations": ablations,
              "references": {f"{name}/{precision}": _reference_figures(reference)
                             for (name, precision), reference in references.items()}}
    result["training_flops_per_example"] = result["references"][f"{MODEL}/float32"]["training_flops"]
    return _judge(result)


def _reference_figures(reference):
    flops = reference.flops
    return {"training_flops": flops.training, "dominant": flops.dominant,
            "layer_gflops": reference.layer_rates(), "layer_seconds": reference.layer_seconds(),
            "linear_seconds": reference.linear_seconds(), "matmul_gflops": reference.matmul_rate(),
            "matmul": reference.matmul_name}


def _ways(result):
    """(label, figures) of every training way the result has, in table order."""
    seeds = f"mean of {result['seeds']} seeds" if result["seeds"] > 1 else "seed 0"
    ways = [(f"classic example (fit on NumPy), {seeds}", result["classic"])]
    if result["trainer_float32"] is not None:
        ways.append((f"trainer --precision=float32, {seeds}", result["trainer_float32"]))
    ways.append((f"trainer defaults, {seeds}", result["trainer_defaults"]))
    ways += [(f"trainer defaults --model={name}, {seeds}", figures)
             for name, figures in result["other_models"].items()]
    return ways + list(result["ablations"].items())


def efficiency(figures, references, batch_size):
    """A way's FLOP rate against its model's ops alone, in its precision."""
    reference = references[f"{figures['model']}/{figures['precision']}"]
    gflops = figures["examples_per_sec"] * reference["training_flops"] / 1e9
    dominant = reference["dominant"]
    step_seconds = batch_size / figures["examples_per_sec"]
    return {"gflops": gflops, "dominant": dominant,
            "dominant_gflops": reference["layer_gflops"][dominant],
            "of_dominant": gflops / reference["layer_gflops"][dominant],
            "of_matmul": gflops / reference["matmul_gflops"],
            "step_seconds": step_seconds,
            "linear_share": reference["linear_seconds"] / step_seconds}


def _judge(result):
    for _, figures in _ways(result):
        figures["efficiency"] = efficiency(figures, result["references"], result["batch_size"])
    defaults = result["trainer_defaults"]
    result["efficiency"] = defaults["efficiency"]["of_dominant"]
    result["efficiency_target"] = efficiency_target(defaults["precision"])
    # A step can take no less time than its linear ops alone: where it did, the ops were timed while the machine was
    # busier than during training (a shared machine), and no efficiency follows.
    result["reference_valid"] = defaults["efficiency"]["linear_share"] <= 1
    result["pass_efficiency"] = (result["efficiency"] >= result["efficiency_target"] if result["reference_valid"]
                                 else None)
    result["speedup"] = defaults["examples_per_sec"] / result["classic"]["examples_per_sec"]
    result["speedup_all_epochs"] = (defaults["all_epochs_examples_per_sec"]
                                    / result["classic"]["all_epochs_examples_per_sec"])
    result["accuracy_diff_vs_classic_pp"] = 100 * (defaults["test_accuracy"]
                                                   - result["classic"]["test_accuracy"])
    reference = result["trainer_float32"]
    if reference is None:  # the defaults are float32 here: nothing to compare
        result.update(accuracy_diff_pp=None, per_seed_diff_pp=None, pass_accuracy=None)
        return result
    result["accuracy_diff_pp"] = 100 * (defaults["test_accuracy"] - reference["test_accuracy"])
    result["per_seed_diff_pp"] = [100 * (a - b) for a, b in zip(defaults["per_seed_accuracy"],
                                                                reference["per_seed_accuracy"])]
    # A hair of slack so that exactly 3 images in 1,000 is still 0.3 pp.
    result["pass_accuracy"] = abs(result["accuracy_diff_pp"]) <= ACCURACY_TOLERANCE_PP + 1e-6
    return result


def _where_the_step_goes(result, figures):
    """Rows: each linear op's time alone, their sum, and the rest of the step."""
    reference = result["references"][f"{figures['model']}/{figures['precision']}"]
    step_ms = 1e3 * figures["efficiency"]["step_seconds"]
    rows = [[f"{name} alone (forward + backward)", f"{1e3 * seconds:.1f}",
             f"{100 * seconds * 1e3 / step_ms:.0f}%", f"{reference['layer_gflops'][name]:.1f}"]
            for name, seconds in reference["layer_seconds"].items()]
    linear_ms = 1e3 * reference["linear_seconds"]
    rows.append(["all linear ops alone", f"{linear_ms:.1f}", f"{100 * linear_ms / step_ms:.0f}%", ""])
    rows.append(["the rest of the step", f"{step_ms - linear_ms:.1f}",
                 f"{100 * (step_ms - linear_ms) / step_ms:.0f}%", ""])
    rows.append(["training step", f"{step_ms:.1f}", "100%", f"{figures['efficiency']['gflops']:.1f}"])
    return rows


def report(result):
    """The printed tables."""
    classic_rate = result["classic"]["examples_per_sec"]
    matmul = result["references"][f"{MODEL}/float32"]["matmul"]
    rows = []
    for label, run in _ways(result):
        e = run["efficiency"]
        rows.append([label, run["precision"], "on" if run["jit_compile"] else "off",
                     run["steps_per_execution"], f"{run['examples_per_sec']:,.0f}",
                     f"{run['examples_per_sec'] / classic_rate:.2f}x", f"{e['gflops']:.1f}",
                     f"{e['dominant']} {e['dominant_gflops']:.1f}", f"{100 * e['of_dominant']:.0f}%",
                     f"{100 * e['of_matmul']:.0f}%", f"{100 * e['linear_share']:.0f}%",
                     f"{run['all_epochs_examples_per_sec']:,.0f}", f"{100 * run['test_accuracy']:.2f}%"])
    per_image = 100 / result["num_test"]
    defaults = result["trainer_defaults"]
    lines = [
        f"train_throughput: {result['dataset']} ({result['num_train']:,} train / "
        f"{result['num_test']:,} test images), batch {result['batch_size']}, {result['epochs']} epochs",
        f"machine: {result['machine']}; auto precision: {result['auto_precision']}",
        "",
        common.table(["run", "precision", "XLA", "steps/exec", "ex/s", "vs classic", "GFLOP/s",
                      "dominant op alone", "of it", f"of {matmul}", "linear ops alone",
                      "all-epochs ex/s", "test acc"], rows),
        "",
        f"efficiency: {MODEL}, trainer defaults = {100 * result['efficiency']:.1f}% of "
        f"{defaults['efficiency']['dominant']}'s rate alone  (target in {defaults['precision']} >= "
        f"{100 * result['efficiency_target']:.0f}%)  "
        + (common.verdict(result["pass_efficiency"]) if result["reference_valid"] else
           f"NO VERDICT: a step took {100 * defaults['efficiency']['linear_share']:.0f}% of its linear ops' time "
           "alone, so they were timed while the machine was busier; rerun on a quiet machine (each --seeds times "
           "them once more)"),
        f"speed:    trainer defaults / classic example = {result['speedup']:.2f}x "
        f"(over all epochs: {result['speedup_all_epochs']:.2f}x)",
    ]
    if result["pass_accuracy"] is None and defaults["precision"] != "float32":
        lines.append("accuracy: the float32 reference was not trained (--nofloat32): nothing to compare")
    elif result["pass_accuracy"] is None:
        lines.append(f"accuracy: the defaults train in {defaults['precision']} here: no other precision "
                     "to compare")
    else:
        per_seed = ", ".join(f"{d:+.1f}" for d in result["per_seed_diff_pp"])
        lines += [f"accuracy: trainer defaults - trainer float32 = {result['accuracy_diff_pp']:+.2f} pp  "
                  f"(target within {ACCURACY_TOLERANCE_PP} pp)  {common.verdict(result['pass_accuracy'])}",
                  f"          per seed: {per_seed} pp; 1 test image = {per_image:.2f} pp"]
    lines.append(f"          the defaults vs the classic example: {result['accuracy_diff_vs_classic_pp']:+.2f} pp "
                 "(other data order and dropout masks)")
    for name, figures in [(MODEL, defaults), *result["other_models"].items()]:
        flops = result["references"][f"{name}/{figures['precision']}"]["training_flops"]
        lines += ["", f"where a step of {name} goes (trainer defaults, {figures['precision']}, "
                  f"batch {result['batch_size']}; {flops / 1e6:.1f} MFLOP per training example):",
                  common.table(["", "ms", "of the step", "GFLOP/s"], _where_the_step_goes(result, figures))]
    lines += [
        "",
        "ex/s: training steps only, first epoch of each run excluded; the median of each way's "
        "fastest quarter",
        f"      of its {result['classic']['num_epochs_timed']} timed epochs (the machine at full "
        "speed); all-epochs ex/s: every timed epoch.",
        "GFLOP/s: ex/s x the model's training FLOPs per example (convolutions and dense layers: "
        "forward, weight and input",
        "      gradients; models/flops.py). The dominant op and the matmul are timed alone in this "
        "process and precision,",
        "      call by call, rated like the epochs (benchmarks/op_rates.py); 'linear ops alone': "
        "their summed time over the step's.",
    ]
    note = common.few_epochs_note(result["classic"]["num_epochs_timed"])
    return "\n".join(lines + ([note] if note else []))


FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_integer("epochs", 12, "Epochs for every run (default 12, as the example).", lower_bound=2)
    flags.DEFINE_integer("batch_size", 128, "Batch size.", lower_bound=1)
    common.define_data_flags()
    flags.DEFINE_integer("seeds", 3, "Trainer runs use seeds 0..N-1; accuracies and ex/s are their means.",
                         lower_bound=1)
    flags.DEFINE_bool("ablation", False, "Also train the defaults with --steps_per_execution=1, and with "
                      "--jit_compile=true (seed 0 each).")
    flags.DEFINE_bool("float32", True, "Where auto picks another precision, also train the trainer "
                      "in float32 as the accuracy reference (--nofloat32 skips it).")
    flags.DEFINE_list("other_models", ["tf_layers_cnn"], "Other zoo models trained with the trainer "
                      "defaults and measured against their own ops alone ('' for none).")
    flags.DEFINE_string("json", None, "Also write every figure to this JSON file.")
    flags.register_validator(
        "other_models", lambda names: set(names) - {""} <= set(models.list_models()),
        message=f"--other_models takes zoo models: {', '.join(models.list_models())}")


def main(argv):
    del argv
    result = run(common.source_from_flags(), epochs=FLAGS.epochs,
                 batch_size=FLAGS.batch_size, seeds=FLAGS.seeds, compare_float32=FLAGS.float32,
                 ablation=FLAGS.ablation, other_models=[m for m in FLAGS.other_models if m])
    print(report(result))
    if FLAGS.json:
        with errors.one_line():  # the tables are printed already: a full disk costs only the file
            files.write_json(FLAGS.json, result)
    return 0


if __name__ == "__main__":
    define_flags()  # here, not at import: tests import several benchmarks at once
    app.run(main, flags_parser=lambda argv: flags_lib.parse_or_exit(argv, empty_allowed=("other_models",)))

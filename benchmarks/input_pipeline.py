"""Input pipeline speed: the tf.data training stream alone vs what the model consumes.

    python benchmarks/input_pipeline.py                  # mnist_sample (~1 min on 2 cores)
    python benchmarks/input_pipeline.py --idx_dir=DIR    # the full MNIST IDX files in DIR

Measures, in one run, the examples/s of `dropzoo.data.make_pipelines(...).train`
iterated from Python with no model (what the stream can supply; timed before
and after the training, the slower taken), and the
training examples/s of `dropzoo.trainer.train_and_evaluate` with TrainConfig
defaults on the same data (what the model consumes: its fastest steady
epochs, see common.fast_phase_rate, so the ratio errs low). Target: the
pipeline supplies >= 20x what training consumes, so it never starves the
model, even where the device is much faster.
"""
import os
import sys
import tempfile
import time

if __package__ in (None, ""):  # run as a file: import this checkout, not an installed copy
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dropzoo import environment  # noqa: E402  (light: no TensorFlow)

environment.set_defaults()  # before TensorFlow loads: as train.py and eval.py run
environment.import_tensorflow()  # without the start-up banner, as train.py and eval.py
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from benchmarks import common  # noqa: E402
from dropzoo import config as config_lib  # noqa: E402
from dropzoo import data as data_lib  # noqa: E402
from dropzoo import flags as flags_lib  # noqa: E402
from dropzoo import sources  # noqa: E402
from dropzoo import trainer  # noqa: E402

RATIO_TARGET = 20.0


def pipeline_rate(source, *, batch_size, seed, data_epochs):
    """Examples/s of the training stream over `data_epochs` passes, after a warm-up pass."""
    pipes = data_lib.make_pipelines(source, batch_size=batch_size, seed=seed,
                                    validation_fraction=config_lib.TrainConfig.validation_fraction)
    iterator = iter(pipes.train)
    # The first pass fills the cache (decode + scale): a one-off cost.
    for _ in range(pipes.steps_per_epoch):
        next(iterator)
    steps = pipes.steps_per_epoch * data_epochs
    examples = 0
    start = time.perf_counter()
    for _ in range(steps):
        images, _ = next(iterator)
        examples += int(images.shape[0])
    return examples / (time.perf_counter() - start)


def training_rate(source, *, epochs, batch_size, seed):
    """The trainer's full-speed examples/s with TrainConfig defaults, and what auto chose."""
    config = config_lib.TrainConfig(**sources.config_arguments(source.origin), epochs=epochs, batch_size=batch_size,
                                    seed=seed)
    with tempfile.TemporaryDirectory() as workdir:
        metrics = trainer.train_and_evaluate(config, workdir, source=source, verbose=0,
                                             serving_artifacts=False)  # no .keras/TFLite: not what is timed
    rates = common.steady_rates(metrics["epoch_train_seconds"], metrics["data"]["num_train"])
    return common.fast_phase_rate(rates), metrics["precision"]["policy"]


def run(source, *, epochs=4, batch_size=128, seed=0, data_epochs=20, log=print):
    # The stream is timed before and after the training (the two take turns), and the slower figure is taken:
    # the machine's speed drifts, and the ratio errs low.
    log(f"1/3 tf.data training stream alone: {data_epochs} passes ...")
    before = pipeline_rate(source, batch_size=batch_size, seed=seed, data_epochs=data_epochs)
    log(f"2/3 trainer defaults: {epochs} epochs ...")
    consumed, policy = training_rate(source, epochs=epochs, batch_size=batch_size, seed=seed)
    log(f"3/3 tf.data training stream alone again: {data_epochs} passes ...")
    supplied = min(before, pipeline_rate(source, batch_size=batch_size, seed=seed, data_epochs=data_epochs))
    ratio = supplied / consumed
    return {"machine": common.machine(), "dataset": source.name, "batch_size": batch_size,
            "pipeline_examples_per_sec": supplied, "training_examples_per_sec": consumed,
            "training_precision": policy, "ratio": ratio, "pass": ratio >= RATIO_TARGET}


def report(result):
    rows = [["tf.data train stream (no model)", f"{result['pipeline_examples_per_sec']:,.0f}",
             f"{result['ratio']:.1f}x"],
            [f"trainer defaults ({result['training_precision']})",
             f"{result['training_examples_per_sec']:,.0f}", "1.0x"]]
    return "\n".join([
        f"input_pipeline: {result['dataset']}, batch {result['batch_size']}",
        f"machine: {result['machine']}",
        "",
        common.table(["what", "ex/s", "ratio"], rows),
        "",
        f"pipeline / training = {result['ratio']:.1f}x  (target >= {RATIO_TARGET:g}x)  "
        f"{common.verdict(result['pass'])}",
    ])


FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_integer("epochs", 4, "Trainer epochs (the first is excluded).", lower_bound=2)
    flags.DEFINE_integer("data_epochs", 20, "Passes over the data for the stream alone.", lower_bound=1)
    flags.DEFINE_integer("batch_size", 128, "Batch size.", lower_bound=1)
    common.define_data_flags()
    flags.DEFINE_integer("seed", 0, "Seed of the trainer run.", lower_bound=0)


def main(argv):
    del argv
    result = run(common.source_from_flags(), epochs=FLAGS.epochs,
                 batch_size=FLAGS.batch_size, seed=FLAGS.seed, data_epochs=FLAGS.data_epochs)
    print(report(result))
    return 0


if __name__ == "__main__":
    define_flags()  # here, not at import: tests import several benchmarks at once
    app.run(main, flags_parser=flags_lib.parse_or_exit)

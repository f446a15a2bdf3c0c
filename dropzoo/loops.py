"""The one thing that differs between runs: the loop that runs the epochs.

The trainer (`dropzoo/trainer.py`) owns a run from workdir to metrics.json
and sets up a `Run`; a loop trains it and hands back a `LoopResult`. Two
loops implement the same small interface:

* `FitLoop`: Keras' `model.fit` with the trainer's callbacks. Every
  single-machine strategy (default, one_device, mirrored) uses it.
* `multi_worker.MultiWorkerLoop`: a `strategy.run` loop for
  MultiWorkerMirroredStrategy, where Keras 3.15's fit fails
  (keras-team/keras#20585). It lives in its own module, to be deleted when
  Keras is fixed.

The interface, besides `train(run) -> LoopResult`:

  chief                  whether this process writes the workdir
  session(workdir)       context manager giving the directory this process
                         writes to (a worker's is temporary) and turning the
                         loop's own failures into one-line errors
  chief_does(work)       runs `work()` on the chief, returns its result on
                         every process
  steps_per_call(n)      the steps per call the loop supports, given auto's n
  restore(model, dir)    loads the checkpoint on every process; its epoch
  evaluate(run, ds)      {"loss", "accuracy"} on the chief
"""
import contextlib
import dataclasses
import time

import keras

from dropzoo import callbacks as callbacks_lib
from dropzoo import checkpoints
from dropzoo import data as data_lib
from dropzoo import performance
from dropzoo import sources
from dropzoo import strategies


@dataclasses.dataclass(frozen=True)
class Run:
    """One run, set up by the trainer the same way whichever loop trains it."""

    config: object  # config.TrainConfig
    paths: dict  # the workdir's files, by name (the chief's)
    write_paths: dict  # where this process writes: the workdir's, or a worker's temporary copy
    source: sources.Source
    pipes: data_lib.Pipelines
    model: keras.Model
    outputs: str  # "probabilities" or "logits"
    steps_per_epoch: int  # steps in one Keras epoch (one checkpoint)
    epochs: int
    steps_per_call: int
    initial_epoch: int  # epochs the restored checkpoint had completed
    checkpoint: callbacks_lib.EpochCheckpoint
    dropout_stats: callbacks_lib.DropoutStats
    verbose: int


@dataclasses.dataclass(frozen=True)
class LoopResult:
    """What a loop hands back: per-epoch logs, timings and dropout statistics."""

    history: dict  # {"loss": [...], "accuracy": [...], "val_loss": [...], ...}
    epoch_seconds: list  # [(steps, seconds of training steps)] per epoch run
    train_seconds: float  # wall time of the whole loop
    dropout_stats: dict  # the last epoch's site_statistics


class FitLoop:
    """Keras' `model.fit`, on one machine (any number of local replicas)."""

    chief = True

    def __init__(self, strategy):
        self.strategy = strategy

    @contextlib.contextmanager
    def session(self, workdir):
        yield workdir

    def chief_does(self, work):
        return work()

    def steps_per_call(self, steps):
        return strategies.fit_steps_per_execution(self.strategy, steps)

    def restore(self, model, directory):
        return checkpoints.restore(model, directory)

    def train(self, run):
        strategies.check_first_batches({"training": run.pipes.num_train, "validation": run.pipes.num_validation,
                                        "test": run.pipes.num_test}, run.config.batch_size,
                                       self.strategy.num_replicas_in_sync,  # (the sweep's dry run says it first)
                                       (run.steps_per_epoch, run.epochs))
        profile = performance.parse_profile_batches(run.config.profile_batches)
        if profile:
            performance.check_profile_batches(profile, epochs=run.epochs, steps_per_epoch=run.steps_per_epoch,
                                              steps_per_call=run.steps_per_call, train_steps=run.config.train_steps,
                                              initial_epoch=run.initial_epoch)
        throughput = callbacks_lib.Throughput()
        # Summaries before the checkpoint: a run killed between the two redoes the epoch and writes its points
        # again (equal values), where the other order would lose them for good.
        callbacks = [
            callbacks_lib.FirstReplicaStatistics(),  # before the probe and the checkpoint read them
            run.dropout_stats,
            keras.callbacks.TensorBoard(
                run.paths["tensorboard"], histogram_freq=1,
                profile_batch=profile),
            run.checkpoint,
            keras.callbacks.TerminateOnNaN(),
            throughput,
        ]
        if run.config.train_steps:
            callbacks.append(callbacks_lib.StopAtStep(run.config.train_steps, run.steps_per_epoch))
        # Keras appends its progress bar after these; given here, the epoch's line comes before a swallowed
        # signal stops the run.
        callbacks += [keras.callbacks.ProgbarLogger(), callbacks_lib.StopIfInterrupted()]
        start = time.perf_counter()
        history = run.model.fit(run.pipes.train, epochs=run.epochs, initial_epoch=run.initial_epoch,
                                steps_per_epoch=run.steps_per_epoch,
                                validation_data=run.pipes.validation, callbacks=callbacks,
                                verbose=run.verbose,
                                shuffle=False)  # the pipeline shuffles, seeded per epoch
        return LoopResult(
            history={k: [float(x) for x in v] for k, v in history.history.items()},
            epoch_seconds=list(throughput.epochs),
            train_seconds=time.perf_counter() - start,
            dropout_stats=run.dropout_stats.latest,
        )

    def evaluate(self, run, dataset):
        loss, accuracy = run.model.evaluate(dataset, verbose=0)
        return {"loss": float(loss), "accuracy": float(accuracy)}

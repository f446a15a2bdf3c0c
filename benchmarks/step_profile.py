"""Where a training step's time goes: the trainer's own run, profiled, per layer and pass.

    python benchmarks/step_profile.py                          # keras_mnist_cnn, trainer defaults
    python benchmarks/step_profile.py --model=tf_layers_cnn
    python benchmarks/step_profile.py --top=15                 # also the 15 longest ops

Trains with the trainer (TrainConfig defaults, 3 epochs, --profile_batches on
the 2nd training call: after tracing, and one tf.function call of
--steps_per_execution steps, so no epoch-end work falls inside), reads the
TensorFlow profiler's trace (the `.xplane.pb` TensorBoard shows under Profile) and
splits the profiled wall time among the ops that ran. TensorFlow runs up to
two ops at once here (its inter-op threads), each on the shared cores, so a
stretch of time where two ops overlap counts half for each: the shares add
up to the wall time, and an op that overlaps another costs the step less
than its own duration. Time when no op ran (the gaps between steps and
calls) is "between ops".

Ops are grouped by the model layer in their name and the pass: forward,
backward (Keras' `gradient_tape/` ops), the optimizer update, and the rest
(loss, metrics, the step counter). A convolution or matmul that TensorFlow
fused with its bias and activation (`_FusedConv2D`, or oneDNN's
`_MklNativeFusedConv2D`, named after the activation layer) counts as the linear layer's forward pass. An XLA
kernel (on CPU the trainer compiles max pooling's and ReLU's gradients, the
dropout masks and the optimizer update) is named by the call that launched it: a
mask's forward call by its layer; the optimizer's by the one call that
updates variables; the gradients' calls, which the trace names by no layer,
are one group. The profiler slows a step a little; the shares, not the
absolute times, are the result.
"""
import collections
import dataclasses
import glob
import os
import re
import sys
import tempfile

if __package__ in (None, ""):  # run as a file: import this checkout, not an installed copy
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dropzoo import environment  # noqa: E402  (light: no TensorFlow)

environment.set_defaults()  # before TensorFlow loads: as train.py and eval.py run
environment.import_tensorflow()  # without the start-up banner, as train.py and eval.py
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

import models  # noqa: E402
import models.flops  # noqa: E402,F401  (models.flops.count)
from benchmarks import common  # noqa: E402
from dropzoo import config as config_lib  # noqa: E402
from dropzoo import flags as flags_lib  # noqa: E402
from dropzoo import sources  # noqa: E402
from dropzoo import trainer  # noqa: E402

XLA_EVENT = "CpuExecutable::ExecuteAsyncOnStream"  # an XLA kernel running; the trace names no node
XLA_LAUNCH = "ExecutorState::ProcessAsync::Start"  # a call starting, with its node's name
XLA_OP = "XLA"  # the op type XLA kernels are listed under
XLA_GRADIENTS = "XLA gradients (max pooling, ReLU, dropout masks)"
OUTSIDE_LAYERS = "outside layers"  # ops in the model's scope but no layer's: its input's cast, Grappler's nodes


@dataclasses.dataclass(frozen=True)
class Op:
    start_ps: int
    duration_ps: int
    thread: str
    name: str  # the op's node name and type, "gradient_tape/m/conv2/...:Conv2DBackpropFilter"


def read_ops(logdir):
    """Every TensorFlow op the newest trace under `logdir` recorded on the host CPU."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2  # TensorFlow's trace format

    paths = sorted(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True))
    if not paths:
        raise FileNotFoundError(f"no profiler trace (*.xplane.pb) under {logdir}")
    space = xplane_pb2.XSpace()
    with open(paths[-1], "rb") as f:
        space.ParseFromString(f.read())
    ops = []
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):  # the executor's threads
                continue
            launches = []  # (start, end, node name) of the calls an XLA kernel runs inside
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if name == XLA_LAUNCH:
                    node = _stat(plane, event, "name")
                    if node:
                        launches.append((event.offset_ps, event.offset_ps + event.duration_ps, node))
                    continue
                if name == XLA_EVENT:  # an XLA kernel: named by the call that launched it
                    node = _innermost(launches, event.offset_ps, event.offset_ps + event.duration_ps)
                    name = f"{node}:{XLA_OP}" if node else f"xla/{XLA_EVENT}:{XLA_OP}"
                if ":" in name and "/" in name:  # "node/name:OpType"; not executor bookkeeping
                    ops.append(Op(line.timestamp_ns * 1000 + event.offset_ps, event.duration_ps,
                                  line.name, name))
    return sorted(ops, key=lambda op: op.start_ps)


def _stat(plane, event, stat_name):
    """An event's string stat `stat_name` (e.g. a call's node name), or None."""
    for stat in event.stats:
        if plane.stat_metadata[stat.metadata_id].name == stat_name:
            # A repeated string is stored once, in the plane's stat metadata, and referred to.
            return stat.str_value or (plane.stat_metadata[stat.ref_value].name if stat.ref_value else None)
    return None


# A convolution or matmul fused with its bias and activation: TensorFlow's _FusedConv2D and
# _FusedMatMul, and their oneDNN forms (_MklNativeFusedConv2D, _MklFusedMatMul, ...).
FUSED_LINEAR = re.compile(r"_(Mkl)?(Native)?Fused(Conv2D|MatMul|DepthwiseConv2dNative)")


def _innermost(spans, start, end):
    """The node name of the shortest (start, end, name) span containing [start, end], or None."""
    around = [(e - s, name) for s, e, name in spans if s <= start and e >= end]
    return min(around)[1] if around else None


def group_of(name, model_name, layer_names=None):
    """(layer, pass) of an op: ("conv2", "backward"), ("optimizer", "update"), ("other", ""). An op in the model's
    scope but in none of `layer_names` (its input's Cast, Grappler's ArithmeticOptimizer nodes) is the model's own:
    ("outside layers", pass)."""
    path, _, op_type = name.rpartition(":")
    parts = [re.sub(r"_\d+$", "", part) for part in path.split("/")]  # Keras' "_1" suffixes
    if model_name in parts[:-1]:
        index = parts.index(model_name)
        layer = parts[index + 1]
        if FUSED_LINEAR.match(op_type) and layer.endswith(".act"):
            # Grappler fuses conv/matmul + bias + activation under the activation's name.
            layer = layer[:-len(".act")]
        if layer_names is not None and layer not in layer_names:
            layer = OUTSIDE_LAYERS
        return layer, "backward" if "gradient_tape" in parts[:index] else "forward"
    optimizers = {"adadelta", "adam", "sgd", "rmsprop"}
    if optimizers & set(parts):
        return "optimizer", "update"
    if op_type == XLA_OP:
        # XLA calls outside a layer's scope: the one that updates variables is the optimizer's
        # (dropzoo/optimizers.py); the others are the gradients of pooling, ReLU and dropout masks.
        if parts[-1] == "StatefulPartitionedCall":
            return "optimizer", "update (XLA)"
        return XLA_GRADIENTS, ""
    return "other", ""


def attribute(ops, key):
    """{key(op): seconds} splitting wall time evenly among the ops running at once, and the gaps.

    Returns (shares, wall seconds, seconds when no op ran).
    """
    edges = []
    for index, op in enumerate(ops):
        edges.append((op.start_ps, 1, index))
        edges.append((op.start_ps + op.duration_ps, -1, index))
    edges.sort()
    shares = collections.Counter()
    running, idle, previous = set(), 0, edges[0][0] if edges else 0
    for time_ps, change, index in edges:
        span = time_ps - previous
        if running:
            for other in running:
                shares[key(ops[other])] += span / len(running)
        else:
            idle += span
        previous = time_ps
        if change > 0:
            running.add(index)
        else:
            running.discard(index)
    wall = (edges[-1][0] - edges[0][0]) if edges else 0
    return {k: v / 1e12 for k, v in shares.items()}, wall / 1e12, idle / 1e12


def profile(source, model_name="keras_mnist_cnn", *, epochs=3, batch_size=128, log=print):
    """Trains `model_name` on `source` with the trainer defaults, profiling call 2; the breakdown."""
    config = config_lib.TrainConfig(**sources.config_arguments(source.origin), model=model_name, epochs=epochs,
                                     batch_size=batch_size, profile_batches="2,2")
    with tempfile.TemporaryDirectory() as workdir:
        log(f"training {model_name} for {epochs} epochs, profiling training call 2 ...")
        metrics = trainer.train_and_evaluate(config, workdir, source=source, verbose=0,
                                             serving_artifacts=False)
        ops = read_ops(os.path.join(workdir, "tensorboard"))
    steps = metrics["steps_per_execution"]["used"]
    built = models.build(model_name, input_shape=source.image_shape, num_classes=source.num_classes)
    layer_names = {layer.name for layer in built.layers}
    shares, wall, idle = attribute(ops, lambda op: group_of(op.name, model_name, layer_names))
    op_shares, _, _ = attribute(ops, lambda op: op.name.rpartition(":")[2])
    durations = collections.defaultdict(list)
    for op in ops:
        durations[op.name].append(op.duration_ps / 1e12)
    flops = models.flops.count(built)
    return {"model": model_name, "machine": common.machine(), "precision": metrics["precision"]["policy"],
            "batch_size": batch_size, "steps": steps, "wall_seconds": wall, "idle_seconds": idle,
            "groups": {f"{layer}/{kind}" if kind else layer: seconds
                       for (layer, kind), seconds in shares.items()},
            "op_types": op_shares, "dominant": flops.dominant,
            "longest_ops": sorted(((sum(d) / len(d), len(d), name) for name, d in durations.items()),
                                  reverse=True)}


def report(result, top=0):
    step = result["wall_seconds"] / result["steps"]
    per_step = {name: seconds / result["steps"] for name, seconds in result["groups"].items()}
    per_step["between ops"] = result["idle_seconds"] / result["steps"]
    rows = [[name, f"{1e3 * seconds:.1f}", f"{100 * seconds / step:.0f}%"]
            for name, seconds in sorted(per_step.items(), key=lambda item: -item[1])]
    dominant = sum(s for name, s in per_step.items() if name.startswith(result["dominant"] + "/"))
    lines = [f"step_profile: {result['model']}, trainer defaults ({result['precision']}), batch "
             f"{result['batch_size']}, {result['steps']} profiled steps",
             f"machine: {result['machine']}", "",
             f"a step: {1e3 * step:.1f} ms of wall time (under the profiler); {result['dominant']}, "
             f"forward and backward: {100 * dominant / step:.0f}% of it", "",
             common.table(["layer/pass", "ms per step", "of the step"], rows), "",
             "by op type:",
             common.table(["op type", "ms per step", "of the step"],
                          [[name, f"{1e3 * s / result['steps']:.1f}", f"{100 * s / result['wall_seconds']:.0f}%"]
                           for name, s in sorted(result["op_types"].items(), key=lambda i: -i[1])[:12]])]
    if top:
        lines += ["", f"the {top} longest ops (mean duration, overlaps not split):",
                  common.table(["ms", "calls", "op"], [[f"{1e3 * mean:.2f}", calls, name[-90:]]
                                                       for mean, calls, name in result["longest_ops"][:top]])]
    lines += ["", "Shares split overlapping ops evenly (two inter-op threads); 'between ops': no op "
              "running (step boundaries,",
              "input, scheduling)."]
    return "\n".join(lines)


FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_enum("model", "keras_mnist_cnn", models.list_models(), "Zoo model to profile.")
    flags.DEFINE_integer("epochs", 3, "Epochs; at least 2, so that a 2nd training call happens.",
                         lower_bound=2)
    flags.DEFINE_integer("batch_size", 128, "Batch size.", lower_bound=1)
    common.define_data_flags()
    flags.DEFINE_integer("top", 0, "Also list the N longest ops.", lower_bound=0)


def main(argv):
    del argv
    result = profile(common.source_from_flags(), FLAGS.model, epochs=FLAGS.epochs,
                     batch_size=FLAGS.batch_size)
    print(report(result, FLAGS.top))
    return 0


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=flags_lib.parse_or_exit)

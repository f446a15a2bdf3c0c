"""TensorFlow's host allocator: the BFC allocator the entry points choose against the default.

    python benchmarks/allocator.py                  # 2 rounds (~6 min on 2 cores)
    python benchmarks/allocator.py --rounds=4 --epochs=6 --mc_rounds=0   # training only

TensorFlow picks its host allocator once, when it loads, from
TF_CPU_ALLOCATOR_USE_BFC (dropzoo/environment.py sets it to true unless the
environment already says otherwise). One process cannot time both, so each
round starts one child process per setting, the settings taking turns, and
each child measures, with everything else as train.py and eval.py run:

* training: keras_mnist_cnn with the trainer defaults on the MNIST sample,
  examples/s (the fastest quarter of its epochs after the first, as
  train_throughput.py rates them);
* MC dropout: benchmarks/mc_dropout.py's export at batch 256, T=20:
  `serving_default` and `mc_dropout_draws` (the servable draws) in ms, and
  their ratio.

The report gives each figure's median over the rounds per setting, and the
BFC allocator's figure over the default's.
"""
import json
import os
import subprocess
import sys

if __package__ in (None, ""):  # run as a file: import this checkout, not an installed copy
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dropzoo import environment  # noqa: E402  (light: no TensorFlow)

environment.set_defaults()  # before TensorFlow loads: as train.py and eval.py run
environment.import_tensorflow()  # without the start-up banner, as train.py and eval.py
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from benchmarks import common  # noqa: E402
from dropzoo import flags as flags_lib  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = ("false", "true")  # TF_CPU_ALLOCATOR_USE_BFC: TensorFlow's default, then the entry points'
FIGURES = ("train examples/s", "serving_default ms", "mc_dropout_draws ms", "MC / deterministic")

# What a child runs: the figures of one setting, as one JSON line on stdout.
CHILD = """
import json, sys
sys.path.insert(0, {root!r})
from dropzoo import environment
environment.set_defaults()
from absl import logging
from benchmarks import common, mc_dropout, train_throughput
logging.set_verbosity(logging.ERROR)
source = common.load_source("mnist_sample")
metrics = train_throughput.train_project(source, epochs={epochs}, batch_size=128, seed=0)
rates = common.steady_rates(metrics["epoch_train_seconds"], metrics["data"]["num_train"])
figures = {{"train examples/s": common.fast_phase_rate(rates), "machine": common.machine(),
           "precision": metrics["precision"]["policy"]}}
if {mc_rounds}:
    mc = mc_dropout.run(rounds={mc_rounds}, log=lambda *a: None)
    figures.update({{"serving_default ms": mc["methods"]["serving_default"]["ms"],
                    "mc_dropout_draws ms": mc["methods"]["mc_dropout_draws"]["ms"],
                    "MC / deterministic": mc["portable_over_deterministic"]}})  # the ms row's method
print(json.dumps(figures))
"""


def child(setting, *, epochs, mc_rounds):
    """One child process's figures under TF_CPU_ALLOCATOR_USE_BFC=`setting`."""
    env = {**os.environ, "TF_CPU_ALLOCATOR_USE_BFC": setting}  # the rest: the child's set_defaults()
    code = CHILD.format(root=ROOT, epochs=epochs, mc_rounds=mc_rounds)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"the child with TF_CPU_ALLOCATOR_USE_BFC={setting} failed:\n"
                           f"{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(*, rounds=2, epochs=4, mc_rounds=5, log=print):
    """{'settings': {setting: [figures per round]}, 'machine', 'precision'}, settings taking turns."""
    results = {setting: [] for setting in SETTINGS}
    for index in range(rounds):
        for setting in SETTINGS:
            log(f"round {index + 1}/{rounds}: TF_CPU_ALLOCATOR_USE_BFC={setting} ...")
            results[setting].append(child(setting, epochs=epochs, mc_rounds=mc_rounds))
    first = results[SETTINGS[0]][0]
    return {"settings": results, "machine": first["machine"], "precision": first["precision"],
            "rounds": rounds, "epochs": epochs}


def medians(result):
    """{setting: {figure: median over the rounds}} (the figures the children measured)."""
    return {setting: {name: common.percentile([r[name] for r in runs], 50) for name in FIGURES
                      if name in runs[0]}
            for setting, runs in result["settings"].items()}


def report(result):
    med = medians(result)
    default, bfc = (med[s] for s in SETTINGS)
    rows = [[name, f"{default[name]:.2f}", f"{bfc[name]:.2f}", f"{bfc[name] / default[name]:.2f}x"]
            for name in FIGURES if name in default]
    return "\n".join([
        f"host allocator: keras_mnist_cnn, trainer defaults ({result['precision']}), "
        f"{result['epochs']} epochs{'; MC dropout T=20, batch 256' if 'MC / deterministic' in default else ''}; "
        f"median of {result['rounds']} rounds, the settings taking turns",
        f"machine: {result['machine']}",
        "",
        common.table(["figure", "default allocator", "BFC (the entry points')", "BFC / default"], rows),
    ])


FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_integer("rounds", 2, "Child processes per setting, the settings taking turns.", lower_bound=1)
    flags.DEFINE_integer("epochs", 4, "Training epochs per child (the first is not timed).", lower_bound=2)
    flags.DEFINE_integer("mc_rounds", 5, "Timed MC calls per method per child; 0: training only.",
                         lower_bound=0)


def main(argv):
    del argv
    print(report(run(rounds=FLAGS.rounds, epochs=FLAGS.epochs, mc_rounds=FLAGS.mc_rounds)))
    return 0


if __name__ == "__main__":
    define_flags()  # here, not at import: tests import several benchmarks at once
    app.run(main, flags_parser=flags_lib.parse_or_exit)

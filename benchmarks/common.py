"""What the benchmark scripts share: the machine line, data, timing and tables.

Timing figures from a shared 2-core machine drift with whatever else runs;
every script therefore measures the things it compares in one process (or
in child processes it alternates), taking turns, and reports their ratio.
"""
import time

import numpy as np
from absl import app

from dropzoo import errors
from dropzoo import idx
from dropzoo import performance
from dropzoo import sources

# As train.py: TensorFlow's INFO lines (the SavedModel and TFLite writers') bury the tables. After absl's start,
# which sets INFO where --verbosity is not given.
app.call_after_init(errors.plain_logs)


def machine():
    """'<CPU model name> (<kind>), <n> cores[, oneDNN's ISA cap][, GPUs]': the model as lscpu names it, its kind
    (AVX2, AVX-512 BF16, AMX: one model name covers several) and the cores this process may use."""
    described = performance.describe_machine()
    text = f"{described['cpu']} ({described['cpu_kind']}), {described['cores']} cores"
    cap = performance.onednn_isa_cap()
    if cap:  # the CPU then runs oneDNN's kernels for the cap's ISA: a stand-in for a CPU of that kind
        text += f", oneDNN capped at {cap[1]} ({cap[0]})"
    gpus = performance.gpu_details()
    if gpus:
        text += ", GPU " + ", ".join(g.get("device_name", "?") for g in gpus)
    return text


def load_source(dataset, idx_dir=None):
    return sources.load_source(dataset, idx_dir=idx_dir)


def define_data_flags():
    """--dataset and --idx_dir, as every benchmark takes them."""
    from absl import flags

    flags.DEFINE_string("dataset", "mnist_sample", "mnist_sample (offline) or a tfds name; beside --idx_dir, the "
                        "dataset its files are (mnist, fashion_mnist), if given.")
    flags.DEFINE_string("idx_dir", None, "Directory of MNIST-format IDX .gz files (instead of --dataset).")


def source_from_flags():
    """The sources.Source --dataset and --idx_dir name (data that cannot be loaded: one error line, exit 2)."""
    from absl import flags

    from dropzoo import errors

    # The default (mnist_sample) names no IDX files: beside --idx_dir, only a --dataset given names its files.
    given = flags.FLAGS["dataset"].present or not flags.FLAGS.idx_dir
    with errors.one_line():
        if flags.FLAGS["dataset"].present and flags.FLAGS.idx_dir:  # --dataset=mnist too: given, it names the files
            idx.check_named(flags.FLAGS.dataset, flags.FLAGS.idx_dir)
        return load_source(flags.FLAGS.dataset if given else sources.DEFAULT_DATASET, flags.FLAGS.idx_dir)


def arrays(ds):
    """(images, labels) NumPy arrays of an unbatched (image, label) dataset."""
    images, labels = [], []
    for x, y in ds.batch(4096).as_numpy_iterator():
        images.append(x)
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels)


def steady_rates(epoch_seconds, examples_per_epoch):
    """Examples/s of every epoch but the first (it pays for tracing)."""
    timed = epoch_seconds[1:] or epoch_seconds
    return [examples_per_epoch / s for s in timed if s > 0]


# Below this many timed epochs a way, its fastest quarter is one or two epochs, and one epoch sets a ratio.
FEW_EPOCHS = 8


def few_epochs_note(timed, unit="epoch"):
    """A NOTE line where each way was timed over fewer than FEW_EPOCHS epochs (or rounds: `unit`), a quick run;
    else None."""
    if timed >= FEW_EPOCHS:
        return None
    return (f"NOTE: {timed} timed {unit}(s) a way: the fastest quarter is {max(1, timed // 4)} {unit}(s), so one "
            f"{unit} at another speed sets each ratio; quote a run of the defaults")


def fast_phase_rate(rates):
    """The median of the fastest quarter of per-epoch `rates` (at least one).

    On the shared VMs this project is developed on, an epoch takes either t
    or about 2t, with any setting (as if the host lent the VM both cores or
    only one); a mean over epochs is then a matter of which setting drew
    more slow epochs. The fastest quarter measures each setting at the
    machine's full speed, the same way for all.
    """
    fastest = sorted(rates, reverse=True)[:max(1, len(rates) // 4)]
    return float(np.median(fastest))


def time_in_turns(calls, args, rounds, warmup=2):
    """{name: [seconds per call of fn(*args)]}, the calls taking turns each round after `warmup` calls each."""
    for fn in calls.values():
        for _ in range(warmup):  # the first calls trace and build functions
            fn(*args)
    seconds = {name: [] for name in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            start = time.perf_counter()
            fn(*args)
            seconds[name].append(time.perf_counter() - start)
    return seconds


def percentile(values, q):
    return float(np.percentile(np.asarray(values), q))


def verdict(ok):
    return "PASS" if ok else "FAIL"


def table(headers, rows):
    """Rows of cells as an aligned text table (first column left, others right)."""
    cells = [list(map(str, headers))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(row, widths)))

    return "\n".join([line(cells[0]), line(["-" * w for w in widths])] + [line(r) for r in cells[1:]])

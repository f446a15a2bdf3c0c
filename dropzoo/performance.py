"""Fast-by-default choices: precision policy, XLA, steps per tf.function call.

The trainer asks these before it builds a model, and records the answers
(and why) in metrics.json:

* `choose_precision("auto")` -> `mixed_bfloat16` where the hardware runs
  bfloat16 fast: CPUs with AVX-512 BF16 or AMX (the /proc/cpuinfo flags
  `avx512_bf16`, `amx_bf16`; unless oneDNN is off or its ISA cap,
  `ONEDNN_MAX_CPU_ISA`, is below AVX512_CORE_BF16) and GPUs of compute
  capability >= 8.0 (Ampere on); `mixed_float16` on GPUs of compute capability 7.x (Volta/Turing
  tensor cores have float16 but no bfloat16; Keras adds loss scaling);
  `float32` everywhere else.
* `choose_jit_compile("auto")` -> XLA on a GPU; off on CPU (XLA made these
  models several times slower on CPU) and off under a tf.distribute strategy (Keras'
  own "auto" rule).
* `choose_steps_per_execution(0, ...)` -> the largest divisor of the epoch's
  steps up to 32: fewer Python round trips and per-batch callbacks.
* `compile_pooling_gradient()`: max pooling's training gradient as an XLA
  kernel (models/pooling.py), always: same result, a fraction of the time;
  `compile_activation_gradient()` likewise for ReLU (models/activations.py).

The first two take the hardware facts as arguments (probed when omitted), so
tests check every branch without the hardware. `parse_profile_batches` checks
the `--profile_batches` value handed to keras.callbacks.TensorBoard.
"""
import functools
import os

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


# ------------------------------------------------------------ hardware facts


def _cpuinfo_field(name, path):
    """The value of /proc/cpuinfo's first `name` line, or None (not Linux, or no such line)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


@functools.lru_cache(maxsize=1)
def cpu_flags(path="/proc/cpuinfo"):
    """The CPU feature flags the kernel reports (empty where unknown: auto then stays float32)."""
    return frozenset((_cpuinfo_field("flags", path) or "").split())


# The kernels TensorFlow's CPU ops pick, and so the float rounding of a run, follow these flags:
# float32 weights repeat bit for bit on one kind of CPU, not across kinds.
CPU_KINDS = (("amx_bf16", "AMX"), ("avx512_bf16", "AVX-512 BF16"), ("avx512f", "AVX-512"), ("avx2", "AVX2"))


@functools.lru_cache(maxsize=1)
def cpu_model(path="/proc/cpuinfo"):
    """The CPU's model name as lscpu shows it ('unknown CPU' where unknown)."""
    return _cpuinfo_field("model name", path) or "unknown CPU"


def cpu_kind(flags=None):
    """'AMX', 'AVX-512 BF16', 'AVX-512', 'AVX2' (the most the flags have), or 'other'."""
    flags = cpu_flags() if flags is None else flags
    return next((kind for flag, kind in CPU_KINDS if flag in flags), "other")


def describe_machine(env=None):
    """What a run's record says of the machine: CPU model, kind and cores, and any oneDNN ISA cap."""
    # The cores this process may use (taskset, a container's CPU set), not the machine's: oneDNN splits its sums
    # by them, so they decide the rounding too.
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    described = {"cpu": cpu_model(), "cpu_kind": cpu_kind(), "cores": usable}
    cap = onednn_isa_cap(env)
    if cap:  # oneDNN's kernels, and so the rounding, are then the cap's, not the CPU kind's
        described["onednn_max_cpu_isa"] = cap[1]
    return described


# oneDNN's ISA caps (https://uxlfoundation.github.io/oneDNN/dev_guide_cpu_dispatcher_control.html) below
# AVX512_CORE_BF16 (case does not matter; oneDNN ignores values it does not know). Under the first group,
# on a CPU with bfloat16, TensorFlow still hands its bfloat16 convolutions to oneDNN, which cannot create
# them (TF 2.21); under the second, which have no bfloat16 instructions, oneDNN emulates them (slower than
# float32 in a look at conv2 on an AMX Xeon).
ONEDNN_CAPS_WITHOUT_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2")
ONEDNN_CAPS_EMULATING_BF16 = ("AVX512_CORE", "AVX512_CORE_VNNI")
ONEDNN_CAP_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")  # oneDNN reads the first one set


def onednn_state(env=None):
    """'off' where TF_ENABLE_ONEDNN_OPTS (0 or false, as TensorFlow reads it) keeps TensorFlow from oneDNN's CPU
    kernels, else 'on'."""
    value = (os.environ if env is None else env).get("TF_ENABLE_ONEDNN_OPTS", "")
    return "off" if value.strip().lower() in ("0", "false") else "on"


def onednn_isa_cap(env=None):
    """(variable, value) of the oneDNN ISA cap the environment sets, or None."""
    env = os.environ if env is None else env
    for variable in ONEDNN_CAP_VARIABLES:
        if env.get(variable):
            return variable, env[variable]
    return None


def bf16_cap_fix(env=None):
    """How to give oneDNN its bfloat16 kernels back under the environment's ISA cap (one clause)."""
    variable, _ = onednn_isa_cap(env)
    return f"unset {variable} (or set it to AVX512_CORE_BF16 or above)"


def _bf16_cap_problem(env):
    """'without' or 'emulating' where the environment's oneDNN cap lacks bfloat16 instructions, else None."""
    cap = onednn_isa_cap(env)
    value = cap[1].upper() if cap else None
    if value in ONEDNN_CAPS_WITHOUT_BF16:
        return "without"
    if value in ONEDNN_CAPS_EMULATING_BF16:
        return "emulating"
    return None


def gpu_details():
    """One dict per visible GPU, as tf.config.experimental.get_device_details gives."""
    import tensorflow as tf  # late: choosing from injected facts needs no TF

    return [tf.config.experimental.get_device_details(gpu)
            for gpu in tf.config.list_physical_devices("GPU")]


def in_distribution_strategy():
    """Whether the caller is inside a (non-default) tf.distribute strategy scope."""
    import tensorflow as tf

    return tf.distribute.has_strategy()


# ------------------------------------------------------------------ choices


def choose_precision(requested, *, cpu=None, gpus=None, env=None):
    """(policy, reason) for `requested`; "auto" decides from the hardware.

    `cpu` is a set of /proc/cpuinfo flags, `gpus` a list of device-detail
    dicts ({"compute_capability": (8, 0), "device_name": ...}); both are
    probed when None. With several GPUs the weakest one decides.
    """
    env = os.environ if env is None else env
    if requested != "auto":
        check_precision(requested, cpu=cpu, gpus=gpus, env=env)
        return requested, "requested explicitly"
    gpus = gpu_details() if gpus is None else gpus
    if gpus:
        return _gpu_precision(gpus)
    cpu = cpu_flags() if cpu is None else cpu
    found = [flag for flag in BF16_CPU_FLAGS if flag in cpu]
    if not found:
        return "float32", "CPU has no bfloat16 instructions (avx512_bf16/amx_bf16)"
    if onednn_state(env) == "off":
        # Without oneDNN, TensorFlow's CPU kernels emulate bfloat16: slower than float32.
        return "float32", f"CPU has {found[0]} but TF_ENABLE_ONEDNN_OPTS=0 turns oneDNN off"
    if _bf16_cap_problem(env):
        variable, value = onednn_isa_cap(env)
        return "float32", f"CPU has {found[0]} but {variable}={value} keeps oneDNN from bfloat16 instructions"
    return "mixed_bfloat16", f"CPU has {found[0]}"


def check_precision(requested, *, cpu=None, gpus=None, env=None):
    """ValueError where `requested` cannot run here: bfloat16 on a CPU whose oneDNN cap has no kernels for it.

    Probes nothing (no TensorFlow) unless such a cap is set on a CPU with bfloat16.
    """
    env = os.environ if env is None else env
    if "bfloat16" not in requested or _bf16_cap_problem(env) != "without" or onednn_state(env) == "off":
        return
    cpu = cpu_flags() if cpu is None else cpu
    if not any(flag in cpu for flag in BF16_CPU_FLAGS) or (gpu_details() if gpus is None else gpus):
        return  # TensorFlow emulates bfloat16 itself there, or a GPU computes
    variable, value = onednn_isa_cap(env)
    raise ValueError(f"--precision={requested} cannot run with {variable}={value}: TensorFlow hands bfloat16 "
                     f"convolutions to oneDNN, which that cap leaves without bfloat16 kernels; {bf16_cap_fix(env)}, "
                     "or use --precision=float32")


def _gpu_precision(gpus):
    capabilities = [tuple(g.get("compute_capability") or (0, 0)) for g in gpus]
    weakest = min(capabilities)
    name = gpus[capabilities.index(weakest)].get("device_name", "GPU")
    where = f"{name} (compute capability {weakest[0]}.{weakest[1]})"
    if weakest >= (8, 0):
        return "mixed_bfloat16", f"GPU {where} runs bfloat16 natively"
    if weakest >= (7, 0):
        return "mixed_float16", f"GPU {where} has float16 tensor cores but no bfloat16"
    return "float32", f"GPU {where} has no tensor cores"


def choose_jit_compile(requested, *, gpus=None, distributed=None):
    """(enabled, reason) for `requested` ("auto", "true" or "false")."""
    if requested != "auto":
        return requested == "true", "requested explicitly"
    distributed = in_distribution_strategy() if distributed is None else distributed
    if distributed:
        return False, "under a tf.distribute strategy (as Keras' own auto)"
    gpus = gpu_details() if gpus is None else gpus
    if gpus:
        return True, "GPU present"
    return False, "no GPU; XLA on CPU trains these models several times slower: train_throughput.py --ablation"


# Auto steps_per_execution stays at or below this. Measured in the trainer on
# 2 CPU cores, 4 and 28 steps per call were alike, ~1.4x the examples/s of 1
# (the per-batch work of its callbacks); NaN checks and progress updates
# happen once per call, so there is no point in much longer calls.
MAX_AUTO_STEPS_PER_EXECUTION = 32


def choose_steps_per_execution(requested, steps_per_epoch, train_steps=None):
    """(steps per tf.function call, reason); `requested` 0 means auto.

    Keras runs whole calls: one that ran past the end of a Keras epoch would
    consume batches of the step-indexed stream that belong to the next epoch
    (breaking exact resume), and StopAtStep could only stop after a whole
    call. So the value must divide the steps per epoch and --train_steps;
    auto takes the largest such divisor up to MAX_AUTO_STEPS_PER_EXECUTION.
    """
    lengths = [steps_per_epoch] + ([train_steps] if train_steps else [])
    if requested:
        if any(n % requested for n in lengths):
            raise ValueError(
                f"--steps_per_execution={requested} does not divide the {steps_per_epoch} steps per epoch"
                f"{f' and --train_steps={train_steps}' if train_steps else ''}; use one of "
                f"{', '.join(map(str, _divisors(lengths, 64)))}, or 0 (auto)")
        return requested, "requested explicitly"
    best = max(_divisors(lengths, MAX_AUTO_STEPS_PER_EXECUTION))
    return best, (f"largest divisor of {' and '.join(map(str, sorted(set(lengths))))} steps "
                  f"up to {MAX_AUTO_STEPS_PER_EXECUTION}")


def _divisors(lengths, limit):
    """Common divisors of every length up to `limit`, ascending."""
    return [d for d in range(1, min(min(lengths), limit) + 1) if all(n % d == 0 for n in lengths)]


def compile_dropout_masks():
    """Has the zoo's Bernoulli dropout apply its masks through XLA (models/masks.py).

    The bit fields, the compare, the scale and the casts fuse into one pass;
    the random words themselves come from TensorFlow's own kernel (XLA's
    random number generation on CPU is far slower). The portable masks the
    exports trace look their table up with gather_table_rows.
    """
    from models import masks

    masks.set_mask_compiler(xla_compiler())
    masks.set_row_gather(gather_table_rows)


def gather_table_rows(table, indices):
    """`tf.gather(table, indices)` for the portable masks' table, through GatherNd.

    TensorFlow's GatherV2 copies each row with a memcpy call and two
    prefetches; GatherNd copies a slice inline, and a row of one element
    (a 16-byte row as one complex128) in a single move. Both skip
    keras.ops.take's pass that maps negative indices (16-bit words never
    are). The rows are the same bits either way (tests/test_masks.py);
    `python benchmarks/mc_dropout.py --parts` times the masks.
    """
    import tensorflow as tf

    if table.dtype == tf.int64 and table.shape[-1] == 2:  # 16 bytes a row: bf16 at 2 bits a unit
        return tf.bitcast(tf.gather_nd(tf.bitcast(table, tf.complex128), indices[..., None]), tf.int64)
    return tf.gather_nd(table, indices[..., None])


def compile_pooling_gradient():
    """Has the zoo's MaxPooling2D layers route their training gradient through XLA.

    models/pooling.py: MaxPoolGrad's result, bitwise, in ~2.4 ms instead of
    ~17 for keras_mnist_cnn's pool1 (batch 128, AVX2, 2 cores); about 7% of
    a training step here.
    """
    from models import pooling

    pooling.set_routing_compiler(xla_compiler())


def compile_activation_gradient():
    """Has the zoo's ReLU layers compute their training gradient through XLA.

    models/activations.py: ReluGrad's result, bitwise, as one vectorized
    pass; Eigen's bfloat16 ReluGrad took 3.8 ms of a 19.5 ms keras_mnist_cnn
    step on a 2-core Intel Xeon with AMX.
    """
    from models import activations

    activations.set_gradient_compiler(xla_compiler())


@functools.lru_cache(maxsize=1)
def xla_compiler():
    """fn -> fn compiled with XLA; one object, so that naming it again keeps what is already compiled."""
    import tensorflow as tf

    return functools.partial(tf.function, jit_compile=True)


def parse_profile_batches(value):
    """'' -> 0 (off), 'N' -> N, 'A,B' -> (A, B); ValueError for anything else."""
    text = "" if value is None else str(value).strip()
    if not text:
        return 0
    try:
        numbers = tuple(int(part) for part in text.split(","))
    except ValueError:
        numbers = ()
    if len(numbers) not in (1, 2) or min(numbers) < 1 or numbers[0] > numbers[-1]:
        raise ValueError(f"--profile_batches must be 'N' or 'START,STOP' with 1 <= START <= STOP "
                         f"(e.g. 10,20), got {value!r}")
    return numbers[0] if len(numbers) == 1 else numbers


def check_profile_batches(value, *, epochs, steps_per_epoch, steps_per_call, train_steps=0, initial_epoch=0):
    """ValueError where `--profile_batches` (parsed) reaches past the training calls the run makes in this
    session (from `initial_epoch` to `epochs`, stopped at `train_steps`): Keras' profiler would wait for a call
    that never comes, and write nothing."""
    steps = (epochs - initial_epoch) * steps_per_epoch
    if train_steps:
        steps = min(steps, train_steps - initial_epoch * steps_per_epoch)
    calls = -(-steps // steps_per_call)
    stop = value if isinstance(value, int) else value[-1]
    if stop > calls:
        raise ValueError(f"--profile_batches asks for training call {stop}, but this run makes {calls:,} "
                         f"(calls of --steps_per_execution steps, this session); profile calls up to {calls:,}")


# ---------------------------------------------------------------- reporting


def describe(config, model, distributed=False):
    """The metrics.json entries: what `config` asked for, what `model` got, and why.

    `distributed`: whether the model was built under a tf.distribute strategy
    (other than the default one).
    """
    _, precision_reason = choose_precision(config.precision)
    wanted, jit_reason = choose_jit_compile(config.jit_compile, distributed=distributed)
    if wanted and not model.jit_compile:
        jit_reason += "; Keras turned it off (a layer does not support XLA)"
    return {
        "precision": {"requested": config.precision, "policy": model.dtype_policy.name,
                      "reason": precision_reason},
        "jit_compile": {"requested": config.jit_compile, "enabled": bool(model.jit_compile),
                        "reason": jit_reason},
        "steps_per_execution": {"requested": config.steps_per_execution,
                                "used": int(model.steps_per_execution)},
    }


def summary_line(described, strategy=None):
    """One log line for `describe`'s result, and the replicas of `strategy` (strategies.describe's) where several."""
    precision, jit = described["precision"], described["jit_compile"]
    steps = described["steps_per_execution"]
    replicas = (strategy or {}).get("num_replicas", 1)
    return (f"precision: {precision['policy']} ({precision['requested']}: {precision['reason']}); "
            f"XLA jit_compile: {'on' if jit['enabled'] else 'off'} ({jit['requested']}: {jit['reason']}); "
            f"steps_per_execution: {steps['used']}{' (auto)' if not steps['requested'] else ''}"
            + (f"; strategy: {strategy['name']}, {replicas} replicas" if replicas > 1 else ""))

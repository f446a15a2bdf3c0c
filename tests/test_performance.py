"""Fast-by-default: auto precision / XLA choices, what metrics.json records, bad flags, benchmarks.

The hardware is injected (CPU flags, GPU device details), so every branch is
checked on any machine; GPU behaviour is only checked this way. The benchmark
functions run with tiny settings and are checked for their keys, never for
speed: timing assertions would fail on a busy machine.
"""
import json
import os
import shutil

import numpy as np
import pytest
from conftest import tiny_config
from conftest import tiny_source

import models
from benchmarks import allocator
from benchmarks import common
from benchmarks import input_pipeline
from benchmarks import mc_dropout
from benchmarks import op_rates
from benchmarks import serving
from benchmarks import step_parts
from benchmarks import step_profile
from benchmarks import train_throughput
from dropzoo import config as config_lib
from dropzoo import performance
from dropzoo import trainer
from dropzoo import workdir as workdir_lib
from models import flops


def gpu(major, minor, name="Test GPU"):
    return {"compute_capability": (major, minor), "device_name": name}


# ------------------------------------------------------------ auto choices


@pytest.mark.parametrize("cpu,policy", [
    ({"avx512f", "avx512_bf16"}, "mixed_bfloat16"),   # Zen 4/5, Cooper Lake
    ({"avx512f", "amx_bf16", "amx_tile"}, "mixed_bfloat16"),  # Sapphire Rapids
    ({"avx2", "fma"}, "float32"),
    (set(), "float32"),                                # flags unknown (not Linux)
])
def test_auto_precision_on_cpu(cpu, policy):
    chosen, reason = performance.choose_precision("auto", cpu=cpu, gpus=[], env={})
    assert chosen == policy and reason


def test_auto_precision_keeps_float32_when_onednn_is_off():
    chosen, reason = performance.choose_precision(
        "auto", cpu={"avx512_bf16"}, gpus=[], env={"TF_ENABLE_ONEDNN_OPTS": "0"})
    assert chosen == "float32" and "TF_ENABLE_ONEDNN_OPTS" in reason


@pytest.mark.parametrize("gpus,policy", [
    ([gpu(8, 0)], "mixed_bfloat16"),                  # A100
    ([gpu(9, 0)], "mixed_bfloat16"),                  # H100
    ([gpu(7, 0)], "mixed_float16"),                   # V100: float16 tensor cores, no bf16
    ([gpu(7, 5)], "mixed_float16"),                   # T4
    ([gpu(6, 1)], "float32"),                         # P4: no tensor cores
    ([gpu(9, 0), gpu(7, 0)], "mixed_float16"),        # the weakest GPU decides
])
def test_auto_precision_on_gpu_ignores_the_cpu(gpus, policy):
    chosen, reason = performance.choose_precision("auto", cpu={"avx512_bf16"}, gpus=gpus, env={})
    assert chosen == policy and "compute capability" in reason


def test_explicit_precision_is_kept():
    assert performance.choose_precision("float32", cpu={"avx512_bf16"}, gpus=[gpu(9, 0)])[0] == "float32"


@pytest.mark.parametrize("requested,gpus,distributed,enabled", [
    ("auto", [gpu(8, 0)], False, True),
    ("auto", [gpu(7, 0)], False, True),
    ("auto", [], False, False),                       # XLA on CPU was ~6x slower
    ("auto", [gpu(8, 0)], True, False),               # Keras' own rule under tf.distribute
    ("true", [], False, True),
    ("false", [gpu(8, 0)], False, False),
])
def test_jit_compile_choice(requested, gpus, distributed, enabled):
    chosen, reason = performance.choose_jit_compile(requested, gpus=gpus, distributed=distributed)
    assert chosen is enabled and reason


def test_outputs_stay_float32_under_mixed_precision():
    import keras

    import models

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = models.build("keras_mnist_cnn", "canonical", seed=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("conv2").compute_dtype == "bfloat16"
    # The output Dense and softmax compute in float32: stable loss, float32 probabilities.
    assert [layer.compute_dtype for layer in model.layers[-2:]] == ["float32", "float32"]
    assert model.outputs[0].dtype == "float32"


@pytest.mark.parametrize("flags,kind", [
    ({"avx2", "avx512f", "avx512_bf16", "amx_bf16"}, "AMX"),
    ({"avx2", "avx512f", "avx512_bf16"}, "AVX-512 BF16"),
    ({"avx2", "avx512f"}, "AVX-512"),
    ({"avx2", "fma"}, "AVX2"),
    (set(), "other"),
])
def test_cpu_kind_is_the_most_the_flags_have(flags, kind):
    assert performance.cpu_kind(frozenset(flags)) == kind


def test_cpu_model_reads_the_model_name(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text("processor\t: 0\nmodel name\t: Some CPU @ 2.0GHz\nflags\t: avx2\n")
    assert performance.cpu_model.__wrapped__(str(path)) == "Some CPU @ 2.0GHz"
    assert performance.cpu_model.__wrapped__(str(tmp_path / "missing")) == "unknown CPU"


def test_defaults_are_auto():
    config = config_lib.TrainConfig()
    assert (config.precision, config.jit_compile, config.steps_per_execution) == ("auto", "auto", 0)
    assert config.profile_batches == ""


# ------------------------------------------------------------ the trainer


def test_metrics_record_what_auto_resolved_to_and_config_keeps_auto(tmp_path, monkeypatch):
    monkeypatch.setattr(performance, "cpu_flags", lambda: frozenset({"avx2"}))
    monkeypatch.setattr(performance, "gpu_details", lambda: [])
    workdir = str(tmp_path)
    metrics = trainer.train_and_evaluate(tiny_config(epochs=2, profile_batches="2"), workdir,
                                         source=tiny_source(), verbose=0)
    assert metrics["precision"] == {"requested": "auto", "policy": "float32",
                                    "reason": "CPU has no bfloat16 instructions (avx512_bf16/amx_bf16)"}
    assert metrics["jit_compile"]["requested"] == "auto" and metrics["jit_compile"]["enabled"] is False
    with open(os.path.join(workdir, "config.json")) as f:
        saved = json.load(f)
    assert (saved["precision"], saved["jit_compile"]) == ("auto", "auto")
    # The record names the CPU kind its float rounding came from (flags faked above), and the cores it could use.
    usable = len(os.sched_getaffinity(0))
    assert metrics["machine"] == {"cpu": performance.cpu_model(), "cpu_kind": "AVX2", "cores": usable}
    traces = [f for _, _, files in os.walk(os.path.join(workdir, "tensorboard")) for f in files
              if f.endswith(".xplane.pb")]
    assert traces, "--profile_batches wrote no profiler trace"


def test_profile_batches_past_the_runs_calls_are_refused_before_training(tmp_path):
    # Keras' profiler waited for a call that never came: status 0 and no trace, without a word.
    with pytest.raises(ValueError, match=r"^--profile_batches asks for training call 1001, but this run makes \d+ "):
        trainer.train_and_evaluate(tiny_config(epochs=1, profile_batches="1000,1001"), str(tmp_path / "run"),
                                   source=tiny_source(), verbose=0)
    assert not (tmp_path / "run").exists()  # nothing left to block the corrected command


def test_bf16_cpu_trains_mixed_bfloat16_and_the_export_passes(tmp_path, monkeypatch):
    monkeypatch.setattr(performance, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    monkeypatch.setattr(performance, "gpu_details", lambda: [])
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    metrics = trainer.train_and_evaluate(tiny_config(epochs=1), str(tmp_path), source=tiny_source(), verbose=0)
    assert metrics["precision"]["policy"] == "mixed_bfloat16"
    assert metrics["export_check"]["passed"]


def _started(workdir):
    """Makes `workdir` look like a run with a checkpoint (what protects its settings)."""
    os.makedirs(os.path.join(workdir, "checkpoints"), exist_ok=True)
    open(os.path.join(workdir, "checkpoints", "epoch-0001.npz"), "wb").close()


def test_a_rerun_may_change_profiling_and_steps_per_execution_only(tmp_path):
    config = tiny_config(epochs=1)
    config_lib.validate(config)
    trainer.prepare_workdir(config, str(tmp_path))
    _started(str(tmp_path))
    # Neither changes what is computed (steps_per_execution: bitwise-equal losses).
    trainer.prepare_workdir(tiny_config(epochs=1, profile_batches="5", steps_per_execution=2),
                            str(tmp_path))
    with pytest.raises(trainer.RunError, match="--precision"):
        trainer.prepare_workdir(tiny_config(epochs=1, precision="mixed_float16"), str(tmp_path))


def test_epochs_beside_train_steps_are_not_a_setting_of_the_run(tmp_path):
    """--epochs=1 --train_steps=2 warned that --epochs is not used; rerun without it, the run was refused for
    --epochs (1 -> 12)."""
    workdir = str(tmp_path)
    trainer.prepare_workdir(tiny_config(epochs=1, train_steps=2), workdir)
    _started(workdir)
    trainer.prepare_workdir(tiny_config(epochs=12, train_steps=2), workdir)
    with pytest.raises(trainer.RunError, match=r"--train_steps \(2 -> unset\)"):
        trainer.prepare_workdir(tiny_config(epochs=1), workdir)  # without train_steps, --epochs is the schedule


def test_a_run_that_never_checkpointed_blocks_nothing(tmp_path):
    workdir = str(tmp_path)
    trainer.prepare_workdir(tiny_config(epochs=1, dataset="typo"), workdir)  # e.g. failed loading its data
    trainer.prepare_workdir(tiny_config(epochs=2), workdir)  # the corrected command takes over
    with open(os.path.join(workdir, "config.json")) as f:
        saved = json.load(f)
    assert saved["epochs"] == 2 and saved["dataset"] == "tiny"
    _started(workdir)
    with pytest.raises(trainer.RunError, match=r"--epochs \(2 -> 3\)"):
        trainer.prepare_workdir(tiny_config(epochs=3), workdir)


def test_a_run_that_never_checkpointed_leaves_no_events_and_keeps_what_is_not_its_own(tmp_path):
    """A first attempt killed (-9) before its first checkpoint left its events (its network's text) to the rerun's
    logdir, which TensorBoard showed as one run of two networks; its Ctrl-C removed the whole tensorboard/, a file
    of the user's in it too. Only events files go, and a linked folder's events (other runs') are not touched."""
    workdir, elsewhere = str(tmp_path / "run"), tmp_path / "other_runs"
    trainer.prepare_workdir(tiny_config(epochs=1), workdir)
    logdir = os.path.join(workdir, "tensorboard")
    for folder in ("", "train", "dropout_stats"):
        os.makedirs(os.path.join(logdir, folder), exist_ok=True)
        open(os.path.join(logdir, folder, "events.out.tfevents.1.killed"), "wb").close()
    profile = os.path.join(logdir, "train", "plugins", "profile", "2026_12_07_15_34_31")  # (--profile_batches)
    os.makedirs(profile)
    open(os.path.join(profile, "vm.xplane.pb"), "wb").close()
    open(os.path.join(logdir, "notes.txt"), "w").close()
    elsewhere.mkdir()
    (elsewhere / "events.out.tfevents.2.other").write_bytes(b"")
    os.symlink(elsewhere, os.path.join(logdir, "linked"))
    trainer.prepare_workdir(tiny_config(epochs=2), workdir)  # the rerun, other flags
    assert sorted(os.listdir(logdir)) == ["linked", "notes.txt"]
    assert os.listdir(elsewhere) == ["events.out.tfevents.2.other"]
    open(os.path.join(logdir, "events.out.tfevents.3.stopped"), "wb").close()
    workdir_lib.remove_unstarted(workdir, str(tmp_path))  # stopped (Ctrl-C, a user error) before a checkpoint
    assert sorted(os.listdir(logdir)) == ["linked", "notes.txt"] and not os.path.exists(
        os.path.join(workdir, "config.json"))
    shutil.rmtree(workdir)
    os.makedirs(workdir)
    os.symlink(elsewhere, logdir)  # the whole logdir linked to a shared one
    workdir_lib.remove_unstarted(workdir, str(tmp_path))
    assert os.listdir(elsewhere) == ["events.out.tfevents.2.other"]


def test_jit_compile_auto_resumes_under_the_setting_it_resolves_to_here(tmp_path, monkeypatch):
    """auto is off on CPU: --jit_compile=false resumes (and reports) that run; true is another run, and on a GPU
    auto is on, so false is refused there."""
    workdir = str(tmp_path)
    monkeypatch.setattr(performance, "gpu_details", lambda: [])
    trainer.prepare_workdir(tiny_config(epochs=1, precision="float32"), workdir)
    _started(workdir)
    trainer.prepare_workdir(tiny_config(epochs=1, precision="float32", jit_compile="false"), workdir)
    with pytest.raises(trainer.RunError, match=r"--jit_compile \('auto' -> 'true'\)"):
        trainer.prepare_workdir(tiny_config(epochs=1, precision="float32", jit_compile="true"), workdir)
    monkeypatch.setattr(performance, "gpu_details", lambda: [{"name": "a GPU"}])
    with pytest.raises(trainer.RunError, match=r"--jit_compile \('auto' -> 'false'\)"):
        trainer.prepare_workdir(tiny_config(epochs=1, precision="float32", jit_compile="false"), workdir)


def test_the_resolved_precision_and_sites_are_recorded_and_checked_on_resume(tmp_path, monkeypatch):
    workdir = str(tmp_path)
    monkeypatch.setattr(performance, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    monkeypatch.setattr(performance, "gpu_details", lambda: [])
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    trainer.prepare_workdir(tiny_config(epochs=1), workdir)  # auto: mixed_bfloat16 here
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["resolved"] == {"precision": "mixed_bfloat16", "sites": "dense1.post:0.5",
                                            "mask_generator": "kbit-fields-v1", "strategy": "default",
                                            "onednn": "on"}
    _started(workdir)
    # Pinning the policy auto chose is the same run; another machine's auto is not.
    trainer.prepare_workdir(tiny_config(epochs=1, precision="mixed_bfloat16"), workdir)
    monkeypatch.setattr(performance, "cpu_flags", lambda: frozenset())
    with pytest.raises(trainer.RunError) as info:
        trainer.prepare_workdir(tiny_config(epochs=1), workdir)
    assert ("trained with the precision policy 'mixed_bfloat16', but this command resolves to 'float32'; "
            "pass --precision=mixed_bfloat16 to resume it here") in str(info.value)
    trainer.prepare_workdir(tiny_config(epochs=1, precision="mixed_bfloat16"), workdir)
    # Finished, it is reported as trained: nothing trains, and its records name its precision.
    finished = {"test_accuracy": 0.5, "test_loss": 1.0, "export_check": {"passed": True},
                "data": {"source": "tiny", "origin": {"dataset": "tiny"}}}
    with open(os.path.join(workdir, "metrics.json"), "w") as f:
        json.dump(finished, f)
    assert trainer.prepare_workdir(tiny_config(epochs=1), workdir) == finished
    os.remove(os.path.join(workdir, "metrics.json"))
    # Where a oneDNN cap makes auto pick float32, the pin would be refused too: the fix names the cap.
    monkeypatch.setattr(performance, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    with pytest.raises(trainer.RunError) as info:
        trainer.prepare_workdir(tiny_config(epochs=1), workdir)
    assert ("resolves to 'float32'; ONEDNN_MAX_CPU_ISA=AVX2 leaves oneDNN without bfloat16 kernels, so unset "
            "ONEDNN_MAX_CPU_ISA (or set it to AVX512_CORE_BF16 or above) and pass --precision=mixed_bfloat16 to "
            "resume it here") in str(info.value)
    # With oneDNN off, the pin would resume on TensorFlow's own kernels: not the run's rounding.
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    with pytest.raises(trainer.RunError) as info:
        trainer.prepare_workdir(tiny_config(epochs=1), workdir)
    assert "resolves to 'float32'; TF_ENABLE_ONEDNN_OPTS turns off oneDNN, whose bfloat16 kernels it trained " \
           "with: unset it to resume it here" in str(info.value)
    assert performance.onednn_state({"TF_ENABLE_ONEDNN_OPTS": "False"}) == "off"  # as TensorFlow reads it
    assert performance.onednn_state({"TF_ENABLE_ONEDNN_OPTS": "1"}) == performance.onednn_state({}) == "on"
    # Pinned, it resumed on TensorFlow's own kernels without a word: the run records oneDNN on.
    with pytest.raises(trainer.RunError) as info:
        trainer.prepare_workdir(tiny_config(epochs=1, precision="mixed_bfloat16"), workdir)
    assert "trained with oneDNN 'on', but this command resolves to 'off'; set TF_ENABLE_ONEDNN_OPTS as when it " \
           "began" in str(info.value)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    # A placement whose sites changed meaning since the run started is refused too.
    monkeypatch.setattr(trainer, "resolve", lambda config: {"precision": "mixed_bfloat16",
                                                             "sites": "dense1.pre:0.5"})
    with pytest.raises(trainer.RunError, match="dropout sites 'dense1.post:0.5', but this command resolves to "
                                               "'dense1.pre:0.5'; its placement has been redefined since"):
        trainer.prepare_workdir(tiny_config(epochs=1, precision="mixed_bfloat16"), workdir)


def test_a_run_is_not_resumed_across_mask_generators(tmp_path):
    workdir = str(tmp_path)
    config = tiny_config(epochs=1, precision="float32")
    trainer.prepare_workdir(config, workdir)
    _started(workdir)
    path = os.path.join(workdir, "config.json")
    with open(path) as f:
        saved = json.load(f)
    # A run recorded before the generator was drew Keras' own masks.
    del saved["resolved"]["mask_generator"]
    with open(path, "w") as f:
        json.dump(saved, f)
    with pytest.raises(trainer.RunError) as info:
        trainer.prepare_workdir(config, workdir)
    message = str(info.value)
    assert "\n" not in message
    assert ("trained with the dropout mask generator 'keras-stateless-dropout', but this command resolves to "
            "'kbit-fields-v1'; use another --workdir, or --overwrite") in message


@pytest.mark.parametrize("requested,steps,train_steps,used", [
    (0, 28, None, 28),        # mnist_sample: one call per epoch
    (0, 422, None, 2),        # full MNIST, 10% held out: 422 = 2 x 211
    (0, 1000, 2500, 25),      # must also divide --train_steps so StopAtStep stops exactly
    (0, 7, 7, 7),
    (0, 211, None, 1),        # a prime: no larger divisor
    (4, 28, None, 4),
])
def test_auto_steps_per_execution_divides_the_epoch(requested, steps, train_steps, used):
    assert performance.choose_steps_per_execution(requested, steps, train_steps)[0] == used


@pytest.mark.parametrize("requested,steps,train_steps", [(5, 28, None), (8, 1000, 2500)])
def test_steps_per_execution_that_does_not_divide_is_refused(requested, steps, train_steps):
    with pytest.raises(ValueError, match=rf"--steps_per_execution={requested} does not divide") as info:
        performance.choose_steps_per_execution(requested, steps, train_steps)
    assert "\n" not in str(info.value)


def test_metrics_record_steps_per_execution(tmp_path):
    # tiny_source: 86 training examples in batches of 16 -> 6 steps per epoch.
    metrics = trainer.train_and_evaluate(tiny_config(epochs=1, steps_per_execution=3), str(tmp_path / "a"),
                                         source=tiny_source(), verbose=0)
    assert metrics["steps_per_execution"] == {"requested": 3, "used": 3}
    with pytest.raises(ValueError, match="--steps_per_execution=4 does not divide the 6 steps"):
        trainer.train_and_evaluate(tiny_config(epochs=1, steps_per_execution=4), str(tmp_path / "b"),
                                   source=tiny_source(), verbose=0)


# ------------------------------------------------------------ bad flag values


@pytest.mark.parametrize("value,parsed", [("", 0), ("7", 7), ("10,20", (10, 20)), (" 3,3 ", (3, 3))])
def test_profile_batches_parse(value, parsed):
    assert performance.parse_profile_batches(value) == parsed


# ------------------------------------------------------------ benchmarks


def test_the_classic_example_is_keras_own_layers_with_the_zoos_initial_weights():
    # It was the zoo's build: after a trainer run, its dropout and ReLU ran the trainer's compiled masks and gradients.
    zoo = models.build(train_throughput.MODEL, "canonical", num_classes=10, input_shape=(28, 28, 1), seed=3)
    classic = train_throughput.keras_own(zoo)
    assert all(type(layer).__module__.startswith("keras.") for layer in classic.layers)
    assert [type(layer).__name__ for layer in classic.layers] == [
        "InputLayer", "Conv2D", "Activation", "Conv2D", "Activation", "MaxPooling2D", "Dropout", "Flatten", "Dense",
        "Activation", "Dropout", "Dense", "Activation"]
    assert [layer.rate for layer in classic.layers if hasattr(layer, "rate")] == [0.25, 0.5]
    images = np.random.default_rng(0).random((4, 28, 28, 1), np.float32)
    np.testing.assert_array_equal(classic(images).numpy(), zoo(images).numpy())


@pytest.mark.slow
def test_train_throughput_benchmark_returns_its_numbers():
    result = train_throughput.run(tiny_source(), epochs=1, batch_size=16, seeds=1, ablation=True,
                                  other_models=("tf_layers_cnn",), log=lambda *_: None)
    float32_defaults = performance.choose_precision("auto")[0] == "float32"
    # Where auto picks float32, a float32 run would repeat the defaults' and is not trained.
    assert (result["trainer_float32"] is None) == float32_defaults
    ways = ["classic", "trainer_defaults"] + ([] if float32_defaults else ["trainer_float32"])
    for figures in [result[way] for way in ways] + [result["other_models"]["tf_layers_cnn"]]:
        # One epoch, so that one is timed (a lone first epoch is kept): both figures are its rate.
        assert figures["num_epochs_timed"] == 1 and figures["examples_per_sec"] > 0
        assert figures["examples_per_sec"] == pytest.approx(figures["all_epochs_examples_per_sec"])
        assert 0 <= figures["test_accuracy"] <= 1
        reference = result["references"][f"{figures['model']}/{figures['precision']}"]
        efficiency = figures["efficiency"]
        assert efficiency["gflops"] == pytest.approx(
            figures["examples_per_sec"] * reference["training_flops"] / 1e9)
        assert efficiency["dominant"] == "conv2"
        assert efficiency["of_dominant"] == pytest.approx(
            efficiency["gflops"] / reference["layer_gflops"]["conv2"])
    assert result["other_models"]["tf_layers_cnn"]["model"] == "tf_layers_cnn"
    # Each ablation beside the defaults' seed 0, trained just before it (with one seed, the defaults' row is that run).
    assert [(run["steps_per_execution"], run["jit_compile"]) for run in result["ablations"].values()] == [
        (1, False), (result["trainer_defaults"]["steps_per_execution"], True)]
    assert result["efficiency"] == result["trainer_defaults"]["efficiency"]["of_dominant"]
    target = train_throughput.efficiency_target(result["trainer_defaults"]["precision"])
    assert result["efficiency_target"] == target and target in (0.45, 0.80)
    assert result["reference_valid"] == (result["trainer_defaults"]["efficiency"]["linear_share"] <= 1)
    assert result["pass_efficiency"] == (result["efficiency"] >= target if result["reference_valid"] else None)
    # keras_mnist_cnn's 71,565,312 (tests/test_flops.py) with 4 classes instead of 10 in the logits.
    assert result["training_flops_per_example"] == 71_565_312 - 3 * 2 * 128 * (10 - 4)
    text = train_throughput.report(result)
    assert "efficiency: keras_mnist_cnn, trainer defaults" in text
    assert "where a step of tf_layers_cnn goes" in text and "conv2 alone" in text
    assert "71.6 MFLOP per training example" in text  # keras_mnist_cnn, 4 classes: 71,562,240


def test_op_rates_time_each_linear_op_with_its_gradients():
    model = models.build("keras_mnist_cnn", input_shape=(12, 12, 1), num_classes=3, seed=0)
    references = op_rates.References(model, batch_size=2, precision="float32", calls=2,
                                     matmul_size=64)
    counted = flops.count(model)
    assert set(references.steps) == set(counted.by_layer) | {"matmul 64x64"}
    for name, (_, _, call_flops) in references.steps.items():
        assert call_flops == (2 * 64 ** 3 if name.startswith("matmul")
                              else 2 * counted.by_layer[name][1])
    # The first conv needs no input gradient; the others return output, weight and input gradients.
    output, gradients = references.steps["conv1"][0](*references.steps["conv1"][1])
    assert output.shape == (2, 10, 10, 32) and [g.shape for g in gradients] == [(3, 3, 1, 32)]
    output, gradients = references.steps["conv2"][0](*references.steps["conv2"][1])
    assert output.shape == (2, 8, 8, 64)
    assert [g.shape for g in gradients] == [(3, 3, 32, 64), (2, 10, 10, 32)]
    with pytest.raises(RuntimeError, match="sample"):
        references.rate("conv2")
    references.sample()
    references.sample()
    assert all(len(seconds) == 4 for seconds in references.seconds.values())
    seconds = references.layer_seconds()
    assert references.linear_seconds() == pytest.approx(sum(seconds.values()))
    assert references.layer_rates()["conv2"] == pytest.approx(
        references.steps["conv2"][2] / seconds["conv2"] / 1e9)
    assert references.matmul_rate() > 0


def test_op_rates_run_the_op_in_the_precision_asked():
    model = models.build("keras_mnist_cnn", input_shape=(12, 12, 1), num_classes=3, seed=0)
    step, (x, dy) = op_rates.linear_op_step(model.get_layer("conv2"), 2, "mixed_bfloat16",
                                            input_gradient=True)
    output, (kernel_gradient, input_gradient) = step(x, dy)
    assert x.dtype == output.dtype == input_gradient.dtype == "bfloat16"
    assert kernel_gradient.dtype == "float32"  # the variable's dtype


def test_fast_phase_rate_is_the_median_of_the_fastest_quarter():
    # Epochs at full speed (~100) and at half speed (~50), in any order:
    # the fastest quarter is 101 and 100.
    assert common.fast_phase_rate([50, 101, 49, 99, 51, 100, 50, 52]) == 100.5
    assert common.fast_phase_rate([3.0]) == 3.0
    assert common.fast_phase_rate([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]) == 11.0
    assert common.steady_rates([9.0, 2.0, 4.0], 100) == [50.0, 25.0]  # first epoch left out
    assert common.steady_rates([2.0], 100) == [50.0]  # unless it is the only one


def test_input_pipeline_benchmark_returns_its_numbers():
    result = input_pipeline.run(tiny_source(), epochs=1, batch_size=16, data_epochs=2, log=lambda *_: None)
    assert result["pipeline_examples_per_sec"] > 0 and result["training_examples_per_sec"] > 0
    assert result["ratio"] == pytest.approx(result["pipeline_examples_per_sec"]
                                            / result["training_examples_per_sec"])
    assert "pipeline / training" in input_pipeline.report(result)


def test_serving_benchmark_returns_its_numbers():
    result = serving.run(batch_size=8, latency_rounds=3, throughput_rounds=2, log=lambda *_: None)
    assert set(result["methods"]) == set(serving.METHODS)
    for figures in result["methods"].values():
        assert figures["p50_ms"] > 0 and figures["p99_ms"] >= figures["p50_ms"] and figures["examples_per_sec"] > 0
    assert {"throughput_ratio_vs_predict", "pass_throughput", "pass_latency"} <= set(result)
    assert "serving_default / model.predict" in serving.report(result)


def test_mc_dropout_benchmark_returns_its_numbers():
    result = mc_dropout.run(samples=3, batch_size=8, rounds=2, log=lambda *_: None)
    assert set(result["methods"]) == set(mc_dropout.METHODS)
    assert result["methods"]["serving_default"]["ratio"] == 1.0
    assert all(m["ms"] > 0 for m in result["methods"].values())
    assert result["mc_over_deterministic"] == result["methods"]["mc_dropout_draws_xla"]["ratio"]
    assert result["portable_over_deterministic"] == result["methods"]["mc_dropout_draws"]["ratio"]
    text = mc_dropout.report(result)
    assert "mc_dropout_draws_xla (T=3, what eval.py calls) / serving_default" in text
    assert "mc_dropout_draws (servable, plain ops) / serving_default" in text
    # The 5x target is set at T=20, batch 256: judged there only (it printed PASS or FAIL at any T and batch).
    assert result["passed"] is None and "(target <= 5x at T=20, batch 256)  not judged at this T and batch" in text


def test_allocator_benchmark_reports_medians_per_setting_and_their_ratio():
    def figures(train, serve, draws):
        return {"train examples/s": train, "serving_default ms": serve, "mc_dropout_draws ms": draws,
                "MC / deterministic": draws / serve}

    result = {"settings": {"false": [figures(1000, 100, 600), figures(900, 120, 700), figures(950, 110, 640)],
                           "true": [figures(1100, 100, 400), figures(1000, 90, 420), figures(1050, 95, 410)]},
              "machine": "a CPU, 2 cores", "precision": "float32", "rounds": 3, "epochs": 4}
    med = allocator.medians(result)
    assert med["false"]["mc_dropout_draws ms"] == 640 and med["true"]["train examples/s"] == 1050
    assert med["false"]["MC / deterministic"] == pytest.approx(700 / 120)  # the median ratio, not a ratio of medians
    text = allocator.report(result)
    assert "machine: a CPU, 2 cores" in text
    row = next(line for line in text.splitlines() if line.startswith("mc_dropout_draws ms"))
    assert row.split()[-1] == f"{410 / 640:.2f}x"


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
def test_step_parts_times_the_pooling_backward_folded_or_not_and_checks_their_bits(precision):
    result = step_parts.pool_backward(precision, rounds=2, shape=(2, 8, 8, 4))
    assert result["policy"] == precision
    assert set(result["ms"]) == {"routing, then ReLU's gradient", "ReLU's gradient folded into the routing"}
    assert all(ms > 0 for ms in result["ms"].values())
    assert "folded into the routing" in step_parts.report_pool_backward(result)


def test_step_profile_splits_overlapping_ops_evenly():
    Op = step_profile.Op
    ops = [Op(0, 10, "t0", "m/conv2/Conv2D:A"),     # alone for 0-4, with B for 4-10
           Op(4, 8, "t1", "m/pool1/MaxPool:B"),     # with A for 4-10, alone for 10-12
           Op(20, 5, "t0", "adadelta/Mul:C")]       # after a gap of 8
    shares, wall, idle = step_profile.attribute(ops, key=lambda op: op.name.rpartition(":")[2])
    assert shares == pytest.approx({"A": (4 + 3) / 1e12, "B": (3 + 2) / 1e12, "C": 5 / 1e12})
    assert wall == pytest.approx(25 / 1e12) and idle == pytest.approx(8 / 1e12)
    assert sum(shares.values()) + idle == pytest.approx(wall)


@pytest.mark.parametrize("name,group", [
    ("while/body/_1/StatefulPartitionedCall/gradient_tape/keras_mnist_cnn_1/conv2_1/convolution/"
     "Conv2DBackpropFilter:Conv2DBackpropFilter", ("conv2", "backward")),
    # conv + bias + ReLU fused under the activation layer's name: the conv's forward pass.
    ("StatefulPartitionedCall/keras_mnist_cnn_1/conv2.act_1/Relu:_FusedConv2D", ("conv2", "forward")),
    ("StatefulPartitionedCall/keras_mnist_cnn_1/conv2.act_1/Relu:Relu", ("conv2.act", "forward")),
    # The same fusions as oneDNN's builds of TensorFlow name them (the default on x86).
    ("StatefulPartitionedCall/keras_mnist_cnn_1/conv2.act_1/Relu:_MklNativeFusedConv2D", ("conv2", "forward")),
    ("StatefulPartitionedCall/keras_mnist_cnn_1/dense1.act_1/Relu:_MklNativeFusedMatMul", ("dense1", "forward")),
    ("StatefulPartitionedCall/keras_mnist_cnn_1/dense1.act_1/Relu:_MklFusedMatMul", ("dense1", "forward")),
    ("StatefulPartitionedCall/keras_mnist_cnn_1/conv2.act_1/Relu:_MklNativeConv2D", ("conv2.act", "forward")),
    ("StatefulPartitionedCall/keras_mnist_cnn_1/pool1.post_1/stateless_dropout/SelectV2:SelectV2",
     ("pool1.post", "forward")),
    ("StatefulPartitionedCall/adadelta/Sqrt_8:Sqrt", ("optimizer", "update")),
    ("StatefulPartitionedCall/compile_loss/sparse_categorical_crossentropy/Sum:Sum", ("other", "")),
    # XLA kernels, named by the call that launched them.
    ("while/cond/StatefulPartitionedCall/keras_mnist_cnn_1/pool1.post_1/PartitionedCall:XLA",
     ("pool1.post", "forward")),
    ("while/cond/StatefulPartitionedCall/StatefulPartitionedCall:XLA", ("optimizer", "update (XLA)")),
    ("while/cond/StatefulPartitionedCall/PartitionedCall_2:XLA", (step_profile.XLA_GRADIENTS, "")),
    (f"xla/{step_profile.XLA_EVENT}:XLA", (step_profile.XLA_GRADIENTS, "")),
])
def test_step_profile_groups_ops_by_layer_and_pass(name, group):
    assert step_profile.group_of(name, "keras_mnist_cnn") == group
    layers = {layer.name for layer in models.build("keras_mnist_cnn").layers}
    assert step_profile.group_of(name, "keras_mnist_cnn", layers) == group  # each a layer of the model


@pytest.mark.parametrize("name", ["StatefulPartitionedCall/keras_mnist_cnn_1/Cast:Cast",
                                  "StatefulPartitionedCall/keras_mnist_cnn_1/ArithmeticOptimizer/AddOpsRewrite:AddN"])
def test_step_profile_names_no_layer_for_the_models_own_ops(name):
    # Listed as layers "Cast" and "ArithmeticOptimizer" before.
    layers = {layer.name for layer in models.build("keras_mnist_cnn").layers}
    assert step_profile.group_of(name, "keras_mnist_cnn", layers) == (step_profile.OUTSIDE_LAYERS, "forward")


@pytest.mark.slow
def test_step_profile_profiles_a_training_call():
    result = step_profile.profile(tiny_source(), "keras_mnist_cnn", epochs=3, batch_size=16,
                                  log=lambda *_: None)
    # tiny_source: 86 training examples in batches of 16 -> 6 steps, one call of 6 per epoch.
    assert result["steps"] == 6 and result["dominant"] == "conv2"
    # pool1's, the ReLUs' and the masks' gradients are XLA kernels the trace names by no layer; the optimizer's
    # update is one XLA call (dropzoo/optimizers.py), pool1.post's mask another.
    assert {"conv2/forward", "conv2/backward", "optimizer/update (XLA)", "pool1.post/forward",
            step_profile.XLA_GRADIENTS} <= set(result["groups"])
    assert "pool1/backward" not in result["groups"] and "conv2.act/backward" not in result["groups"]
    assert sum(result["groups"].values()) + result["idle_seconds"] == pytest.approx(result["wall_seconds"])
    assert "conv2/backward" in step_profile.report(result, top=3)


@pytest.mark.parametrize("cap,policy", [
    ("AVX2", "float32"),              # oneDNN has no bfloat16 kernels under it
    ("avx512_core", "float32"),       # oneDNN emulates bfloat16 (case as oneDNN takes it)
    ("AVX512_CORE_BF16", "mixed_bfloat16"),
    ("AVX512_CORE_AMX", "mixed_bfloat16"),
    ("DEFAULT", "mixed_bfloat16"),
    ("", "mixed_bfloat16"),           # set but empty: no cap
])
def test_auto_precision_follows_a_onednn_isa_cap(cap, policy):
    chosen, reason = performance.choose_precision("auto", cpu={"amx_bf16"}, gpus=[],
                                                  env={"ONEDNN_MAX_CPU_ISA": cap})
    assert chosen == policy
    assert ("ONEDNN_MAX_CPU_ISA" in reason) == (policy == "float32")


def test_auto_precision_reads_onednns_old_cap_variable():
    chosen, reason = performance.choose_precision("auto", cpu={"avx512_bf16"}, gpus=[],
                                                  env={"DNNL_MAX_CPU_ISA": "AVX2"})
    assert chosen == "float32" and "DNNL_MAX_CPU_ISA=AVX2" in reason


def test_explicit_bfloat16_under_a_cap_without_it_is_refused():
    with pytest.raises(ValueError, match=r"ONEDNN_MAX_CPU_ISA=AVX2.*--precision=float32"):
        performance.choose_precision("mixed_bfloat16", cpu={"amx_bf16"}, gpus=[],
                                     env={"ONEDNN_MAX_CPU_ISA": "AVX2"})
    # Where TensorFlow emulates bfloat16 itself (no bfloat16 CPU, or oneDNN off) or a GPU computes, it runs.
    for cpu, gpus, env in (({"avx2"}, [], {"ONEDNN_MAX_CPU_ISA": "AVX2"}),
                           ({"amx_bf16"}, [gpu(9, 0)], {"ONEDNN_MAX_CPU_ISA": "AVX2"}),
                           ({"amx_bf16"}, [], {"ONEDNN_MAX_CPU_ISA": "AVX2", "TF_ENABLE_ONEDNN_OPTS": "0"}),
                           ({"amx_bf16"}, [], {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"})):
        assert performance.choose_precision("mixed_bfloat16", cpu=cpu, gpus=gpus, env=env)[0] == "mixed_bfloat16"
    assert performance.choose_precision("float32", cpu={"amx_bf16"}, gpus=[],
                                        env={"ONEDNN_MAX_CPU_ISA": "AVX2"})[0] == "float32"


def test_a_runs_machine_record_names_a_onednn_cap():
    assert performance.describe_machine(env={"ONEDNN_MAX_CPU_ISA": "AVX2"})["onednn_max_cpu_isa"] == "AVX2"
    assert "onednn_max_cpu_isa" not in performance.describe_machine(env={})


def test_the_trainers_config_refuses_bfloat16_under_a_cap_without_it(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    monkeypatch.setattr(performance, "cpu_flags", lambda: frozenset({"amx_bf16"}))
    monkeypatch.setattr(performance, "gpu_details", lambda: [])
    with pytest.raises(config_lib.ConfigError, match="ONEDNN_MAX_CPU_ISA=AVX2"):
        config_lib.validate(tiny_config(precision="mixed_bfloat16"))
    assert config_lib.validate(tiny_config(precision="auto")).precision == "auto"


def test_mc_dropout_parts_time_both_mask_ways_and_check_they_agree():
    result = mc_dropout.run_parts(precision="float32", samples=2, batch_size=4, rounds=1)
    assert list(result["ms"]) == list(mc_dropout.PARTS) and all(ms > 0 for ms in result["ms"].values())
    assert result["units"] == 2 * 4 * 12 * 12 * 64
    assert "portable masks" in mc_dropout.report_parts(result)


def test_a_onednn_kernel_a_cap_leaves_out_ends_in_one_line(monkeypatch, capsys):
    from dropzoo import errors

    failure = RuntimeError("Graph execution error:\n\nOperation received an exception:Status: 3, message: could "
                           "not create a primitive descriptor for the convolution forward propagation primitive.")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    with pytest.raises(SystemExit) as exit_info:
        with errors.one_line():
            raise failure
    assert exit_info.value.code == errors.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: oneDNN has no kernel") and "ONEDNN_MAX_CPU_ISA=AVX2" in err
    # Without a cap the same failure is not a user's mistake: its traceback stays.
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    with pytest.raises(RuntimeError):
        with errors.one_line():
            raise failure


def test_a_bfloat16_export_under_a_cap_without_bfloat16_is_refused_before_onednn_aborts(monkeypatch, tmp_path):
    """A dense bf16 matmul under ONEDNN_MAX_CPU_ISA=AVX2 aborts the process in C++: refused in one line first."""
    import keras

    from dropzoo import export

    for policy in ("mixed_bfloat16", "float32"):
        keras.mixed_precision.set_global_policy(policy)
        try:
            model = models.build("dense_mlp", "canonical", seed=0, num_classes=4, input_shape=(8, 8, 1))
        finally:
            keras.mixed_precision.set_global_policy("float32")
        export.export_saved_model(model, str(tmp_path / policy), outputs="logits", mc_dropout=False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    monkeypatch.setattr(performance, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    monkeypatch.setattr(performance, "gpu_details", lambda: [])
    with pytest.raises(export.ExportError, match=r"^oneDNN has no kernel for an operation of this model under "
                                                 r"ONEDNN_MAX_CPU_ISA=AVX2"):
        export.load_signatures(str(tmp_path / "mixed_bfloat16"))
    assert "serving_default" in export.load_signatures(str(tmp_path / "float32"))  # float32 runs under the cap
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert "serving_default" in export.load_signatures(str(tmp_path / "mixed_bfloat16"))


def test_the_console_line_names_the_replicas_where_there_are_several():
    """--cpu_devices=2 trained under a mirrored strategy of 2 replicas; only metrics.json said so."""
    described = {"precision": {"policy": "float32", "requested": "float32", "reason": "asked"},
                 "jit_compile": {"enabled": False, "requested": "auto", "reason": "no GPU"},
                 "steps_per_execution": {"used": 1, "requested": 0}}
    line = performance.summary_line(described)
    assert line == performance.summary_line(described, {"name": "default", "num_replicas": 1})
    assert performance.summary_line(described, {"name": "mirrored", "num_replicas": 2}) == (
        line + "; strategy: mirrored, 2 replicas")

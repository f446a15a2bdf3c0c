"""The environment the entry points give TensorFlow: set before it loads, overridable by the user."""
import glob
import os
import subprocess
import sys

import pytest

from dropzoo import environment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ["train.py", "eval.py"] + sorted(
    os.path.relpath(path, ROOT) for path in glob.glob(os.path.join(ROOT, "benchmarks", "*.py"))
    if os.path.basename(path) not in ("__init__.py", "common.py", "op_rates.py"))

# Runs a script's module-level code up to its first import of TensorFlow (or Keras), prints what
# TF_CPU_ALLOCATOR_USE_BFC is at that moment, and exits there: no TensorFlow is loaded.
FIRST_IMPORT = """
import os, runpy, sys
class Hook:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras"):
            print("at TensorFlow's import:", os.environ.get("TF_CPU_ALLOCATOR_USE_BFC"), flush=True)
            os._exit(0)
        return None
sys.meta_path.insert(0, Hook())
runpy.run_path(sys.argv[1], run_name="__checked__")
print("no TensorFlow import")
"""


def test_defaults_fill_only_what_the_environment_lacks():
    environ = {"TF_CPU_ALLOCATOR_USE_BFC": "false"}
    chosen = environment.set_defaults(environ)
    assert environ["TF_CPU_ALLOCATOR_USE_BFC"] == "false"  # the user's setting wins
    assert chosen == {"TF_CPP_MIN_LOG_LEVEL": "2"}
    assert environ["TF_CPP_MIN_LOG_LEVEL"] == "2"


@pytest.mark.parametrize("script", SCRIPTS)
def test_each_entry_point_sets_the_defaults_before_tensorflow_loads(script):
    env = {k: v for k, v in os.environ.items() if k not in environment.DEFAULTS}
    done = subprocess.run([sys.executable, "-c", FIRST_IMPORT, script], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "at TensorFlow's import: true", script


def test_a_run_records_the_commit_of_its_own_checkout_else_the_package_version(tmp_path):
    import shutil
    import subprocess

    from dropzoo import provenance

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if shutil.which("git") and os.path.isdir(os.path.join(root, ".git")):
        head = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        assert provenance.code_version(root).startswith(head) and provenance.is_commit(provenance.code_version(root))
    # Not a checkout of its own (a package installed inside some other repository, or none): no commit claimed.
    if shutil.which("git"):  # a machine without git: the package version, as below
        subprocess.run(["git", "init", "-q", str(tmp_path)], check=False, capture_output=True)
    inner = tmp_path / "site-packages"
    inner.mkdir()
    other = provenance.code_version(str(inner))
    assert not provenance.is_commit(other) and (other is None or other.startswith("dropout-zoo "))
    assert not provenance.is_commit("dropout-zoo 0.1.0") and provenance.is_commit("a" * 40 + "+changes")


def test_a_script_prints_names_that_are_not_utf8_in_any_locale():
    """A class folder named in Latin-1, printed under a UTF-8 locale other than C, stopped the run."""
    name = b"caf\xe9".decode("utf-8", "surrogateescape")
    code = f"from dropzoo import environment; environment.print_any_file_name(); print({name!r})"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=ROOT,
                          env=dict(os.environ, PYTHONIOENCODING="utf-8:strict"))
    assert done.returncode == 0 and done.stdout == b"caf\xe9\n", done.stderr


# A stand-in for TensorFlow's native start-up: the banner its libraries print on the stderr descriptor whatever
# TF_CPP_MIN_LOG_LEVEL says, twice, and a line that is not the banner.
FAKE_TENSORFLOW = r'''
import os
banner = (b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
          b"I0000 00:00:1796517567.343704   24659 port.cc:153] oneDNN custom operations are on. You may see ...\n")
os.write(2, banner + b"E0000 kernel registry: something the user must see\n" + banner)
'''


@pytest.mark.parametrize("level, banner_shown", [("2", False), ("0", True)])
def test_tensorflow_loads_without_its_start_up_banner_unless_info_is_asked_for(tmp_path, level, banner_shown):
    (tmp_path / "tensorflow.py").write_text(FAKE_TENSORFLOW)
    code = "from dropzoo import environment; environment.import_tensorflow(); print('imported')"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": level, "PYTHONPATH": os.pathsep.join([str(tmp_path), ROOT])}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == "imported\n", done.stderr
    assert "E0000 kernel registry: something the user must see\n" in done.stderr
    assert ("oneDNN custom operations" in done.stderr) == banner_shown
    assert ("absl::InitializeLog" in done.stderr) == banner_shown
    if not banner_shown:
        assert done.stderr == "E0000 kernel registry: something the user must see\n"


# As the scripts start: a Ctrl-C handler, then TensorFlow (a stand-in that takes its time, or dies in native code).
STARTING = "from dropzoo import environment, interrupts; interrupts.quiet_during_start_up(); " \
           "environment.import_tensorflow(); print('imported')"


@pytest.mark.parametrize("stand_in, expected, status", [
    # A Ctrl-C while TensorFlow loads: its one line arrives (it was held with the banner, and lost at the exit).
    ("import time; time.sleep(30)", "interrupted (SIGINT) while starting; nothing was written\n", 128 + 2),
    # A native abort while it loads: what it said first arrives.
    ("import os; os.write(2, b'F0000 check failed: no kernel\\n'); os.abort()", "F0000 check failed: no kernel\n",
     -6),
])
def test_what_is_said_as_tensorflow_loads_arrives_however_the_process_ends(tmp_path, stand_in, expected, status):
    import signal
    import time

    (tmp_path / "tensorflow.py").write_text(stand_in)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": os.pathsep.join([str(tmp_path), ROOT])}
    process = subprocess.Popen([sys.executable, "-c", STARTING], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    if status == 128 + 2:
        time.sleep(3)  # well into the stand-in's import
        process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert (process.returncode, out, err) == (status, "", expected)


def test_a_bad_flag_is_one_line_and_nothing_else_on_stderr():
    # TensorFlow 2.21's banner (four lines) came before every command's first line of its own.
    done = subprocess.run([sys.executable, "eval.py", "--epochz=2"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert done.stderr == "error: Unknown command line flag 'epochz'; see --helpfull for every flag\n"


def test_tensorflows_own_warnings_print_once_in_the_scripts_form():
    """Once absl's handler was on the root logger (the client installs it), TensorFlow's logger printed each of its
    warnings twice: through the handler TensorFlow adds for itself, and through the root's."""
    code = ("from absl import flags; flags.FLAGS.mark_as_parsed()\n"
            "from dropzoo import environment, errors; environment.import_tensorflow()\n"
            "import tensorflow as tf; tf.get_logger().warning('before'); errors.plain_logs()\n"
            "tf.get_logger().warning('after %s', 1)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[-2:] == ["WARNING:tensorflow:before", "warning: after 1"], done.stderr


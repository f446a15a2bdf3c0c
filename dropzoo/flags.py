"""Every command-line flag, defined in one place; `python -m dropzoo.flags` prints the reference.

train.py's flags are the TrainConfig fields (dropzoo/config.py holds their
defaults and help), plus the few that say how to run a plan (`RUN_FLAGS`).
Flags are defined by functions that train.py and eval.py call under
`__main__`, so importing both scripts (as tests do) never defines a flag
twice. Nothing below the scripts' `main` reads FLAGS: `train_plan` turns
parsed flags into plain TrainConfigs.

    python -m dropzoo.flags > docs/flags.md      # the generated flag reference
"""
import sys

from absl import flags

import models
from dropzoo import config as config_lib
from dropzoo import idx
from dropzoo import optimizers
from dropzoo import performance
from dropzoo import sources
from dropzoo import sweep

FLAGS = flags.FLAGS
# The data flags eval.py shares with train.py (same names, same help).
OOD_FIELDS = ("ood_dataset", "ood_idx_dir", "ood_npz", "ood_image_dir")
DATA_FIELDS = tuple(dict.fromkeys(key for source in reversed(sources.SOURCES) for key in source.keys))  # --dataset 1st
# train.py's flags that are not TrainConfig fields: (name, default, help).
RUN_FLAGS = (
    ("seeds", 1, "Train seeds --seed, --seed+1, ... (more than 1 runs a sweep)."),
    ("workdir", None, "Output directory of a single run (default runs/<model>/<variant>/seed<seed>); for a "
                      "sweep, the root under which each run gets <model>/<variant>/seed<k> (default runs)."),
    ("overwrite", False, "Retrain even if --workdir holds a finished run."),
    ("serving_artifacts", True, "Also write model.keras, model.tflite and model_int8.tflite beside the SavedModel "
                                "(about 2 s a run); --noserving_artifacts skips them, e.g. in a large sweep."),
    ("dry_run", False, "Print every run of the plan (workdir, model, placement, its sites with rates and kind, its "
                       "optimizer, learning rate, batch size and length, which runs are identical by construction, "
                       "finished or started), and each data's classes "
                       "and image shape, and exit without training or writing. Each network is built on its "
                       "data's image shape first: one that cannot take the images (too deep, a kernel too large, a "
                       "Keras model built for others) fails here as its training would, and so do files training "
                       "would refuse and a --train_size or --steps_per_execution they cannot take."),
    ("task_index", None, "Train only share I of the plan (0..N-1, with --num_tasks=N): for array jobs. Without it, "
                         "Slurm's SLURM_ARRAY_TASK_ID (minus SLURM_ARRAY_TASK_MIN) or Kubernetes' "
                         "JOB_COMPLETION_INDEX is used where set. See docs/scaling.md."),
    ("num_tasks", None, "Split the plan into N shares (groups of identical runs stay together); Slurm arrays "
                        "give it as SLURM_ARRAY_TASK_COUNT, a Kubernetes Indexed Job needs it given."),
)
# RUN_FLAGS that take integers (their default None means unset).
_INTEGER_RUN_FLAGS = ("task_index", "num_tasks")


def _define(name, default, help, fv):
    """One flag; a TrainConfig field is a string flag that train_plan parses (and may split)."""
    if isinstance(default, bool):
        flags.DEFINE_bool(name, default, help, flag_values=fv)
    elif name in _INTEGER_RUN_FLAGS or (isinstance(default, int) and name not in config_lib.FIELDS):
        flags.DEFINE_integer(name, default, help, flag_values=fv)
    else:
        flags.DEFINE_string(name, None if default is None else str(default), help, flag_values=fv)


def _field_help(name):
    help = config_lib.FIELDS[name].metadata["help"]
    if name in config_lib.SWEEPABLE:
        help += " A comma list sweeps."
    return help


def define_data_flags(fv=FLAGS):
    for name in DATA_FIELDS:
        _define(name, config_lib.FIELDS[name].default, config_lib.FIELDS[name].metadata["help"], fv)


def define_train_flags(fv=FLAGS):
    for name, field in config_lib.FIELDS.items():
        _define(name, field.default, _field_help(name), fv)
    for name, default, help in RUN_FLAGS:
        _define(name, default, help, fv)


EVAL_FLAGS = (
    ("saved_model", None, "SavedModel directory to evaluate (a run's own saved_model/ is scored on the run's "
                          "test data unless data flags name other data)."),
    ("tflite", None, "TFLite model to evaluate instead (a run's model.tflite or model_int8.tflite: on the run's "
                     "test data, as --saved_model), run with LiteRT (ai-edge-litert); no MC dropout."),
    ("runs_dir", [], "Compare every finished run below these directories (a sweep's --workdir; a comma list "
                     "compares runs collected in several): writes comparison.md/.csv/.png, descriptive.md, contrasts "
                     "and HParams summaries to <runs_dir>/comparison (with several, to --output). Works from the runs' "
                     "records (metrics.json, evaluations/) where they hold what is asked, else through their "
                     "SavedModels."),
    ("contrasts", None, "The study's planned contrasts, A:B (A minus B) pairs of variant names, e.g. "
                        "before_dense:after_activation,none:after_activation; only these enter the Holm "
                        "correction. Default: every variant against --baseline."),
    ("margin", 0.5, "Equivalence margin of the contrasts' test accuracy, in points: a difference shown to lie "
                    "within ±margin (two one-sided tests) is 'equivalent'."),
    ("nll_margin", 0.015, "Equivalence margin of the contrasts' test NLL, in nats (the NLL that half a point of "
                          "accuracy moved from right to wrong costs these models; see docs/studies.md); below 1."),
    ("accuracy_below", [], "Test accuracies in percent (e.g. 95,80): descriptive.md counts and lists each variant's "
                           "runs testing below each."),
    ("collect", None, "With --runs_dir: copy the records of every run below it (config.json, metrics.json, "
                      "evaluations/: a few KB each, no SavedModels) into this directory, keeping their paths; "
                      "compare them later with --runs_dir=DIR."),
    ("mc_samples", 0, "Also score Monte Carlo dropout: this many dropout-on passes (2 to 16384) averaged (plus NLL/ECE/"
                      "Brier of the mean of the first t passes, t = 1..N)."),
    ("mc_seed", 0, "Seed of the MC dropout masks (the export's mc_dropout_draws_xla signature, or "
                   "mc_dropout_draws in an export without it: the same draws), so an evaluation repeats exactly "
                   "with the same --batch_size (masks are drawn per batch; eval.json records it as "
                   "mc_batch_size, a run's evaluations/ record as its request's batch_size)."),
    ("ood_dataset", None, "Out-of-distribution detection: score this dataset's test split (a tfds name, e.g. "
                          "fashion_mnist or kmnist where prepared) against the test data by predictive "
                          "entropy (with --mc_samples also MC entropy and mutual information): AUROC, FPR at "
                          "95% TPR, and each score's one-sided Mann-Whitney p against chance."),
    ("ood_idx_dir", None, "As --ood_dataset, from IDX .gz files (t10k-*), e.g. "
                          "/usr/share/datasets/fashion-mnist."),
    ("ood_npz", None, "As --ood_dataset, from an .npz file's x_test (or its one array; an .npy array too): uint8 "
                      "[N, H, W] or [N, H, W, C] images of the model's shape (labels, if any, are not used)."),
    ("ood_image_dir", None, "As --ood_dataset, from a folder of images (PNG, JPEG, BMP, GIF; its subfolders too, "
                            "however named), each read at the model's size and channels as --image_dir reads them."),
    ("baseline", "canonical", "Variant the comparison's t-tests compare against."),
    ("workdir", None, "A training workdir; evaluates <workdir>/saved_model."),
    ("batch_size", 256, "Evaluation batch size."),
    ("output", None, "Write the JSON result here (default with --workdir: <workdir>/eval.json for the run's own test "
                     "data, <workdir>/eval-<data>.json for other data); with "
                     "--runs_dir, the output directory (default <runs_dir>/comparison; required with several)."),
)


def define_eval_flags(fv=FLAGS):
    define_data_flags(fv)
    for name, default, help in EVAL_FLAGS:
        if isinstance(default, list):
            flags.DEFINE_list(name, default, help, flag_values=fv)
        elif isinstance(default, float):
            flags.DEFINE_float(name, default, help, flag_values=fv)
        elif isinstance(default, int):
            flags.DEFINE_integer(name, default, help, flag_values=fv)
        else:
            flags.DEFINE_string(name, default, help, flag_values=fv)


# Flags whose empty value gets its own message (their checks say what an empty one would have done).
_EMPTY_SAID_ELSEWHERE = {"sites", "workdir", "network", "keras_model", "placement", *DATA_FIELDS, *OOD_FIELDS}


def parse_or_exit(argv, fv=FLAGS, empty_allowed=()):
    """absl flags_parser: a bad flag or flagfile gets one `error:` line, exit 2; so does a flag given but empty (an
    unset $VAR: absl reads `--flagfile=` as none, and `--train_steps=` or `--contrasts=` as their defaults), but
    those of `empty_allowed` (an empty list that means none)."""
    try:
        if empty := next((a for a in argv[1:] if a.split("=", 1)[0].lstrip("-") == "flagfile" and "=" in a
                          and not a.partition("=")[2].strip()), None):
            raise flags.Error(f"{empty} is given but empty (an unset variable?); name a flagfile, e.g. --flagfile=F")
        parsed = fv(argv)
        if empty := next((n for n in fv if fv[n].present and n not in {*_EMPTY_SAID_ELSEWHERE, *empty_allowed}
                          and isinstance(fv[n].value, (str, list)) and not "".join(map(str, fv[n].value)).strip()),
                         None):
            raise flags.Error(f"--{empty} is given but empty (an unset variable?); give it a value, or leave it out")
        return parsed
    except flags.Error as e:
        message = str(e).replace("ERROR:: ", "")  # absl's flagfile errors carry this prefix
        other = _other_scripts_flag(e, fv)
        if other:  # e.g. --epochs given to eval.py
            message = f"--{e.flagname} is {other}'s flag, not this script's ({message})"
        elif message.startswith("flag --seeds="):  # --seeds=0,1 meant as seeds 0 and 1
            message += " (--seeds=N trains N seeds from --seed: --seed=0 --seeds=2 for seeds 0 and 1)"
        print(f"error: {message}; see --helpfull for every flag", file=sys.stderr)
        raise SystemExit(2) from None
    except (UnicodeDecodeError, OSError) as e:  # a --flagfile that is not text (absl reads it as UTF-8)
        named = [arg.split("=", 1)[1] for arg in argv if arg.startswith(("--flagfile=", "-flagfile="))]
        print(f"error: cannot read the flagfile {named[-1] if named else ''} or one it names ({type(e).__name__}: "
              f"{e}); a flagfile is text, one --flag=value per line (e.g. configs/keras_mnist_cnn.cfg)",
              file=sys.stderr)
        raise SystemExit(2) from None
    except ValueError as e:  # absl's for a boolean flag's --noX=VALUE
        if "does not take an argument" not in str(e):
            raise
        name = str(e).split("=", 1)[0].lstrip("-")
        print(f"error: {e}: give --{name} alone, or --{name[2:]}=false; see --helpfull for every flag", file=sys.stderr)
        raise SystemExit(2) from None


def _other_scripts_flag(error, fv):
    """'train.py' or 'eval.py' where an unknown flag is the other script's, else None."""
    if not isinstance(error, flags.UnrecognizedFlagError):
        return None
    mine_is_eval = "runs_dir" in fv
    other = flags.FlagValues()
    (define_train_flags if mine_is_eval else define_eval_flags)(other)
    name = error.flagname
    if name not in other and name.startswith("no") and name[2:] in other:  # --noserving_artifacts
        name = name[2:]
    return ("train.py" if mine_is_eval else "eval.py") if name in other else None


def check_one_source(fv=FLAGS):
    """ConfigError where --dataset is given beside --npz or --image_dir (even at its default, mnist: the loader
    reads the default as no --dataset, and would ignore it). --idx_dir beside it names that dataset's IDX files
    (the study configs name their dataset, and take --idx_dir=DIR offline)."""
    empty = [name for name in DATA_FIELDS + tuple(n for n in OOD_FIELDS if n in fv)
             if fv[name].present and not str(fv[name].value or "").strip()]
    if empty:  # read as not given: an unset $VAR trained or scored other data (the default dataset) without a word
        raise config_lib.ConfigError(f"--{empty[0]} is given but empty (an unset variable?); give it a value, or "
                                     "leave the flag out")
    if fv["dataset"].present and fv["idx_dir"].value:  # --dataset=mnist too: the default, given, names the files
        for name in str(fv["dataset"].value).split(","):
            if name.strip():  # (an empty item is refused as such with the other flags)
                idx.check_named(name.strip(), fv["idx_dir"].value)
    others = [name for name in sources.NOT_WITH_DATASET if fv[name].present and fv[name].value]
    if fv["dataset"].present and others:
        raise config_lib.ConfigError(f"give one data source, not --{others[0]} and --dataset={fv['dataset'].value}; "
                                     f"drop --dataset to use --{others[0]}")


def _check_one_policy_each(precisions):
    """ConfigError where two --precision values resolve to one policy here (auto and the one it picks)."""
    if len(precisions) < 2 or not set(precisions) <= set(config_lib.PRECISIONS):
        return
    policies = [performance.choose_precision(p)[0] for p in precisions]
    twice = next((p for p in policies if policies.count(p) > 1), None)
    if twice:
        same = [p for p, policy in zip(precisions, policies) if policy == twice]
        raise config_lib.ConfigError(f"--precision={','.join(precisions)}: {' and '.join(same)} are {twice} here, "
                                     "one run trained twice (and counted twice in its comparison); list each policy "
                                     "once")


def train_plan(fv=FLAGS):
    """[(TrainConfig, workdir)] the parsed train flags ask for: one run, or a sweep."""
    check_one_source(fv)
    texts = {name: fv[name].value for name in config_lib.FIELDS}
    if fv["sites"].present and not (texts["sites"] or "").strip():  # read as not given, --placement would train
        raise config_lib.ConfigError("--sites is given but empty; for no dropout pass --sites=none (or "
                                     "--placement=none), else give the sites (e.g. --sites=dense1.post:0.5) or leave "
                                     "the flag out to train --placement")
    if fv["workdir"].present and not (fv["workdir"].value or "").strip():  # read as not given: trained into runs/
        raise config_lib.ConfigError("--workdir is given but empty (an unset variable?); give a directory, or leave "
                                     "the flag out to train into runs/MODEL/VARIANT/seedN")
    placements = _values("placement", texts["placement"])
    if fv["sites"].present and (len(placements) > 1 or placements == ["all"]):  # each name planned, then one run
        raise config_lib.ConfigError(f"give --sites={texts['sites']} or --placement={texts['placement']}, not both: "
                                     "--sites overrides --placement, so every run of the sweep would train its sites")
    for name, example in (("network", "conv32k3,pool2,flatten,dense128"), ("keras_model", "my_cnn.keras")):
        if fv[name].present and not (texts[name] or "").strip():  # read as not given, the default network trains
            raise config_lib.ConfigError(f"--{name} is given but empty; give it a value (e.g. --{name}={example}), "
                                         "or leave the flag out to train --model")
    if fv["bn_momentum"].present and "batch" not in str(texts["norm"]):  # reset to the default, without a word
        fix = ("drop --bn_momentum: a --keras_model keeps its own BatchNorm layers' momentum" if texts["keras_model"]
               else "drop --bn_momentum, or add --norm=batch")
        raise config_lib.ConfigError("--bn_momentum sets the momentum of the BatchNorm layers --norm=batch adds, and "
                                     f"without it there are none; {fix}")
    if texts["keras_model"] and texts["network"]:
        raise config_lib.ConfigError("give --network=SPEC or --keras_model=PATH, not both")
    if texts["keras_model"] and fv["model"].present and texts["model"] == config_lib.DEFAULT_MODEL:
        # Read as the default, it would be replaced by the file's name without a word.
        raise config_lib.zoo_name_taken(texts["model"])
    if texts["network"]:
        if fv["model"].present or texts["model"] != config_lib.DEFAULT_MODEL:  # (the default, typed: refused too)
            raise config_lib.ConfigError(f"give --network=SPEC or --model={texts['model']}, not both: "
                                         "--network describes the network to train")
        texts["network"] = _network_text(texts["network"])
    lists = {name: _values(name, text) for name, text in texts.items()}
    _check_one_policy_each(lists["precision"])
    base = {name: values[0] for name, values in lists.items()}
    sweeps = {name: values for name, values in lists.items() if len(values) > 1 or values == ["all"]}
    seeds = fv["seeds"].value
    configs = sweep.expand(base, sweeps, seeds=seeds)
    _check_learning_rate_given(configs, fv)
    if len(configs) == 1 and fv["workdir"].value:
        return [(configs[0], fv["workdir"].value)]
    varying = sweep.varying_fields(configs)
    runs = [(c, sweep.run_dir(fv["workdir"].value or "runs", c, varying)) for c in configs]
    workdirs = [workdir for _, workdir in runs]
    shared = sorted({w for w in workdirs if workdirs.count(w) > 1})
    if shared:  # the second would be recorded as identical to the first: to itself
        raise config_lib.ConfigError(f"the sweep plans other runs in one workdir ({shared[0]}); its flags differ "
                                     "in a field that names no directory: sweep it in one command per value, each "
                                     "with its own --workdir")
    return runs


def _check_learning_rate_given(configs, fv):
    """ConfigError where an optimizer other than Adadelta would train at --learning_rate's default, 1.0: the classic
    recipe's Adadelta rate, which sent Adam to a loss of 12,044 (14% accuracy) without a word."""
    other = next((c.optimizer for c in configs if c.optimizer != "adadelta"), None)
    if other and not fv["learning_rate"].present:
        usual = optimizers.keras_learning_rate(other)
        raise config_lib.ConfigError(
            f"--optimizer={other} would train at --learning_rate={float(fv['learning_rate'].default):g}, the flag's "
            f"default, which is the classic recipe's Adadelta rate (Keras' {other} default is {usual:g}); pass "
            f"--learning_rate, e.g. --learning_rate={usual:g}")


def _values(name, text):
    """The typed values of field `name`'s flag: a comma list where the field is sweepable."""
    if name in config_lib.EXECUTION_ONLY and text is not None and "," in str(text):
        raise config_lib.ConfigError(f"--{name} takes one value, not a list ({text}): runs under several "
                                     f"{'strategies' if name == 'strategy' else 'device counts'} would share one "
                                     "workdir; run one command per value, each with its own --workdir")
    if name not in config_lib.SWEEPABLE or text is None:
        return [config_lib.parse_value(name, text)]
    parts = [part.strip() for part in str(text).split(",")]
    if len(parts) > 1 and not all(parts):
        raise config_lib.ConfigError(f"--{name}={text!r} has an empty item; give values separated by "
                                     "single commas, e.g. --rate=0.1,0.5")
    if name == "rate":  # the rate's own check and message: a number in [0, 1)
        values = [None if part == "" else _rate(part) for part in parts]
    else:
        values = [config_lib.parse_value(name, part) for part in parts]
    twice = [part for part, value in zip(parts, values) if values.count(value) > 1]
    if twice:  # one run directory would be planned twice, and a trained run recorded as identical to itself
        raise config_lib.ConfigError(f"--{name}={text!r} lists {twice[0]!r} more than once; give each value once")
    if name == "placement" and "all" in values and len(values) > 1:  # 'all' holds them: each run twice
        raise config_lib.ConfigError(f"--placement={text!r} lists 'all' beside other placements, which it holds "
                                     "already; give --placement=all alone, or the placements you want")
    return values


def _network_text(value):
    """The --network spec: the value, or the contents of FILE for `@FILE`."""
    if not value.startswith("@"):
        return value
    try:
        with open(value[1:], encoding="utf-8-sig") as f:  # a byte-order mark is not part of the spec
            text = f.read()
    except OSError as e:
        raise config_lib.ConfigError(f"--network: cannot read {value[1:]!r} ({e.strerror}); "
                                     "@FILE names a file holding the network spec") from None
    except UnicodeDecodeError:
        raise config_lib.ConfigError(f"--network: {value[1:]!r} is not UTF-8 text; @FILE names a file holding "
                                     "the network spec (tokens or JSON)") from None
    if not text.strip():  # read as no --network at all, it would train the default zoo network
        raise config_lib.ConfigError(f"--network: {value[1:]!r} is empty; write the network spec in it (e.g. "
                                     "conv32k3,pool2,flatten,dense128)")
    return text


def _rate(value):
    try:  # the one check of a rate and its message
        return models.check_rate(value, "--rate")
    except ValueError as e:
        raise config_lib.ConfigError(str(e)) from None


# --------------------------------------------------------------- reference


def markdown_reference():
    """docs/flags.md: every flag of train.py and eval.py, generated from their definitions."""
    lines = ["# Flag reference", "",
             "Every flag of `train.py` and `eval.py`, generated from their definitions by "
             "`python -m dropzoo.flags > docs/flags.md` (a test checks this page is current). "
             "Each `train.py` flag above `seeds` is a field of `dropzoo.config.TrainConfig` "
             "(see [api.md](api.md)); `--flagfile=FILE` reads flags from a file, one per line "
             "(the [configs/](../configs/) are such files), and `--helpfull` lists them all.", ""]
    for script, define in (("train.py", define_train_flags), ("eval.py", define_eval_flags)):
        lines += [f"## {script}", "", "| flag | default | what it does |", "| --- | --- | --- |"]
        define(fv := flags.FlagValues())
        for name, default, help in ((name, fv[name].default, fv[name].help) for name in fv):
            shown = "" if default in (None, "") else f"`{default}`"
            lines.append(f"| `--{name}` | {shown} | {help.replace('|', chr(92) + '|')} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(markdown_reference())

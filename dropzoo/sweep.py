"""Several placements x seeds (x kinds x activations) in one command.

Each run trains in its own directory, `<root>/<model>/<variant>/seed<k>/`
(a --network's model is its name, e.g. `conv32k3-pool2-flatten-dense128`),
where the variant is the placement, suffixed with the dropout kind, the
hidden activation, the normalisation and the overriding rate when they are
not the defaults (e.g. `before_activation`, `both-classic`,
`after_activation-sigmoid`, `bn_before-batchnorm-rate0.25`). Every run with seed k sees the
same data order. A sweep that is interrupted resumes where it stopped:
finished runs are reported, not retrained, and a half-trained run resumes
from its last checkpoint.
"""
import dataclasses
import itertools
import os
import socket
import traceback

import keras

import models
from dropzoo import config as config_lib
from dropzoo import data as data_lib
from dropzoo import errors
from dropzoo import locks
from dropzoo import trainer


def expand(base, *, placements=None, seeds=1, kinds=None, activations=None, rates=None, norms=None,
           bn_momentum=None):
    """The TrainConfigs of a sweep around `base` (validated, in a stable order).

    `placements` may contain "all" (every placement of the model); seeds are
    base.seed, base.seed + 1, ...; `rates` (None: each site's own rate)
    override every site's rate. `bn_momentum` (default base's) applies to the
    configs with BN; the others record the default, as it changes nothing there.
    """
    momentum = {} if bn_momentum is None else {"bn_momentum": bn_momentum}
    placements = list(placements or [base.placement])
    if "all" in placements:
        placements = models.list_placements(config_lib.register_network(base))
    if seeds < 1:
        raise errors.ConfigError(f"--seeds must be a positive integer, got {seeds}")
    configs = []
    for placement, kind, activation, norm, rate, k in itertools.product(
            placements, kinds or [base.kind], activations or [base.activation],
            norms or [base.norm], rates or [base.rate], range(seeds)):
        config = dataclasses.replace(base, placement=placement, kind=kind, activation=activation,
                                     norm=norm, rate=rate, seed=base.seed + k, **momentum)
        configs.append(config_lib.validate(config))
    return configs


def variant_name(config):
    """The name of a run's variant (placement[-kind][-activation]); its directory's name.

    `config` is a TrainConfig or the dict a run recorded in metrics.json.
    """
    if isinstance(config, dict):
        config = config_lib.TrainConfig(**{k: v for k, v in config.items()
                                           if k in config_lib.TrainConfig.__dataclass_fields__})
    name = config.placement if not config.sites else "sites-" + _slug(config.sites)
    if config.kind != "inverted":
        name += f"-{config.kind}"
    if config.activation != "relu":
        name += f"-{config.activation}"
    if config.norm != "none":
        name += f"-{config.norm}norm"
        if config.bn_momentum != models.DEFAULT_BN_MOMENTUM:
            name += f"-bnmomentum{config.bn_momentum:g}"
    if config.rate is not None:
        name += f"-rate{config.rate:g}"
    return name


def run_dir(root, config):
    return os.path.join(root, config.model, variant_name(config), f"seed{config.seed}")


def _slug(text):
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)


class Skipped(str):
    """A run another process was training: its lock holder, as a one-line reason."""


# What a sweep run's identity leaves to models.construction_key: the network.
_NETWORK_FIELDS = ("model", "network", "placement", "sites", "rate", "kind", "activation", "norm")


def identity(config):
    """Runs with equal identities train the same network on the same data, masks and steps.

    The network part is models.construction_key (the rules `python -m
    models.equivalence` checks: e.g. a Bernoulli mask moved across a ReLU);
    every other field that changes the result must match as given.
    """
    network = models.construction_key(config_lib.register_network(config), config.placement_spec,
                                      kind=config.kind, activation=config.activation,
                                      rate=config.rate, norm=config.norm)
    ignored = _NETWORK_FIELDS + config_lib.OBSERVATION_ONLY + config_lib.EXECUTION_ONLY
    rest = tuple(sorted((k, v) for k, v in config.to_dict().items() if k not in ignored))
    return network, rest


def plan(runs):
    """[index of the run that trains run i]: the first run of each identical group."""
    first = {}
    return [first.setdefault(identity(config), i) for i, (config, _) in enumerate(runs)]


def run_sweep(runs, *, overwrite=False, source=None, verbose="auto"):
    """Trains every (config, workdir) in `runs`; returns [(config, workdir, outcome)].

    Runs that are identical by construction to an earlier run of the sweep
    (`plan`) are not trained: their workdir gets `trainer.record_identical`'s
    record of the run that stands for them, and that is their outcome. The
    outcome is otherwise the run's metrics; a `Skipped` reason if another
    process holds the run's workdir (so the same sweep started several times
    splits the work); or, for a run that failed (e.g. a NaN loss), its error
    in one line, and the sweep goes on. Runs share one loaded dataset.
    """
    if source is None:
        first = runs[0][0]
        source = data_lib.load_source(first.dataset, idx_dir=first.idx_dir,
                                      tfds_data_dir=first.tfds_data_dir)
    trained_by = plan(runs)
    results = []
    for i, (config, workdir) in enumerate(runs, 1):
        if verbose:
            print(f"[{i}/{len(runs)}] {workdir}", flush=True)
        target = trained_by[i - 1]
        if target != i - 1:
            outcome = _identical(config, workdir, results[target])
            if verbose:
                print(f"  identical by construction to {results[target][1]}: not trained", flush=True)
            results.append((config, workdir, outcome))
            continue
        keras.backend.clear_session()  # fresh graph and layer names for every run
        try:
            outcome = trainer.train_and_evaluate(config, workdir, overwrite=overwrite,
                                                 source=source, verbose=verbose)
        except locks.WorkdirLocked as e:
            outcome = Skipped(str(e))
            if verbose:
                print("  skipped: another process is training it", flush=True)
        except errors.USER_ERRORS as e:  # the same errors the scripts print in one line
            outcome = f"{type(e).__name__}: {' '.join(str(e).split())}"
            if verbose:
                print(f"  failed: {outcome}", flush=True)
        except Exception:  # keep the finished runs' summary; show the bug in full
            outcome = traceback.format_exc(limit=3)
            if verbose:
                print(outcome, flush=True)
        results.append((config, workdir, outcome))
    return results


def _identical(config, workdir, trained):
    """The outcome of a run identical to `trained` = (config, workdir, outcome)."""
    _, target_workdir, outcome = trained
    if isinstance(outcome, Skipped):
        return outcome
    if not isinstance(outcome, dict):
        return f"identical by construction to {target_workdir}, which failed"
    try:
        return trainer.record_identical(config, workdir, target_workdir, outcome)
    except errors.USER_ERRORS as e:
        return f"{type(e).__name__}: {' '.join(str(e).split())}"


def failed(results):
    """The results whose run failed (skipped runs are another process's)."""
    return [r for r in results if not isinstance(r[2], (dict, Skipped))]


def summary(results):
    """One line per run: workdir, test accuracy and who trained it (or why not)."""
    me = {"host": socket.gethostname(), "pid": os.getpid()}
    lines, skipped = [], 0
    for _, workdir, outcome in results:
        if isinstance(outcome, Skipped):
            skipped += 1
            lines.append(f"{workdir}  SKIPPED (in use by another process)")
        elif isinstance(outcome, dict) and "identical_to" in outcome:
            lines.append(f"{workdir}  identical by construction to "
                         f"{os.path.normpath(os.path.join(workdir, outcome['identical_to']))} (not trained)")
        elif isinstance(outcome, dict):
            by = outcome.get("trained_by")
            who = ("trained here" if by == me else
                   f"finished earlier by {by['host']} pid {by['pid']}" if by else "finished earlier")
            lines.append(f"{workdir}  test_accuracy={outcome['test_accuracy']:.4f}  ({who})")
        else:
            lines.append(f"{workdir}  FAILED {outcome.splitlines()[0]}")
    if skipped:
        lines.append(f"{skipped} run(s) were being trained by another process; rerun this command "
                     "once it is done to see every result")
    return "\n".join(lines)

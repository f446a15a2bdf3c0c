"""Warnings on a plan of runs before it trains: flags it does not use, and choices of the user's it should
know of (a network's own head dropout, placements meant for BatchNorm, a .keras file's compile settings, an
optimizer given a rate meant for another, a rate grid that cannot be chosen on). train.py prints each as a warning
line; none stops the plan."""
import dataclasses
import math

import models
from dropzoo import config as config_lib
from dropzoo import optimizers
from dropzoo import sweep


def unused_flags(runs, fv):
    """One warning line for each flag given that no run of the plan `runs` uses: it changes nothing they compute
    (--rate or --kind with no dropout site to set; --epochs beside --train_steps), and where --rate overrides the
    rates --sites gives; `fv` the parsed flags (absl's FlagValues)."""
    configs = [config for config, _ in runs]
    notes = []
    for name in ("rate", "kind"):
        if not fv[name].present or fv[name].value is None:
            continue
        other = {"rate": _other_rate,
                 "kind": lambda c: dataclasses.replace(c, kind=next(k for k in models.KINDS if k != c.kind))}[name]
        if all(sweep.identity(c) == sweep.identity(other(c)) for c in configs):
            given = f"--sites={fv['sites'].value}" if fv["sites"].value else f"--placement={fv['placement'].value}"
            notes.append(f"--{name}={fv[name].value} is not used: no run of the plan has a dropout site for it to set "
                         f"({given})")
    if fv["placement"].present and fv["sites"].value and fv["placement"].value not in (None, "canonical"):
        notes.append(f"--placement={fv['placement'].value} is not used: --sites={fv['sites'].value} sets where dropout "
                     "goes (TensorBoard's placement column shows the sites)")
    overridden = sorted({f"{site}:{rate}" for c in configs if c.sites and c.rate is not None
                         for site, rate, *_ in (item.split(":") for item in c.sites.split(",") if ":" in item)
                         if float(rate) != c.rate})  # (--sites=none: no site)
    if overridden and len({c.rate for c in configs}) == 1:  # (a grid over rates: tuning them is what it asks)
        notes.append(f"--rate={fv['rate'].value} overrides the rates --sites gives ({', '.join(overridden)} train at "
                     f"{configs[0].rate:g}); to train each site at its own rate, leave --rate out")
    if fv["epochs"].present and fv["train_steps"].value is not None:
        notes.append(f"--epochs={fv['epochs'].value} is not used: --train_steps={fv['train_steps'].value} sets how "
                     "long each run trains")
    return notes


def model_notes(runs):
    """One line for each network of the plan `runs` whose named placements had a choice to make the user should
    know of (its own head dropout at several rates), where a run trains one of them at its own rates."""
    names = {c.model for c, _ in runs if c.rate is None and not c.sites and c.placement not in ("canonical", "none")}
    notes = [note for name in sorted(names) for note in models.head_notes(name)]
    unfed = sorted({c.placement for c, _ in runs if c.placement in models.placements.BN_PLACEMENTS and not c.sites
                    and c.norm != "batch" and not models.get_spec(c.model).own_batch_norm})
    if unfed and not any(c.norm == "batch" for c, _ in runs):  # (beside --norm=batch runs: a study's control)
        own = any(c.keras_model for c, _ in runs if c.placement in unfed)  # --norm rebuilds zoo networks only
        notes.append(f"--placement={','.join(unfed)} is meant for BatchNorm, which this network lacks"
                     f"{'' if own else ' without --norm=batch'}: its sites are trained without a BN layer to feed "
                     f"({'give the Keras model BatchNormalization layers' if own else 'add --norm=batch'})")
    rates = {}  # (file, optimizer): the rates a sweep trains it at
    for c, _ in runs:
        if c.keras_model:
            rates.setdefault((c.keras_model, c.optimizer), []).append(c.learning_rate)
    notes += [note for (path, optimizer), asked in rates.items()
              for note in _compile_notes(path, optimizer, list(dict.fromkeys(asked)))]
    # A flagfile's Adadelta rate (the classic recipe's 1.0) under another --optimizer given beside it: said.
    high = [c for c, _ in runs if c.optimizer != "adadelta" and c.learning_rate >= 1.0]
    if high:
        other = sorted({c.optimizer for c in high})
        rates = ",".join(f"{rate:g}" for rate in sorted({c.learning_rate for c in high}))
        notes.append(f"--optimizer={','.join(other)} trains at --learning_rate={rates}, a rate for Adadelta (the "
                     "classic recipe's 1.0, from a flagfile?): Keras' default for "
                     + ", ".join(f"{name} is {optimizers.keras_learning_rate(name):g}" for name in other)
                     + "; if it is not meant, pass another --learning_rate")
    grids = {}  # runs alike but for their rate, without validation data: the comparison cannot choose a rate
    for c, _ in runs:
        if c.validation_fraction == 0 and sweep.identity(c) != sweep.identity(_other_rate(c)):  # (a rate it sets)
            grids.setdefault(dataclasses.replace(c, rate=None, seed=0), set()).add(c.rate)
    if any(len(rates) > 1 for rates in grids.values()):
        notes.append("the --rate grid trains with --validation_fraction=0, so the comparison has no validation loss "
                     "to choose each placement's rate by (it refuses to; each rate's runs compare alone); give "
                     "--validation_fraction=0.1 to choose")
    spelled = ",".join(dict.fromkeys(c.placement for c, _ in runs if ":" in c.placement))
    if spelled.count(",") > 0:  # --sites' spelling given to --placement: a sweep of one site each
        notes.append(f"--placement={spelled} sweeps each site as a placement of its own; for one placement of them "
                     f"all, pass --sites={spelled}")
    return notes


def _other_rate(config):
    """`config` at another --rate: the same run (sweep.identity) where it has no dropout site for a rate to set."""
    return dataclasses.replace(config, rate=config.rate / 2 if config.rate else 0.5)  # (0 sets a site off)


def _compile_notes(path, optimizer, learning_rates):
    """[one line] where the `.keras` file at `path` was saved compiled with another optimizer or rate than the runs
    train with (Keras' compile settings are not used: every network here trains with the trainer's)."""
    saved = models.saved_optimizer(path)
    if not saved:
        return []
    name, rate = saved
    key, schedule = name.lower(), rate == models.keras_file.SCHEDULE
    if key == optimizer and not schedule and (rate is None or any(
            math.isclose(rate, asked, rel_tol=1e-6) for asked in learning_rates)):  # (stored as float32)
        return []
    if key not in config_lib.OPTIMIZERS:
        own = f"--optimizer takes {', '.join(config_lib.OPTIMIZERS)}"
    elif schedule:
        own = ("the trainer's learning rate is a constant (--learning_rate)" if key == optimizer else
               f"pass --optimizer={key} for its own (with a constant rate)")
    else:
        own = f"pass --optimizer={key}" + (f" --learning_rate={rate:.6g}" if rate else "") + " for its own"
    described = f" with {rate}" if schedule else "" if rate is None else f" (learning rate {rate:.6g})"
    return [f"--keras_model {path} was saved compiled with {name}{described}, which is not used: it trains with "
            f"--optimizer={optimizer} --learning_rate={','.join(f'{r:g}' for r in learning_rates)} and sparse "
            f"categorical cross-entropy, as every network here; {own}"]

"""A sweep: the product of comma lists of any scalar TrainConfig field, x seeds, in one command.

Each run trains in its own directory, `<root>/<model>/<variant>/seed<k>/` (a --network's model is its name,
e.g. `conv32k3-pool2-flatten-dense128`), where the variant is the placement, suffixed with the dropout kind, the
hidden activation, the normalisation and the overriding rate when they are not the defaults (e.g.
`before_activation`, `both-classic`, `after_activation-sigmoid`, `bn_before-batchnorm-rate0.25`), and with any
other field that varies within the sweep (`canonical-learning_rate0.1`). Every run with seed k sees the same data
order. A sweep that is interrupted resumes where it stopped: finished runs are reported, not retrained, and a
half-trained run resumes from its last checkpoint.
"""
import contextlib
import dataclasses
import itertools
import numbers
import os
import traceback

import tensorflow as tf

import models
from dropzoo import callbacks as callbacks_lib
from dropzoo import checkpoints
from dropzoo import config as config_lib
from dropzoo import data as data_lib
from dropzoo import divergence
from dropzoo import errors
from dropzoo import files
from dropzoo import keras_state
from dropzoo import locks
from dropzoo import outcomes
from dropzoo import performance
from dropzoo import run_data
from dropzoo import sources
from dropzoo import strategies
from dropzoo import subsets
from dropzoo import summaries
from dropzoo import tfds_source
from dropzoo import trainer
from dropzoo import workdir as workdirs


def expand(base, sweeps=None, seeds=1):
    """The TrainConfigs of a sweep around `base` (validated, in a stable order).

    `base` is a TrainConfig or a dict of field values. `sweeps` maps field names to lists of values (a list of one
    sets that field everywhere); the sweep is their product (in field order), each with seeds base's seed, seed + 1,
    ... `placement` may hold "all": every placement of the model for that run's norm (`models.list_placements`). A
    config without BN records bn_momentum at its default (TrainConfig does that), as it changes nothing, so a
    momentum meant for the BN runs of a sweep is given in `sweeps` (or in a dict `base`), not in a TrainConfig
    without BN.
    """
    sweeps = config_lib.check_sweeps(sweeps or {})
    if isinstance(seeds, bool) or not isinstance(seeds, numbers.Integral) or seeds < 1:
        raise errors.ConfigError(f"--seeds must be a positive integer, got {seeds!r}")
    seeds = int(seeds)  # (a numpy integer too)
    base = dict(base) if isinstance(base, dict) else base.to_dict()
    names = [name for name in config_lib.FIELDS if name in sweeps]
    configs = []
    for values in itertools.product(*(sweeps[name] for name in names)):
        config = config_lib.TrainConfig(**{**base, **dict(zip(names, values))})
        placements = [config.placement] if config.placement != "all" else models.list_placements(
            config_lib.register_network(config), norm=config.norm)
        configs += [config_lib.validate(dataclasses.replace(config, placement=placement, seed=config.seed + k))
                    for placement in placements for k in range(seeds)]
    # Once each: --norm=none,batch --bn_momentum=0.9,0.99 makes one norm=none config twice (one workdir, not two).
    return list(dict.fromkeys(configs))


# Fields a variant's name shows, in this order, off their default; any other field only where it varies.
NAMED_FIELDS = ("placement", "sites", "kind", "activation", "norm", "bn_momentum", "rate")
# Fields that are the run directory's other parts (model) or never name a variant.
_NOT_IN_NAME = ("model", "network", "keras_model", "seed")


def varying_fields(configs):
    """The fields, in field order, whose values differ among `configs` (TrainConfigs or dicts).

    Seeds, the names above and the fields that do not change what a run computes
    are left out: they are not what tells one variant's directory from another's.
    """
    dicts = [c if isinstance(c, dict) else c.to_dict() for c in configs]
    dicts = [config_lib.with_defaults(d) for d in dicts]
    skip = set(NAMED_FIELDS + _NOT_IN_NAME + config_lib.OBSERVATION_ONLY + config_lib.EXECUTION_ONLY)
    return tuple(name for name in config_lib.FIELDS
                 if name not in skip and len({repr(d.get(name)) for d in dicts}) > 1)


def variant_name(config, varying=()):
    """The name of a run's variant; its directory's name.

    placement (or `sites-...`), then -kind, -activation, -<norm>norm (-bnmomentum<m>) and -rate<r> where not the
    default (e.g. `before_activation`, `both-classic`, `bn_before-batchnorm-rate0.25`), then -<field><value> for each
    field in `varying` (the fields that vary within the sweep, e.g. `canonical-learning_rate0.1`). `config` is a
    TrainConfig or the dict a run recorded in metrics.json.
    """
    if isinstance(config, dict):
        config = config_lib.TrainConfig(**{k: v for k, v in config.items() if k in config_lib.FIELDS})
    name = config.placement if not config.sites else "sites-" + files.name_characters(config.sites)
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
    unused = sources.unused_arguments(config.to_dict()) if varying else ()  # e.g. --dataset beside --image_dir
    for field in varying:
        value = getattr(config, field)
        if field in NAMED_FIELDS + _NOT_IN_NAME + unused or value in (None, ""):
            continue
        if isinstance(value, str) and os.sep in value:  # a path: its last part names it
            value = os.path.basename(os.path.normpath(value))
        name += f"-{field}{files.name_characters(format(value, 'g') if isinstance(value, float) else str(value))}"
    return name


def run_dir(root, config, varying=()):
    """`root/<model>/<variant>/seed<k>`; `varying` as variant_name takes it."""
    return os.path.join(root, config.model, variant_name(config, varying), f"seed{config.seed}")


# What a sweep run's identity leaves to models.construction_key: the network.
_NETWORK_FIELDS = ("model", "network", "placement", "sites", "rate", "kind", "activation", "norm")


def identity(config):
    """Runs with equal identities train the same network on the same data, masks and steps. The network part is
    models.construction_key (the rules `python -m models.equivalence` checks: e.g. a Bernoulli mask moved across a
    ReLU); every other field that changes the result must match as given."""
    network = models.construction_key(config_lib.register_network(config), config.placement_spec, kind=config.kind,
                                      activation=config.activation, rate=config.rate, norm=config.norm)
    ignored = _NETWORK_FIELDS + config_lib.OBSERVATION_ONLY + config_lib.EXECUTION_ONLY
    rest = tuple(sorted((k, v) for k, v in config.to_dict().items() if k not in ignored))
    return network, rest


def plan(runs):
    """[index of the run that trains run i]: the first run of each identical group (config_lib.check_runs first)."""
    config_lib.check_runs(runs)
    first = {}
    return [first.setdefault(identity(config), i) for i, (config, _) in enumerate(runs)]


def dry_run(runs, overwrite=False, source=None):
    """One line per run of the plan: workdir, model, placement, sites (rate, kind), optimizer, rate, batch, length.

    Unless `overwrite`, runs already finished in their workdir are marked and not counted as to train, those with
    checkpoints marked as resuming, and those the trainer would refuse (other settings) say why in its words.
    Writes nothing: what `train.py --dry_run` prints. Builds each network once on its data's image shape first
    (check_data_fits), clearing the Keras session after each; `source` as run_sweep takes it. Returns (the text,
    how many runs it refuses).
    """
    loaded = {}
    notes, described = check_data_fits(runs, loaded, source)
    trained_by = plan(runs)
    lines, finished, refused, kept = [], set(), set(), set()
    for i, (config, workdir) in enumerate(runs):
        resolved = trainer.resolve(config)
        line = f"{workdir}  {summaries.settings_line(config, resolved['sites'])}"
        source = loaded.get(_data_key(config))  # files read (tfds: sizes only, nothing to compare)
        refusal = None if overwrite else _refusal(config, workdir, resolved,
                                                  source if source is not None and source.train is not None else None)
        if refusal:  # a follower too: its record would be refused as a trained run is
            refused.add(i)
            line += f"  (refused: {refusal})"
        elif not overwrite and (diverged := divergence.read(workdir)):
            kept.add(i)
            line += f"  (diverged in epoch {diverged['epoch']}: recorded, kept)"
        elif not overwrite and os.path.exists(os.path.join(workdir, "metrics.json")) and not (
                trained_by[i] != i and workdirs.recorded_elsewhere(workdir, runs[trained_by[i]][1])):
            finished.add(i)
            line += "  (finished: kept)"
        elif trained_by[i] != i:
            line += f"  (identical by construction to {runs[trained_by[i]][1]}: recorded, not trained)"
        elif not overwrite and workdirs.started(workdir):
            line += "  (started: resumes from its last checkpoint)"
        lines.append(line)
    trained = len(set(trained_by) - finished - refused - kept)
    identical = sum(target != i and i not in finished | refused | kept for i, target in enumerate(trained_by))
    done = f"{len(finished)} finished, " if finished else ""
    done += f"{len(kept)} diverged before (kept), " if kept else ""
    done += f"{len(refused)} refused (see their lines), " if refused else ""
    done += f"{identical} identical by construction (recorded, not trained), " if identical else ""
    lines += [f"data: {flags}: {classes} classes, images of {'x'.join(map(str, shape))}"
              for flags, shape, classes, _ in described]
    lines += [f"note: {note}" for note in notes]
    lines.append(f"{len(runs)} run(s), {done}{trained} to train; nothing was written (--dry_run)")
    return "\n".join(lines), len(refused)


def check_data_fits(runs, loaded=None, source=None):
    """(the data's notes (tfds data not prepared), [(its flags, image shape, classes, note)] per data); ValueError
    (one line) where a run's network cannot take its data.

    A network too deep or a kernel too large for the images, a Keras model
    built for other images: each network is built once per data source, on
    that data's image shape and classes. Files (and mnist_sample) are loaded
    as training loads them, so what training refuses in them or in a run's
    --train_size or --steps_per_execution is refused here; tfds data is read
    from its description (sources.describe), nothing downloaded, and where it is
    prepared its splits' recorded sizes are checked as files' are. `source` (a caller's) is every run's data.
    """
    described, built = {}, set()
    loaded = {} if loaded is None else loaded  # filled: {data key: its Source} (files read; tfds: sizes only)
    if source is not None:  # every run's: one data setting (run_sweep refuses others)
        _sources(runs, source)
    for config, _ in runs:
        data = _data_key(config)
        strategies.check_cluster(config.strategy)
        # A global batch the replicas cannot split fails every run alike: said once, before any is trained.
        strategies.check_global_batch(config.batch_size, strategies.replicas_here(config.strategy, config.cpu_devices))
        if source is not None:
            run_data.check_given(source, config)  # refused as training would
            loaded[data], described[data] = source, (f"source={source.name}", source.image_shape, source.num_classes,
                                                     None)
        elif data not in described:
            arguments = sources.config_arguments(config)
            chosen = sources.choose({"dataset": sources.DEFAULT_DATASET, **arguments})
            flags = " ".join(f"--{key}={arguments[key]}" for key in chosen.keys if arguments.get(key) is not None)
            name = arguments.get("dataset", sources.DEFAULT_DATASET)
            if chosen.name == "dataset" and name != sources.SAMPLE_NAME:
                described[data] = (flags, *sources.describe(**arguments))
                sizes = tfds_source.prepared_sizes(name, arguments.get("tfds_data_dir"))
                if sizes:  # prepared: its splits' sizes, for what training checks of them (nothing read)
                    _, shape, classes, _ = described[data]
                    loaded[data] = sources.Source(name=f"tfds:{name}", train=None, test=None, num_train=sizes[0],
                                                  num_test=sizes[1], num_classes=classes, image_shape=shape)
            else:
                loaded[data] = sources.load_source(**arguments)
                described[data] = (flags, loaded[data].image_shape, loaded[data].num_classes, None)
        if data in loaded:
            _check_schedule(config, loaded, data)
        _, shape, classes, _ = described[data]
        if (config.model, shape, classes) in built:
            continue
        built.add((config.model, shape, classes))
        try:
            # Without dropout: whether the network takes the data (a placement's own refusals are its run's).
            trainer.build_network(dataclasses.replace(config, placement="none", sites=""), classes, shape)
        finally:
            keras_state.clear_session()
    return [note for _, _, _, note in described.values() if note], list(described.values())


def _check_schedule(config, loaded, data):
    """What training refuses of `config` on its data (`loaded[data]`) before its first step: --train_size, a class
    held out whole for validation, --steps_per_execution, --profile_batches. Each --train_size subset is cut once
    (`loaded` keeps it)."""
    source = loaded[data]
    if config.train_size:
        if (data, config.train_size) not in loaded:
            loaded[data, config.train_size] = (  # tfds data: its size alone (it is not read)
                subsets.subset(source, config.train_size) if source.train is not None else dataclasses.replace(
                    source, num_train=subsets.check_size(source, config.train_size, source.num_classes)))
        source = loaded[data, config.train_size]
    held = data_lib.check_every_class_trained(source, config.validation_fraction)  # (the validation examples)
    steps, epochs = trainer.schedule(config, trainer.data_steps_per_epoch(source, config))  # (per Keras epoch)
    strategies.check_first_batches_here(config, (steps, epochs), source.num_train - held, held, source.num_test)
    per_call, _ = performance.choose_steps_per_execution(config.steps_per_execution, steps, config.train_steps)
    profile = performance.parse_profile_batches(config.profile_batches)
    if profile:
        performance.check_profile_batches(profile, epochs=epochs, steps_per_epoch=steps,
                                          steps_per_call=per_call, train_steps=config.train_steps)


def _refusal(config, workdir, resolved, source=None):
    """The trainer's one-line refusal of the run in `workdir` (started with other settings; finished, or to resume,
    on other data than `source`, where loaded), else None."""
    try:
        workdirs.check_one_run_here(workdir)
        workdirs.check_recorded(config, workdir, resolved)
        if source is not None and os.path.exists(os.path.join(workdir, "metrics.json")):
            run_data.check_finished_on(source, config, files.read_json(os.path.join(workdir, "metrics.json"), "")
                                      .get("data", {}), workdir)
        elif source is not None and workdirs.started(workdir):
            directory = os.path.join(workdir, "checkpoints")
            callbacks_lib.check_trained_on(checkpoints.newest_record(directory), subsets.subset(
                source, config.train_size), directory)
    except errors.USER_ERRORS as e:
        return str(e)
    return None


def check_settings(runs):
    """RunError, before any run trains, where runs of the plan `runs` hold runs of other settings (the sweep rerun
    with a flag changed): each would be refused alone, after the others trained under the new settings."""
    refused = []
    for config, workdir in runs:
        try:
            workdirs.check_recorded(config, workdir, trainer.resolve(config))
        except errors.RunError as e:
            if not locks.held_elsewhere(workdir):  # (one another process is training: skipped as it runs, as it was)
                refused.append(str(e))
        except Exception:  # noqa: BLE001 (a corrupt record: that run's own check fails it alone, in its line)
            pass
    if refused:
        raise errors.RunError(f"{len(refused)} of the {len(runs)} runs of this sweep hold runs with other settings, "
                              f"so none trained (--dry_run lists each); the first: {refused[0]}")


def _each_run_traces_its_own(record):
    """Drops TensorFlow's retracing warning: each run of a sweep builds its own model and functions, which
    TensorFlow counts as one function traced again and again."""
    return "triggered tf.function retracing" not in record.getMessage()


@contextlib.contextmanager
def _quiet_retracing():
    """TensorFlow's retracing warning off for the sweep's runs only."""
    (logger := tf.get_logger()).addFilter(_each_run_traces_its_own)
    try:
        yield
    finally:
        logger.removeFilter(_each_run_traces_its_own)


def run_sweep(runs, *, overwrite=False, source=None, verbose="auto", serving_artifacts=True):
    """Trains every (config, workdir) in `runs`; returns [(config, workdir, outcome)].

    A run identical by construction to an earlier one (`plan`) is not trained: its outcome is the record of the run
    that stands for it (`trainer.record_identical`). Else it is the run's metrics; a `Skipped` reason if another
    process holds its workdir (the same sweep started several times splits the work); `Diverged` where its training
    diverged when it was trained before (its record kept: outcomes.py); or, for a run that failed (e.g. diverged
    now), its error in one line, and the sweep goes on. Runs of one data share one loaded source
    (`source`, if given, is every run's); data that cannot be loaded, fell back to another run's or changed since a
    run finished (DataError), or a network that cannot take it, stops the sweep before `overwrite` deletes or any
    run trains."""
    config_lib.check_runs(runs)
    devices = {config.cpu_devices for config, _ in runs if config.cpu_devices}
    if len(devices) == 1:  # before the data: loading it starts TensorFlow's devices
        try:
            strategies.split_cpu(devices.pop())
        except strategies.DistributeError:
            pass  # TensorFlow started already (a caller's source): each run fails on it, in one line
    loaded = _sources(runs, source)
    for config, _ in runs:  # every data first (one not read, or fallen back onto another's; a size it cannot give)
        if (data := loaded(config)) and config.train_size:  # before any trains (and the smaller sizes), as a dry run
            subsets.check_size(data, config.train_size, 0)  # (its classes present: the run's own check)
    run_data.check_finished_runs([] if overwrite else runs, loaded)  # finished on data changed since: none trains
    check_settings([] if overwrite else runs)  # a rerun with a flag changed: none trains (each was refused alone)
    if overwrite and any(workdirs.started(workdir) for _, workdir in runs):  # a typo deleted the runs, then failed
        check_data_fits(runs, source=source)
    trained_by = plan(runs)
    results = []
    with _quiet_retracing():
        for i, (config, workdir) in enumerate(runs, 1):
            if verbose:
                print(f"[{i}/{len(runs)}] {workdir}", flush=True)
            target = trained_by[i - 1]
            if target != i - 1:
                outcome = _identical(config, workdir, results[target], overwrite)
                if verbose:
                    print(f"  {outcomes.identical_line(results[target][1], outcome)}", flush=True)
                results.append((config, workdir, outcome))
                continue
            keras_state.clear_session()  # fresh graph and layer names for every run
            data = loaded(config)  # data that cannot be read stops the sweep in one line, as it stops one run
            try:
                outcome = trainer.train_and_evaluate(config, workdir, overwrite=overwrite, source=data,
                                                     verbose=verbose, serving_artifacts=serving_artifacts)
            except locks.WorkdirLocked as e:
                outcome = outcomes.Skipped(str(e))
                if verbose:
                    print("  skipped: another process is training it", flush=True)
            except divergence.Before as e:  # its outcome recorded when it was trained: kept, as a finished run is
                outcome = outcomes.Diverged(e.kept)
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


def _data_key(config):
    return tuple(sorted((key, str(value)) for key, value in sources.config_arguments(config).items()))


def _sources(runs, source=None):
    """config -> its loaded data source, each data (--dataset=a,b, --color_mode=grayscale,rgb) loaded once when a run
    first needs it; `source` for every run, refused where the runs' data differ (ValueError)."""
    if source is not None:
        if (count := len({_data_key(config) for config, _ in runs})) > 1:
            raise ValueError(f"source={source.name} is one dataset, but the runs take {count} data settings; "
                             "pass source=None so that each run loads its own")
        return lambda config: source
    loaded, typed = {}, {}

    def load(config):
        key = _data_key(config)
        if key not in loaded:
            data = loaded[key] = sources.load_source(**sources.config_arguments(config))
            typed[key] = config.dataset  # two arms of one data (--dataset=mnist_sample,mnist offline): which fell back
            fell = next((k if d.fallback_reason else key for k, d in loaded.items() if k != key and d.name ==
                         data.name and (d.fallback_reason or data.fallback_reason)), None)
            if fell:
                raise errors.DataError(f"--dataset={typed[fell]} fell back to {data.name} "
                                       f"({loaded[fell].fallback_reason}), which another arm of the sweep trains on "
                                       f"too: the arms would be one data; make {typed[fell]} loadable here, or drop "
                                       "it from the sweep")
        return loaded[key]

    return load


def _identical(config, workdir, trained, overwrite=False):
    """The outcome of a run identical to `trained` = (config, workdir, outcome), recorded as a trained run's (or a
    diverged one's) would be: under its lock, where it holds nothing of other settings; a finished run there kept."""
    _, target_workdir, outcome = trained
    if isinstance(outcome, outcomes.Skipped):
        return outcomes.Skipped(f"identical by construction to {target_workdir}, which another process is training")
    diverged = not isinstance(outcome, dict) and divergence.read(target_workdir)  # this network diverges: recorded
    if diverged and diverged["config"] != trained[0].to_dict():  # another command's: this one's target was refused
        diverged = None
    if not isinstance(outcome, dict) and not diverged:
        return f"identical by construction to {target_workdir}, which failed"
    lock = locks.WorkdirLock(workdir)
    try:
        claim = trainer.claim_workdir(config, workdir, overwrite, lock)
        if "locked" in claim:
            return outcomes.Skipped(claim["locked"])
        divergence.forget_derived(workdir)  # (locked, settings checked) its record of the target's: derived again
        finished = claim["finished"]
        if diverged and not (finished and "identical_to" not in finished):  # (its own finished run is kept)
            line = divergence.identical(workdir, target_workdir, trainer.describe_run(config, diverged["data"]))
            return outcomes.Diverged(line) if isinstance(outcome, outcomes.Diverged) else line  # (as its target)
        if finished and not workdirs.recorded_elsewhere(workdir, target_workdir):
            return finished
        return trainer.record_identical(config, workdir, target_workdir, outcome)  # (again, where moved)
    except divergence.Before as e:
        return outcomes.Diverged(e.kept)
    except errors.USER_ERRORS as e:
        return f"{type(e).__name__}: {' '.join(str(e).split())}"
    finally:
        lock.release()

"""What makes runs one variant, and the label each variant is shown by.

`variant_key` is what runs of one variant share: their recorded config
without the seed and execution details, their resolved sites, precision and
mask generator, and a --keras_model file's model (by content, not path). Runs of
one data read at other paths (two machines' copies, one content) are one
variant (`label_rows`); a config whose `--precision=auto` resolved to
several precisions is compared apart, with a note (`split_notes`).
"""
import collections

from dropzoo import config as config_lib
from dropzoo import records
from dropzoo import sources
from dropzoo import sweep


def variant_key(config, sites=None, precision=None, mask_generator=None, model_digest=None):
    """What runs of one variant share: their recorded config without seed and execution details.

    Fields a run recorded before they existed count at their defaults, so
    older and newer runs of one variant stay one variant. `sites` (the
    resolved sites a run recorded) and `precision` (its resolved policy),
    when given, are part of the key: a run whose placement meant other sites,
    or that trained in another precision, is another variant. So is
    `model_digest`, a --keras_model file's content digest (its architecture
    and weights), in place of its path: another model at one path is another
    variant, one model at two paths (two machines) one.
    """
    ignored = ("seed",) + config_lib.OBSERVATION_ONLY + config_lib.EXECUTION_ONLY
    if precision is not None:  # `auto` and the policy it resolved to are one variant
        ignored += ("precision",)
    if model_digest:
        ignored += ("keras_model",)
    key = tuple(sorted((k, v) for k, v in config_lib.with_defaults(config).items() if k not in ignored))
    return key + (("_sites", sites), ("_precision", precision), ("_mask_generator", mask_generator)) + (
        (("_keras_model", model_digest),) if model_digest else ())


def row_key(row, config=None):
    """variant_key of a comparison row (of `config` in its place, where given)."""
    return variant_key(config or row["config"], row.get("sites"), row.get("precision"), row.get("mask_generator"),
                       row.get("keras_model_sha256"))


def variant_label(config, varying=()):
    """`<model>/<variant>`, computed from a recorded config; `varying` as sweep.variant_name takes it."""
    return f"{config['model']}/{sweep.variant_name(config, varying)}"


def baseline_config(config, baseline):
    """`config` with its placement replaced by the `baseline` placement (same kind, activation, ...)."""
    return {**config, "placement": baseline, "sites": ""}


def without(key, field):
    return tuple(item for item in key if item[0] != field)


def label_rows(rows):
    """Sets each row's "variant" label and "key"; labels tell apart every variant the rows hold.

    A label is `<model>/<variant name>` with the fields that vary among the
    rows; two variants that still share one (other recorded sites, another
    precision) get the difference appended: `[sites ...]`, `[mixed_bfloat16]`.
    """
    for r in rows:
        r["key"] = row_key(r)
    moved = _one_data_read_apart(rows)
    # Named by the precision each run resolved to: `auto` on a bf16 CPU and a pinned bf16 are one variant; not by
    # the --epochs of runs that trained --train_steps (unused there: `-epochs12` would read as 12 epochs), unless
    # those runs' --epochs tell variants apart (a sweep of --epochs beside --train_steps, named by them).
    stepped = {}  # runs of --train_steps alike but for --epochs -> their --epochs
    for r in rows:
        if r["config"].get("train_steps"):
            stepped.setdefault(without(r["key"], "epochs"), set()).add(r["config"].get("epochs"))
    apart = any(len(epochs) > 1 for epochs in stepped.values())
    configs = [{**r["config"], **moved.get(id(r), {}),
                "precision": r.get("precision") or r["config"].get("precision", "auto"),
                **({"epochs": None} if r["config"].get("train_steps") and not apart else {})} for r in rows]
    varying = sweep.varying_fields(configs)
    for r, config in zip(rows, configs):
        r["variant"] = variant_label(config, varying)
    by_label = {}
    for r in rows:
        by_label.setdefault(r["variant"], {}).setdefault(r["key"], []).append(r)
    for label, groups in by_label.items():
        if len(groups) < 2:
            continue
        firsts = [g[0] for g in groups.values()]
        named = [name for name in ("sites", "precision", "mask_generator", "keras_model_sha256")
                 if len({str(r.get(name)) for r in firsts}) > 1]
        # Else a field the label shortens (data at two paths: its file name alone): each in full.
        fields = [] if named else sorted(name for name in config_lib.with_defaults(firsts[0]["config"])
                                         if len({str(config_lib.with_defaults(r["config"]).get(name))
                                                 for r in firsts}) > 1 and name != "seed")
        for runs in groups.values():
            differs = [f"[{name} {str(runs[0].get(name))[:12 if name.endswith('sha256') else None]}]"
                       for name in named] + [f"[{name} {runs[0]['config'].get(name)}]" for name in fields]
            for r in runs:
                r["variant"] = f"{label} {' '.join(differs)}"
    return rows


# Where runs read data they recorded one content of: the data files, and tfds' prepared datasets.
READ_APART = config_lib.DATA_PATHS + ("tfds_data_dir",)


def _one_data_read_apart(rows):
    """Runs whose data was read at other paths (two machines' copies) but recorded one content (`train_sha256`,
    and the test data they were scored on) are keyed, and labelled, by the data paths of the first run of that
    content, and by the dataset one of them names (IDX files read with and without --dataset=fashion_mnist: the
    other recorded --dataset's default, mnist): one variant, paired with its baseline as one data. Returns
    {id(row): those data fields} for the runs read elsewhere."""
    groups, moved = {}, {}
    for r in rows:
        if r.get("train_sha256"):
            groups.setdefault((r["train_sha256"], r.get("data_sha256")), []).append(r)
    for runs in groups.values():
        paths = {name: runs[0]["config"].get(name) for name in READ_APART}
        paths["dataset"] = next((r["config"]["dataset"] for r in runs if r["config"].get("dataset") not in (
            None, sources.DEFAULT_DATASET)), runs[0]["config"].get("dataset"))
        for r in runs:
            if any(r["config"].get(name) != value for name, value in paths.items()):
                r["key"] = tuple((name, paths[name]) if name in paths else (name, value) for name, value in r["key"])
                moved[id(r)] = paths
    return moved


def apart_by_auto(rows):
    """[([labels], {precision: runs}, runs pinned, precisions auto resolved to)] for each config whose
    `--precision=auto` resolved to several precisions, or that trained under auto on seeds its runs pinned in another
    precision lack (a study's seeds added on another machine without its pin). Pinned runs chose theirs: a sweep
    over precisions (auto,float32 on the same seeds; float32,mixed_bfloat16) is a choice."""
    groups = {}
    for r in rows:
        key = variant_key({**r["config"], "precision": "auto"}, r.get("sites"), None, r.get("mask_generator"),
                          r.get("keras_model_sha256"))
        groups.setdefault(key, []).append(r)
    found = []
    for runs in groups.values():
        by_auto, by_pinned = {}, {}
        for r in runs:
            (by_pinned if _pinned(r) else by_auto).setdefault(_precision(r), set()).add(r["seed"])
        split = {q for q, seeds in by_pinned.items() if any(p != q and auto - seeds for p, auto in by_auto.items())}
        if len(by_auto) > 1 or split:
            apart = [r for r in runs if not _pinned(r) or _precision(r) in split]
            found.append((sorted({r["variant"] for r in apart}, key=records.natural_key),
                          collections.Counter(_precision(r) for r in apart), sum(map(_pinned, apart)), len(by_auto)))
    return found


def _precision(row):
    return row.get("precision") or "an unrecorded precision"  # (older records)


def _pinned(row):
    return row["config"].get("precision", "auto") != "auto"  # (auto resolves per machine)


def split_notes(rows):
    """Notes naming each config whose `--precision=auto` resolved differently: compared apart, never pooled.

    Runs of one command from machines whose `auto` resolved differently (bf16
    on one CPU, float32 on another) would otherwise look like one study with
    its seeds split in two without a word.
    """
    notes = []
    for labels, counts, pinned, resolved in apart_by_auto(rows):
        held = "; ".join(f"{precision}: {n} run{'s' * (n != 1)}" for precision, n in sorted(counts.items()))
        runs = f"{pinned} run{'s' * (pinned != 1)} pinned by --precision"
        how = (f"whose --precision=auto resolved to {resolved} precisions on the machines (or environments) that "
               "trained it" + (f", beside {runs} on seeds that differ" if pinned else "") if resolved > 1 else
               f"trained in {len(counts)} precisions on seeds that differ, {runs} and the others under "
               "--precision=auto")
        notes.append(f"{' and '.join(labels)} are one config {how} ({held}), so they are compared "
                     "as separate variants, never pooled; to pool seeds from several machines, train them all with "
                     "one --precision (e.g. --precision=float32)")
    return notes

"""What an image folder named to eval.py means against a run's recorded data.

`--image_dir=DIR` names a folder as training names it: its test split is
IMAGE_TEST_FRACTION of each class, unless `--test_image_dir` names the test
images. Against a trained run that reading can mislead, so eval.py (one
run or a comparison) asks here:

- `is_own_test_folder`: `--image_dir` alone naming the run's own
  `--test_image_dir` means the run's own test data, all of it (alone it
  would mean 20% of that folder);
- `notes`: a folder scored by its split says so, and how to score every
  image in it; scored images the run trained on are said to be, and so is
  a training folder whose split changed since the run held it out
  (`split_changed`: the split's file list is recorded by its sha256);
- `check_classes`: a folder whose class subfolders are not the model's
  classes is refused;
- `trained_images_notes`: arrays (an npz, IDX files) scored for a run that
  hold images of its data's training split are said to, as folders are.
"""
import dataclasses
import json
import os

import tensorflow as tf
from absl import logging

from dropzoo import data_identity
from dropzoo import ood
from dropzoo import readers
from dropzoo import sources
from dropzoo.errors import DataError


def _same_path(a, b):
    return bool(a) and bool(b) and os.path.realpath(a) == os.path.realpath(b)


def is_own_test_folder(origin, given):
    """Whether `given` (data arguments) is `--image_dir=` the run's recorded `--test_image_dir`, alone.

    Options given beside it (`--image_size`, `--color_mode`) must be the ones
    the run recorded.
    """
    others = {k: v for k, v in given.items() if k != "image_dir"}
    recorded = {k: sources.OPTION_DEFAULTS.get(k) if origin.get(k) is None else origin.get(k) for k in others}
    if "image_size" in others:
        others["image_size"] = list(readers.parse_image_size(others["image_size"]) or []) or None
    return (bool(given.get("image_dir")) and bool(origin.get("test_image_dir")) and others == recorded
            and _same_path(given["image_dir"], origin["test_image_dir"]))


def is_training_folder(origin, folder):
    """Whether `folder` is the --image_dir a run of `origin` trained on."""
    return _same_path(folder, origin.get("image_dir"))


def notes(given, scored):
    """The notes on scoring `given` (data arguments): a folder's split, images the runs trained on.

    `scored` [(run's recorded origin, examples scored, run, split changed)]
    for each run scored on `given`, the last a `split_changed` answer; one
    note of each kind, however many runs.
    """
    if not given or not scored:
        return []
    found = []
    if given.get("image_dir") and not given.get("test_image_dir"):  # scored by its split
        counts = " or ".join(map(str, sorted({n for _, n, _, _ in scored})))
        fix = ("" if any(is_training_folder(origin, given["image_dir"]) for origin, _, _, _ in scored) else
               f"; to score every image in it, pass --test_image_dir={given['image_dir']} too")
        found.append(f"scored the test split of {given['image_dir']} ({counts} images: "
                     f"{readers.IMAGE_TEST_FRACTION:.0%} of each class, rounded, at least one image each){fix}")
    folder = given.get("test_image_dir") or given.get("image_dir")
    trained = [run for origin, _, run, _ in scored
               if scores_training_images(origin, given) or holds_training_images(origin, given)]
    if trained:
        found.append(f"{folder} holds images {_runs(trained)} trained on, so its scores there include training "
                     "images, not test scores")
    moved = [run for origin, _, run, changed in scored if changed and not scores_training_images(origin, given)]
    if moved:
        found.append(f"{folder} changed since {_runs(moved)} trained on it: its test split now holds other files "
                     "than were held out, possibly images trained on, so its scores there are not test scores; "
                     "restore the folder, or test on new images with --test_image_dir=DIR")
    return found


def _runs(runs):
    return runs[0] if len(runs) == 1 else f"{len(runs)} runs ({', '.join(runs[:3])}{', ...' if len(runs) > 3 else ''})"


def scores_training_images(origin, given):
    """Whether the images `given` (data arguments) scores include images a run of `origin` trained on.

    The run's training folder scored whole, or by its split where the run
    was tested on another folder; not the split it held out itself (unless
    that changed: `split_changed`).
    """
    trained = origin.get("image_dir")
    if not _same_path(trained, given.get("test_image_dir") or given.get("image_dir")):
        return False
    return bool(given.get("test_image_dir") or origin.get("test_image_dir"))


# Whether a folder scored holds a run's training images, by (its origin, the folder's arguments).
_HOLDS = {}


def holds_training_images(origin, given):
    """Whether the images `given` (an image folder) scores hold, byte for byte, an image a run of `origin` (an
    image folder still here) trained on: a copy of its training folder is no test folder. Read once a pair."""
    if not (given.get("image_dir") and origin.get("image_dir") and os.path.isdir(origin["image_dir"])):
        return False
    key = json.dumps([origin, given], sort_keys=True)
    if key not in _HOLDS:
        level = logging.get_verbosity()
        logging.set_verbosity(logging.ERROR)  # read again: their warnings were said as they were read for the scores
        try:
            trained = data_identity.digests(x for x, _ in sources.load_source(**origin).train.as_numpy_iterator())
            scored = sources.load_source(**given, need_train=False).test.as_numpy_iterator()
            _HOLDS[key] = any(digest in trained for digest in data_identity.digests(x for x, _ in scored))
        except DataError:  # the run's folder changed, or the one given cannot be read: said elsewhere
            _HOLDS[key] = False
        finally:
            logging.set_verbosity(level)
    return _HOLDS[key]


def split_changed(origin, recorded, given, now):
    """Whether `given` (data arguments) scores the split of a run's training folder that changed since.

    `origin` and `recorded` are the run's recorded data origin and details,
    `now` the scored source's details: a folder split for testing records
    the sha256 of its test files' paths ("test_split"), so a folder that
    gained, lost or renamed images shows as another split, which may hold
    images the run trained on.
    """
    if given.get("test_image_dir") or not is_training_folder(origin, given.get("image_dir")):
        return False
    then = ((recorded or {}).get("test_split") or {}).get("test_files_sha256")
    current = ((now or {}).get("test_split") or {}).get("test_files_sha256")
    return bool(then and current and then != current)


def with_run_image_options(given, trained_on, image_shape=None):
    """`given` (load_source arguments), an image folder without color_mode/image_size taking the run's.

    The run's model reads images of the size and channels it trained on: a
    folder named without --color_mode or --image_size is read as the run's
    were (grayscale at their own size would not fit an RGB model). A run
    trained on other data (an .npz of colour images) is read by its recorded
    `image_shape`'s channels, as its export would be.
    """
    if not trained_on or "image_dir" not in given:
        return given
    options = {key: trained_on[key] for key in ("color_mode", "image_size")
               if key not in given and trained_on.get(key) is not None}
    if "color_mode" not in given and "color_mode" not in options and list(image_shape or [])[-1:] == [3]:
        options["color_mode"] = "rgb"
    return {**given, **options}


def check_classes(source, model_classes, run_class_names=None, model="the model"):
    """`source` with labels that are the model's class ids: DataError (one line) where they cannot be.

    A folder's labels are its class subfolders in sorted order. Each is the
    run's class of its name (`run_class_names`, recorded by image-folder runs
    and their exports), or, folders named by number (0, 1, ...), the class of
    that number, to a run whose own classes are not numbers (a run trained on
    data without class names, `run_class_names` empty: MNIST; or a model of
    unknown origin, None: `model`, an export of older code copied out of its
    run): a folder of some of the classes, or of the run's in another order,
    is relabelled to them (a copy of `source`). Other folders are refused:
    nothing says which folder is which class. Other data with class names (a
    tfds dataset) is refused where its names are not the run's, in its order.
    """
    # Only an image folder's labels come from names (its sorted class subfolders); a tfds dataset's are ids.
    from_folders = any((source.origin or {}).get(key) for key in ("image_dir", "test_image_dir"))
    names = source.details.get("class_names") if from_folders else None
    # Labels are class ids: where the run's class folders are numbers other than 0..K-1 in order, class k is not
    # folder k (text order 0, 1, 10, 2, ..., or 1..K).
    numbers = bool(run_class_names) and all(n.isdecimal() for n in run_class_names)  # the run's folders: 0, 1, ...
    shown = next((k for k, n in enumerate(run_class_names) if int(n) != k), None) if numbers else None
    # Other data with class names (a tfds dataset's labels, ids with a name each): label k is the run's class k only
    # where the names say so; it was scored as class k whatever its name (0% for the same classes in another order).
    # A run whose classes are folders 0..K-1 takes labels as those numbers, as its folders say.
    labelled = None if from_folders else source.details.get("class_names")
    if labelled and run_class_names and not _numbered(run_class_names) and not _same_classes(labelled, run_class_names):
        raise DataError(f"{source.name}'s classes {_difference(labelled, run_class_names, in_order=True)}: its label "
                        "k would be scored as the run's class k; evaluate on data with the run's classes in its order "
                        "(an .npz whose labels are the run's class ids)")
    if not names and shown is not None:
        logging.warning("%s: its labels are read as the run's class ids, and the run's class folders are numbers "
                        "other than 0..K-1 in order (%s, ...): label %d scores as folder '%s'; relabel if your labels "
                        "are the folder numbers", source.name, ", ".join(run_class_names[:shown + 2]), shown,
                        run_class_names[shown])
    if not names:
        return source
    ids = _class_ids(names, run_class_names, model_classes)
    if ids is not None and run_class_names and not set(names) <= set(run_class_names):  # numbers to named classes
        logging.warning("%s: its class folders are numbers, each scored as the run's class of that number: %s",
                        source.name, ", ".join(f"{n} as {run_class_names[i]!r}" for n, i in zip(names, ids)))
    if ids is not None:
        return source if ids == list(range(len(ids))) else _relabelled(source, ids)
    decimal = all(name.isdecimal() for name in names)
    if run_class_names is None and not decimal:  # folder k would be scored as class k, right or not
        raise DataError(f"{model} records no class names (copied out of its run, or exported before exports "
                        "carried them), so nothing says which of the test folders is which of its classes; score it "
                        "through its run (eval.py --workdir=RUN, or the export's path inside RUN), name the folders "
                        "by class number (0, 1, ...), or, a SavedModel, give it its classes in order in "
                        'assets.extra/class_names.json: {"class_names": [...]}')
    # Folders named by class number (0, 1, ...) say which class each is, also to a run with named classes (a tfds
    # dataset's 'T-shirt/top' cannot even be a folder's name); a run whose classes were numbers is held to those.
    numbered_run = _numbered_run(run_class_names)  # held to its own numbers' names
    if run_class_names and not (decimal and not numbered_run):
        by_number = "" if numbered_run else f" (or by class number, 0 to {len(run_class_names) - 1})"
        raise DataError(f"the test images' class folders {_difference(names, run_class_names)}: nothing says which "
                        f"of its classes they hold; leave out a class the run did not train on (one added since it "
                        f"trained), or name each folder as the run's class it holds (some of them will do){by_number}")
    if not decimal:  # a run trained on data without class names (MNIST): zero, one, ... would sort eight, five, ...
        raise DataError(f"the model was trained on data without class names, so a folder's class subfolders are "
                        f"its class numbers: name them by number, 0 to {(model_classes or len(names)) - 1} (some of "
                        f"them will do), got {', '.join(names[:6])}{', ...' if len(names) > 6 else ''}")
    beyond = [name for name in names if int(name) >= (model_classes or 0)]
    raise DataError(f"the test images' class folder(s) {', '.join(beyond[:5])} name no class of the model, which "
                    f"answers {model_classes} classes (0 to {(model_classes or 1) - 1}); leave them out")


def _class_ids(names, run_class_names, model_classes):
    """The model's class id of each class folder (`names`, sorted) where the names say it: the run's class of that
    name; for folders named by number, to a run none of whose own classes is named by a number, that number (a
    folder 1/ of a run on 1, 2, 3, x is its class '1', with or without a 0/ beside it). None elsewhere."""
    if run_class_names and set(names) <= set(run_class_names):
        return [list(run_class_names).index(name) for name in names]
    if all(name.isdecimal() for name in names) and not _numbered_run(run_class_names) and all(
            model_classes is None or int(name) < model_classes for name in names):
        return [int(name) for name in names]
    return None


def _relabelled(source, ids):
    """A copy of `source` whose label k (its k-th class folder) is class ids[k], and says which folder is which."""
    table = tf.constant(ids, tf.int64)

    def relabel(split):
        return None if split is None else split.map(lambda image, label: (image, tf.gather(table, label)))

    folders_ = source.details["class_names"]
    return dataclasses.replace(source, train=relabel(source.train), test=relabel(source.test),
                               num_classes=max(ids) + 1, train_labels=None,
                               details={**source.details, "class_ids": dict(zip(folders_, ids))})


def _same_classes(names, trained):
    """Whether label k of data with class `names` is class k of a run that `trained` on its names (numbers: 0 is 00)."""
    numbers = all(n.isdecimal() for n in list(names) + list(trained))
    return [int(n) for n in names] == [int(n) for n in trained] if numbers else list(names) == list(trained)


def _difference(names, trained, in_order=False):
    """How class folder `names` (`in_order`: a dataset's class names, in label order, which must be the run's)
    differ from the classes a run `trained` on, in a few names (of hundreds)."""
    def listed(found):
        return ", ".join(found[:5]) + (f", ... ({len(found)})" if len(found) > 5 else "")

    if in_order and sorted(names) == sorted(trained):  # one set of names: the run's classes in another order
        k = next(k for k, (a, b) in enumerate(zip(names, trained)) if a != b)
        return f"are the run's classes in another order (label {k} is {names[k]!r}, the run's class {k} {trained[k]!r})"
    extra, missing = [n for n in names if n not in trained], [n for n in trained if n not in names]
    mac = readers.other_unicode_form(extra, trained)
    if mac:  # shown escaped: printed, the two forms look alike
        extra = [ascii(n) for n in extra]
    said = [f"include {listed(extra)}, which the run did not train on" if extra else "",
            f"lack {listed(missing)}, which it did" if missing and in_order else ""]
    text = " and ".join(part for part in said if part)
    cased = "" if mac else readers.case_only(extra[:5], trained, "here", "in the run")
    if mac:
        text += " (the run's names in another Unicode form, as a Mac writes them: rename the folders to the run's)"
    elif cased:
        text += (f" (names differ in case only: {cased}; class names are case-sensitive: rename the folders to "
                 "the run's)")
    return text


def _numbered_run(run_class_names):
    """Whether a run has a class named by a number (its folders are held to those names, not read as ids)."""
    return any(name.isdecimal() for name in run_class_names or ())


def _numbered(names):
    """True where the sorted folder names are the class numbers 0, 1, ... in order (so folder k is class k)."""
    return all(name.isdecimal() and int(name) == k for k, name in enumerate(names))


def trained_images_notes(trained_on, data, run, scored):
    """[a note] where arrays scored for a run (`data`: an npz or IDX files) hold images of the training split it
    trained on (`trained_on`, its data's origin), byte for byte: its scores there are not test scores. (Image
    folders are told apart by path: folders.notes.) Data that is neither local files nor the embedded sample is
    not loaded to look."""
    if not any(data.get(k) for k in ("npz", "idx_dir")):
        return []
    seen = ood.training_digests(trained_on)  # (None: not looked up here, as for OOD data)
    if seen is None:
        return []
    try:
        test = sources.load_source(**data, need_train=False)
    except (DataError, OSError, ValueError):
        return []

    def images(split):
        return (image for batch, _ in split.batch(1024).as_numpy_iterator() for image in batch)

    shared = sum(data_identity.digests([image]) <= seen for image in images(test.test))
    return [f"{shared:,} of the {scored:,} images scored are in the training split of {run}'s data (byte for byte), "
            "which it drew its training images from, so its scores there may include training images, not test scores"
            ] if shared else []

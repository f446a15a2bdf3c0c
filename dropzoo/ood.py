"""Out-of-distribution data for eval.py: a tfds name, IDX files, an array file or a folder of images.

Its labels are never used: out-of-distribution detection asks only how unlike
the test images the model finds these images. The kinds, one flag each:

- `--ood_dataset=NAME`: a tfds dataset's test split (with --tfds_data_dir).
- `--ood_idx_dir=DIR`: t10k-*.gz IDX files.
- `--ood_npz=FILE`: an .npz's x_test (or its one array), or an .npy array.
- `--ood_image_dir=DIR`: every image in a folder and its subfolders, read at
  the model's size and channels (`for_model`), as a client would resize them.

The first three must have the model's (H, W, C) already: nothing resizes
arrays (evaluate.py says so, naming --ood_image_dir).
"""
import logging
import os
import re
import zipfile

import numpy as np
from absl import logging as absl_logging

from dropzoo import data_identity
from dropzoo import readers
from dropzoo import sources
from dropzoo.errors import DataError

# eval.py's flag of each kind (load_source's argument name -> the flag).
FLAGS = {"dataset": "--ood_dataset", "idx_dir": "--ood_idx_dir", "npz": "--ood_npz", "image_dir": "--ood_image_dir"}
NPZ_KEY = "x_test"


def arguments(dataset=None, idx_dir=None, npz=None, image_dir=None, tfds_data_dir=None):
    """The OOD data eval.py's flags name ({kind: value}, as load takes it), or None; DataError where several are
    given (one would be scored, the others ignored)."""
    given = {kind: value for kind, value in (("dataset", dataset), ("idx_dir", idx_dir), ("npz", npz),
                                             ("image_dir", image_dir)) if value}
    if len(given) > 1:
        named = [f"{FLAGS[kind]}={value}" for kind, value in given.items()]
        raise DataError(f"give one out-of-distribution source, not {' and '.join(named)}; keep one of them")
    if "dataset" in given and tfds_data_dir:
        given["tfds_data_dir"] = tfds_data_dir
    return given or None


def checked(ood):
    """`ood`, a Python caller's ood= (None, a Source, or a dict naming one source, as `arguments` returns it), as
    `load` takes it (empty values dropped); DataError (one line) for anything else: a string, an unknown key, none
    or two sources (one would be scored), a tfds_data_dir without a dataset."""
    if ood is None or isinstance(ood, sources.Source):
        return ood
    kinds = ", ".join(FLAGS)
    example = "e.g. {'npz': 'noise.npz'}, {'image_dir': 'other_images/'} or {'dataset': 'fashion_mnist'}"
    if not isinstance(ood, dict):
        raise DataError(f"ood= takes a dict naming one source ({kinds}), {example}; got {type(ood).__name__} "
                        f"{ood!r}")
    unknown = sorted(set(ood) - set(FLAGS) - {"tfds_data_dir"})
    if unknown:
        why = (" (an image folder is read at each model's size and channels)" if unknown[0] in (
            "image_size", "color_mode") else "")
        raise DataError(f"ood= has an unknown key {unknown[0]!r}{why}: name one source ({kinds}; tfds_data_dir "
                        f"beside dataset), {example}")
    given = {kind: ood[kind] for kind in FLAGS if ood.get(kind)}
    if len(given) != 1:
        what = f"{len(given)} sources, {' and '.join(given)}: one would be scored; keep one" if given else \
            f"no source (none of {kinds} with a value)"
        raise DataError(f"ood= names {what}, {example}")
    kind, value = next(iter(given.items()))
    if not isinstance(value, (str, os.PathLike)):
        raise DataError(f"ood= {kind} must be a {'name' if kind == 'dataset' else 'path'} (a string), got "
                        f"{type(value).__name__} {value!r}, {example}")
    if ood.get("tfds_data_dir") and "dataset" not in given:
        raise DataError(f"ood= gives tfds_data_dir beside {next(iter(given))}: it is where tensorflow-datasets "
                        "keeps a dataset; drop it, or name the dataset")
    return {**given, **({"tfds_data_dir": ood["tfds_data_dir"]} if ood.get("tfds_data_dir") else {})}


def for_model(ood, image_shape):
    """`ood` read at a model's (H, W, C): an image folder at its size and channels (others are as they are)."""
    if not ood or isinstance(ood, sources.Source) or "image_dir" not in ood or image_shape is None:
        return ood
    height, width, channels = (int(d) for d in image_shape)
    return {**ood, "image_size": f"{height},{width}", "color_mode": "rgb" if channels == 3 else "grayscale"}


# The training-split digests of each run's data (its recorded origin): one load for a comparison's runs.
_TRAINED = {}
# Where a run's training images are looked up: local files and the embedded sample (tfds data is not loaded to look:
# offline it would be another dataset, the sample; online, a download).
_LOCAL = ("image_dir", "npz", "idx_dir")


def training_digests(origin):
    """The per-image digests of the training split `origin` (a run's recorded load_source arguments) names, or None
    where it is not looked up here: tfds data, or files no longer here (folders.trained_images_notes alike)."""
    origin = dict(origin or {})
    local = {k: v for k, v in origin.items() if k in _LOCAL + ("test_image_dir", "image_size", "color_mode")}
    if not any(origin.get(k) for k in _LOCAL):
        if origin.get("dataset") != sources.SAMPLE_NAME:
            return None
        local = {"dataset": sources.SAMPLE_NAME}
    key = repr(sorted(local.items()))
    if key not in _TRAINED:
        verbosity = absl_logging.get_verbosity()
        absl_logging.set_verbosity(absl_logging.ERROR)  # what training said of its data (files not read) is said
        try:
            source = sources.load_source(**local, need_train=True)
            _TRAINED[key] = data_identity.digests(image for images, _ in source.train.batch(1024).as_numpy_iterator()
                                                  for image in images)
        except (DataError, OSError, ValueError, TypeError):  # moved, changed, or arguments older code recorded
            _TRAINED[key] = None
        finally:
            absl_logging.set_verbosity(verbosity)
    return _TRAINED[key]


def scored_training(origin):
    """`origin` (the data an export copied out of its run is scored on), whose training split its OOD data is held
    apart from as the run's would be, where it has one: its files' where they hold one, a tfds dataset's (not looked
    up here: said unchecked); None where its files hold a test split alone (an .npz of x_test, t10k IDX files)."""
    return origin if not any(origin.get(k) for k in _LOCAL) or training_digests(origin) is not None else None


def apart(test_source, ood_source, what, trained_on=None, key=None, trained=None):
    """(the OOD test split without the test images, and the run's training images where `trained_on` (its data's
    origin) can be looked up here (`trained` names whose, `what` by default), {the result's OOD fields}):
    `ood_in_test_left_out`, `ood_in_train_left_out`, and with `trained_on`, `ood_train_checked` (False where its
    training images could not be looked up)."""
    train = training_digests(trained_on) if trained_on is not None else None
    ood_test, in_test, in_train = data_identity.ood_apart(sources.test_images(test_source), ood_source, what,
                                                          key=key and (*key, repr(trained_on)), train=train,
                                                          trained=trained)
    fields = {"ood_data_source": ood_source.name, **({"ood_in_test_left_out": in_test} if in_test else {}),
              **({"ood_in_train_left_out": in_train} if in_train else {})}
    return ood_test, {**fields, **({"ood_train_checked": train is not None} if trained_on is not None else {})}


def unchecked(result, trained_on):
    """Whether a saved evaluation's OOD scores were computed without looking for the run's training images, which
    can be looked up now (its training data is here again, or the evaluation is older than the check)."""
    return bool(result.get("ood_data_source")) and not result.get("ood_train_checked") and \
        training_digests(trained_on) is not None


def load(ood):
    """The OOD data's Source (its labels unused: 0 where it has none); its errors name the --ood_* flag. A Source
    (a Python caller's own) is itself."""
    if isinstance(ood, sources.Source):
        return ood
    if "npz" in ood:
        return _arrays(ood["npz"])
    if "image_dir" in ood:
        return _folder(ood["image_dir"], ood.get("image_size"), ood.get("color_mode", "grayscale"))
    try:
        return sources.load_source(**ood, need_train=False)
    except DataError as e:  # the loaders name the flags of the data under test: name OOD data's own
        message = str(e).replace("(a folder with one subfolder of images per class)", "(a folder of images)")
        message = re.sub(r"--(idx_dir|dataset|npz|image_dir)\b", r"--ood_\1", message)
        raise type(e)(f"out-of-distribution data: {message}") from None  # (UnknownDataError stays one)


def _arrays(path):
    """Source of an .npz's x_test (or its one array) or an .npy's array: uint8 [N, H, W(, C)] images."""
    path = os.path.abspath(path)
    what = f"--ood_npz {path}"
    if not os.path.isfile(path):
        problem = "is a directory (a folder of images: --ood_image_dir)" if os.path.isdir(path) else "does not exist"
        raise DataError(f"{what} {problem}; give an .npz file whose {NPZ_KEY} holds uint8 images")
    if not zipfile.is_zipfile(path) and not readers.is_npy(path):  # np.load would read text as pickled data
        raise DataError(f"{what} is not an .npz or .npy file; save the images with np.savez(path, {NPZ_KEY}=images)")
    try:
        with np.load(path, allow_pickle=False) as held:  # an .npz (a zip); an .npy is one array, not closable
            names = held.files
            key = NPZ_KEY if NPZ_KEY in names else names[0] if len(names) == 1 else None
            images = held[key] if key else None
            labels = _labels(held) if key == NPZ_KEY else None
    except (AttributeError, TypeError):  # np.load gave an .npy's array
        images, key, names, labels = np.load(path, allow_pickle=False), "the array", None, None
    except ValueError as e:
        unsafe = "Object arrays" in str(e)
        raise DataError(f"{what}: " + ("it holds an object array, which would have to be unpickled (unsafe); save "
                                       "uint8 images" if unsafe else f"cannot be read ({' '.join(str(e).split())})")
                        ) from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{what} is not a readable .npz or .npy file ({type(e).__name__}); save the images with "
                        f"np.savez(path, {NPZ_KEY}=images)") from None
    if images is None:
        raise DataError(f"{what} has no {NPZ_KEY} (it holds {', '.join(names) or 'nothing'}); save the images as "
                        f"np.savez(path, {NPZ_KEY}=images)")
    if labels is None or np.shape(labels) != np.shape(images)[:1]:
        labels = np.zeros(len(images) if np.ndim(images) else 0, np.int64)
    try:
        return sources.array_source(f"npz:{path}", None, (images, labels), origin={"ood_npz": path})
    except DataError as e:
        raise DataError(f"out-of-distribution data: {str(e).replace('x_test', key)}") from None


def _labels(held):
    """An .npz's y_test where they are class ids, else None. They are not used: kept, the file is known by the
    fingerprint load_source gives it (a copy of the test data is refused); -1 for "unknown" must not refuse it."""
    try:
        labels = held["y_test"] if "y_test" in held.files else None
    except ValueError:  # an object array: never unpickled
        return None
    if labels is None or not np.issubdtype(labels.dtype, np.integer) or labels.ndim != 1 or not labels.size:
        return None
    return labels if 0 <= labels.min() and labels.max() <= readers.MAX_CLASS_ID else None


def _folder(root, image_size, color_mode):
    """Source of every image below `root` (sorted paths), at `image_size` ('H,W', the model's) and `color_mode`."""
    root = os.path.abspath(root)
    if not os.path.isdir(root):
        problem = "is a file, not a directory" if os.path.exists(root) else "does not exist"
        raise DataError(f"--ood_image_dir {root} {problem}; give a folder of images (subfolders are read too)")
    paths, skipped, seen = [], [], {os.path.realpath(root)}
    for directory, folders, names in os.walk(root, followlinks=True):  # linked folders too (--image_dir reads them)
        kept = []
        for folder in sorted(f for f in folders if not f.startswith(".")):
            real = os.path.realpath(os.path.join(directory, folder))
            if real not in seen:  # each folder once: no loops, no folder and its link both
                seen.add(real)
                kept.append(folder)
        folders[:] = kept
        for name in sorted(n for n in names if not n.startswith(".")):
            (paths if name.lower().endswith(readers.IMAGE_EXTENSIONS) else skipped).append(
                os.path.join(directory, name))
    if not paths:
        raise DataError(f"--ood_image_dir {root} has no images ({', '.join(readers.IMAGE_EXTENSIONS)}) in it or its "
                        "subfolders; give a folder of images")
    if skipped:
        logging.warning("--ood_image_dir %s: %d file(s) other than %s are not read, e.g. %s", root, len(skipped),
                        ", ".join(readers.IMAGE_EXTENSIONS), os.path.relpath(skipped[0], root))
    size = readers.parse_image_size(image_size)
    try:
        images = readers.read_images(paths, size, color_mode, model="the model")
    except DataError as e:  # a file's problem: say it is the OOD folder's
        raise type(e)(f"--ood_image_dir {root}: {e}") from None
    origin = {"ood_image_dir": root, "image_size": list(size) if size else None, "color_mode": color_mode}
    return sources.array_source(f"images:{root}", None, (images, np.zeros(len(images), np.int64)), origin=origin)

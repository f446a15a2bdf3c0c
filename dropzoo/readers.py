"""File formats a data source reads into NumPy arrays, each problem one line naming the file and the fix.

- IDX (dropzoo/idx.py): the original MNIST / Fashion-MNIST `.gz` files.
- `.npz` (`read_npz`): x_train, y_train, x_test, y_test arrays, read without unpickling.
- image folders (`list_image_folder`, `read_images`): one subfolder of
  PNG/JPEG/BMP/GIF files per class, decoded with Pillow, grayscale or RGB,
  optionally resized; an image whose header promises an absurd pixel count is
  refused before it is decoded.

Each reader returns uint8 images [N, H, W, C] and int64 labels [N], and
raises `DataError` (one line) for anything a user can fix.
"""
import hashlib
import os
import unicodedata
import zipfile

import numpy as np
from absl import logging

from dropzoo.errors import DataError

# ------------------------------------------------------------------- npz

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
# Past it a label is no class id (a million-way softmax), and past int64 it would wrap to a negative one.
MAX_CLASS_ID = 999_999


def read_npz(path, need_train=True):
    """x_train, y_train, x_test, y_test of an `.npz` (uint8 [N, H, W] or [N, H, W, C] images, integer labels).

    Read with allow_pickle=False: an object array is refused, never unpickled. `need_train`: it is trained on
    (not only tested), so its test split must hold every class it trains on; without, only x_test and y_test are
    read (x_train and y_train are None).
    """
    save = f"np.savez(path, {', '.join(f'{k}={k}' for k in NPZ_KEYS)})"
    if os.path.isdir(path):
        raise DataError(f"--npz {path} is a directory; give the path of an .npz file holding {', '.join(NPZ_KEYS)} "
                        "(a folder of images per class: --image_dir)")
    if not os.path.isfile(path):
        raise DataError(f"--npz {path} does not exist; give the path of an .npz file holding "
                        f"{', '.join(NPZ_KEYS)}")
    if not zipfile.is_zipfile(path):  # np.load would read an .npy as one array, and text as pickled data
        kind = "an .npy file (one array)" if is_npy(path) else "not an .npz archive"
        raise DataError(f"{path} is {kind}; save the four arrays in one file with {save}")
    needed = NPZ_KEYS if need_train else NPZ_KEYS[2:]  # scoring reads the test split alone
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in needed if key not in archive.files]
            held = ', '.join(archive.files) or 'nothing'
            if not missing:
                arrays = {key: archive[key] for key in needed}
    except ValueError as e:
        if "Object arrays" in str(e):
            raise DataError(f"{path} holds an object array, which would have to be unpickled (unsafe: it can run "
                            "code); save plain numeric arrays: uint8 images and integer labels") from None
        raise DataError(f"{path} is not a readable .npz file ({' '.join(str(e).split())}); save it with "
                        f"{save}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path} is not a readable .npz file ({type(e).__name__}: {e}); save it with {save}") \
            from None
    if missing:
        raise DataError(f"{path} lacks {', '.join(missing)} (it holds {held}); save it with {save}")
    train, test = check_arrays(path, (arrays["x_train"], arrays["y_train"]) if need_train else None,
                               (arrays["x_test"], arrays["y_test"]))
    return (*(train or (None, None)), *test)


def check_arrays(where, train, test, every_class_tested=True):
    """((x_train, y_train) or None, (x_test, y_test)) as uint8 [N, H, W, C] images and int64 labels, or a
    DataError naming the problem and the fix: other dtypes or shapes, labels that are no class ids shared by
    both splits (check_class_ids). `train` may be None (a test split alone)."""
    train = None if train is None else _checked_arrays(where, "train", *map(np.asarray, train))
    test = _checked_arrays(where, "test", *map(np.asarray, test))
    if train is None:
        return None, test
    if train[0].shape[1:] != test[0].shape[1:]:
        raise DataError(f"{where}: x_train images are {train[0].shape[1:]} but x_test images are "
                        f"{test[0].shape[1:]}; give both splits the same image shape")
    check_class_ids(where, train[1], test[1], every_class_tested=every_class_tested)
    return train, test


def is_npy(path):
    with open(path, "rb") as f:
        return f.read(6) == b"\x93NUMPY"


def check_class_ids(where, train_labels, test_labels, names=("y_train", "y_test"), every_class_tested=True):
    """DataError where the labels are not class ids 0..K-1 of K >= 2 classes shared by both splits (a test
    label past the training's, one class; with `every_class_tested`, a class trained on but never tested); a
    warning where a class id below the largest has no training example (labels 1..K?): its output is trained
    only to stay off."""
    train_name, test_name = names
    counts = np.bincount(train_labels)
    num_classes = len(counts)
    if test_labels.max() >= num_classes:
        raise DataError(f"{where}: {test_name} has label {int(test_labels.max())}, but {train_name}'s labels only go "
                        f"up to {num_classes - 1}; labels are class ids 0..K-1 shared by both splits")
    present = np.flatnonzero(counts)
    if len(present) < 2:
        raise DataError(f"{where}: {train_name} holds one class ({int(present[0])}); a classifier needs examples "
                        "of at least 2")
    untested = sorted(set(present) - set(np.unique(test_labels))) if every_class_tested else []
    if untested:  # as a test folder without one of the classes: the accuracy would cover some classes only
        shown = ", ".join(str(int(k)) for k in untested[:5]) + (", ..." if len(untested) > 5 else "")
        raise DataError(f"{where}: {test_name} has no example of class(es) {shown} that {train_name} trains on, so "
                        "the test accuracy would cover some classes only; give a test split with every class")
    missing = np.flatnonzero(counts == 0)
    if len(missing):
        shown = ", ".join(str(int(k)) for k in missing[:5]) + (", ..." if len(missing) > 5 else "")
        shift = "; labels 1..K? subtract 1" if list(missing) == [0] else ""
        logging.warning("%s: %s has no example of class %s (of 0..%d): the model gets an output for it that "
                        "training only keeps off; labels are class ids 0..K-1%s", where, train_name, shown,
                        num_classes - 1, shift)


# A split whose brightest pixel is this dark is pixels of another range (0..1 binarized, 0..16 as sklearn's digits)
# read as raw 0-255 values.
DARKEST_BRIGHTEST = 31


def _checked_arrays(path, split, images, labels):
    """uint8 [N, H, W, C] images and int64 [N] labels, or a DataError naming the problem and the fix."""
    x, y = f"x_{split}", f"y_{split}"
    if images.dtype != np.uint8:
        hint = ""
        if np.issubdtype(images.dtype, np.floating) and images.size and np.all(np.isfinite(images)):
            low, high = float(images.min()), float(images.max())
            if 0 <= low and high <= 1:
                hint = " (pixels scaled to [0, 1]: np.round(x * 255).astype(np.uint8))"
            elif 0 <= low and high <= 255:
                hint = " (pixels 0-255: np.round(x).astype(np.uint8))"
        elif np.issubdtype(images.dtype, np.integer) and images.size:
            low, high = int(images.min()), int(images.max())
            # (.astype(np.uint8) alone wraps 16-bit pixels modulo 256 without a word)
            hint = (" (its values are 0-255: x.astype(np.uint8))" if 0 <= low and high <= 255 else
                    f" (its values span {low}..{high}: rescale them to 0-255 by the range the pixels can take, e.g. "
                    "(x // 257).astype(np.uint8) for 16-bit ones, (x // 16) for 12-bit ones; .astype(np.uint8) "
                    "alone wraps them modulo 256)")
        raise DataError(f"{path}: {x} is {images.dtype}; the zoo takes raw uint8 pixels (0-255), which it scales "
                        f"itself: convert {x}{hint}")
    if images.ndim == 3:
        images = images[..., np.newaxis]
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or not len(images) or 0 in images.shape[1:3]:
        first = images.ndim == 4 and images.shape[1] in (1, 3) and images.shape[-1] not in (1, 3)
        hint = f" (channels first: np.moveaxis({x}, 1, -1))" if first else ""
        raise DataError(f"{path}: {x} has shape {images.shape}; give [N, H, W] (grayscale) or [N, H, W, C] images "
                        f"with C = 1 or 3, N > 0 and H, W > 0{hint}")
    brightest = int(images.max())
    if 0 < brightest <= DARKEST_BRIGHTEST:  # scaled by 1/255 as raw pixels: the images would be all but black
        logging.warning("%s: %s's brightest pixel is %d of 255 (%s?); the zoo takes raw uint8 pixels (0-255) and "
                        "scales them by 1/255, so these are near black: %s", path, x, brightest,
                        "pixels 0 and 1, binarized" if brightest == 1 else f"pixels of another range, 0..{brightest}",
                        "multiply by 255" if brightest == 1 else
                        f"rescale them, e.g. (x.astype(np.uint16) * 255 // {brightest}).astype(np.uint8)")
    if not np.issubdtype(labels.dtype, np.integer) or labels.shape != (len(images),):
        flat = (f", e.g. {y}.reshape(-1)" if labels.shape == (len(images), 1) else
                f", e.g. {y}.argmax(axis=1) (one-hot)" if labels.ndim == 2 and len(labels) == len(images) else
                f" (names as text: np.unique({y}, return_inverse=True)[1], in the order np.unique gives)"
                if labels.dtype.kind in "US" else "")
        raise DataError(f"{path}: {y} is {labels.dtype} {labels.shape}; give one integer class id per image "
                        f"({len(images)} of them){flat}")
    if labels.min() < 0:
        raise DataError(f"{path}: {y} has the negative label {int(labels.min())}; labels are class ids 0..K-1")
    if int(labels.max()) > MAX_CLASS_ID:
        raise DataError(f"{path}: {y} has the label {int(labels.max())}; labels are class ids 0..K-1")
    return np.ascontiguousarray(images), labels.astype(np.int64)


# --------------------------------------------------------- image folders

# A folder without --test_image_dir: this fraction of each class is held out to test (split_files).
IMAGE_TEST_FRACTION = 0.2
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
# An image with more pixels than this is refused from its header, before it is decoded (a
# decompression bomb: a few KB of PNG can decode to gigabytes). 6,000 x 5,500.
MAX_IMAGE_PIXELS = 33_000_000
COLOR_MODES = {"grayscale": "L", "rgb": "RGB"}
# Pillow modes of more than 8 bits a channel.
WIDE_MODES = {"I;16": "16-bit", "I;16B": "16-bit", "I;16L": "16-bit", "I;16N": "16-bit", "I": "32-bit integer",
              "F": "32-bit float"}


def first_out_of_number_order(names):
    """Where class folders named by numbers, in text order (0, 1, 10, 2, ...: Keras' order), first leave the
    numbers' order: that class id is not its folder's number. None where they keep it, or are not all numbers."""
    if not names or not all(name.isdecimal() for name in names):  # '²' is a digit, not a number int() reads
        return None
    by_number = sorted(names, key=int)
    return next((k for k, (name, number) in enumerate(zip(names, by_number)) if name != number), None)


def _check_entry(directory, name, what):
    """DataError for a link to nothing among the class folders: a class on a disk not mounted would be a class
    less, said only among the files not read. (A link named as an image, beside the class folders, is not read.)"""
    path = os.path.join(directory, name)
    if os.path.islink(path) and not os.path.exists(path) and not name.lower().endswith(IMAGE_EXTENSIONS):
        raise DataError(f"{what} {directory}: {name} is a link to {os.readlink(path)}, which does not exist (moved, "
                        "or on a disk not mounted?); restore it or remove the link")


def other_unicode_form(names, known):
    """Whether every one of `names` is one of the `known` names written in another Unicode form (a Mac writes
    'é' as 'e' + U+0301): printed, the two look alike."""
    forms = {unicodedata.normalize("NFC", n) for n in known}
    return bool(names) and all(unicodedata.normalize("NFC", n) in forms for n in names)


def case_only(names, classes, here, there):
    """"'a' `here`, 'A' `there`" for each of `names` that is one of `classes` but for case ('' where none)."""
    return ", ".join(f"{name!r} {here}, {c!r} {there}" for name in names for c in classes
                     if c != name and c.casefold() == name.casefold())


def check_test_classes(test_root, test_classes, root, classes):
    """DataError where the test folder `test_root` has class folders the training folder `root` lacks (with a word
    where they are its names in another Unicode form, shown escaped: the two lists printed alike)."""
    unknown = sorted(set(test_classes) - set(classes))
    if not unknown:
        return
    mac = other_unicode_form(unknown, classes)
    shown = ", ".join(map(ascii if mac else repr, unknown))
    cased = case_only(unknown, classes, "here", "in --image_dir")
    raise DataError(f"--test_image_dir {test_root} has class folder(s) {shown} that --image_dir {root} lacks; both "
                    "take the same class subfolders"
                    + (" (these are its names in another Unicode form, as a Mac writes them: rename the test folders "
                       "as the training folders are named)" if mac else
                       f" (names differ in case only: {cased}"
                       "; class names are case-sensitive: rename the test folders as the training folders are named)"
                       if cased else ""))


def list_image_folder(directory, what="--image_dir", training=True):
    """(sorted class names, [(path, class index)]) of a folder with one subfolder of images per class."""
    if not os.path.isdir(directory):
        problem = "is a file, not a directory" if os.path.exists(directory) else "does not exist"
        raise DataError(f"{what} {directory} {problem}; give a folder with one subfolder of images per "
                        "class (the class names are the subfolders' names)")
    entries = sorted(e for e in os.listdir(directory) if not e.startswith("."))
    for entry in entries:
        _check_entry(directory, entry, what)
    classes = [e for e in entries if os.path.isdir(os.path.join(directory, e))]
    loose = [e for e in entries if e.lower().endswith(IMAGE_EXTENSIONS)]
    if loose and not classes:
        raise DataError(f"{what} {directory} holds images but no class subfolders; put each class's images in a "
                        "subfolder named after the class, e.g. DIR/cat/1.png, DIR/dog/2.png")
    # (a folder only scored may hold one of the model's classes; a test folder short of classes is said by name)
    if len(classes) < (2 if training and what == "--image_dir" else 1):
        raise DataError(f"{what} {directory} has {len(classes)} class subfolder(s); "
                        + ("a classifier needs at least 2, one subfolder of images per class" if training else
                           "give it one subfolder of images per class (each named as the model's class it holds)"))
    # Files beside the class folders (a stray image, notes.txt): not read, and said.
    moved = first_out_of_number_order(classes)
    if what == "--image_dir" and training and moved is not None:  # (scored, folders are matched by name)
        by_number = sorted(classes, key=int)
        start = f"; padded too, ids start at 0: folder '{by_number[0]}' would be class 0" * (int(by_number[0]) > 0)
        logging.warning("%s %s: its class folders are numbers, ordered as text, as Keras orders them (%s, ...): class "
                        "id %d is folder '%s', not folder '%s'; labels meant as the numbers would not match (pad them: "
                        "01, 02, ..., 10)%s", what, directory, ", ".join(classes[:moved + 2]), moved, classes[moved],
                        by_number[moved], start)
    files, skipped = [], sorted(set(entries) - set(classes))
    for index, name in enumerate(classes):
        folder = os.path.join(directory, name)
        entries = [f for f in os.listdir(folder) if not f.startswith(".")]
        nested = [f for f in entries if os.path.isdir(os.path.join(folder, f))]  # (a folder named x.png too)
        images = sorted(f for f in entries if f.lower().endswith(IMAGE_EXTENSIONS) and f not in nested)
        read = set(images) | set(nested)
        other = sorted(f for f in entries if f not in read)
        if not images:
            inside = f"; its subfolders ({', '.join(sorted(nested))}) are not read" if nested else ""
            kinds = f"; it holds {len(other)} other file(s), e.g. {other[0]}" if other else ""
            splits = {c.lower(): c for c in classes}
            train, test = (next((splits[k] for k in keys if k in splits), None) for keys in (
                ("train", "training"), ("test", "testing", "val", "valid", "validation")))
            fix = (f"a folder of splits: pass --image_dir={os.path.join(directory, train)} --test_image_dir="
                   f"{os.path.join(directory, test)}" if nested and train and test else
                   "add its images to it (or convert them) or remove the folder")
            raise DataError(f"class folder {folder} has no images ({', '.join(IMAGE_EXTENSIONS)}){inside}{kinds}; "
                            f"{fix}")
        skipped += [os.path.join(name, f) + "/" for f in sorted(nested)]
        skipped += [os.path.join(name, f) for f in other]
        files += [(os.path.join(folder, f), index) for f in images]
    if skipped:
        logging.warning("%s %s: %d entr%s not read (subfolders, files beside the class folders, and files other than "
                        "%s): %s", what, directory, len(skipped), "y is" if len(skipped) == 1 else "ies are",
                        ", ".join(IMAGE_EXTENSIONS), ", ".join(skipped[:5]) + (", ..." if len(skipped) > 5 else ""))
    return classes, files


SCORED = "scored"  # read_images' `model` for test images read to be scored, in the colour mode of a run or the flags
EXPORT = "the export"  # read_images' `model` for images a client sends to an export: any resize said


def read_images(paths, size=None, color_mode="grayscale", model=None):
    """uint8 [N, H, W, C] of the image files at `paths` (C = 1 for grayscale, 3 for rgb).

    With `size` (H, W), each image is resized to it with bilinear
    interpolation (PIL's, on uint8 pixels: what a client must do too);
    without, every image must already have one size. `model`: what chose the
    size and colour mode (else the flags did, for training; SCORED: for
    scoring, the run's or the flags'), named in the colour warning.
    """
    from PIL import Image  # imported here: only image folders need it
    from PIL import ImageOps

    if color_mode not in COLOR_MODES:
        raise DataError(f"unknown color mode {color_mode!r}; valid: {', '.join(COLOR_MODES)}")
    _check_fits_in_memory(len(paths), size, color_mode)
    out, first, colour, transparent, unreadable, gray, squashed, resized = [], None, [], [], [], [], [], []
    for path in paths:
        try:
            with Image.open(path) as image:
                width, height = image.size  # from the header: nothing decoded yet
                if width * height > MAX_IMAGE_PIXELS:
                    raise DataError(f"{path} is {width} x {height} pixels, more than the {MAX_IMAGE_PIXELS:,} an "
                                    "image may have here (a decompression bomb?); shrink or remove it")
                if image.mode in WIDE_MODES:  # Pillow's convert clips them to 255: nearly white images
                    raise DataError(f"{path} has {image.mode} pixels ({WIDE_MODES[image.mode]}); images are read as "
                                    "8-bit: save it as an 8-bit PNG (e.g. scaled by 255 / its maximum)")
                if color_mode == "rgb" and image.mode in ("1", "L", "LA"):
                    gray.append(path)
                if color_mode == "grayscale" and image.mode not in ("1", "L", "LA"):
                    rgb = np.asarray(image.convert("RGB"))  # RGB, a palette, CMYK, ...
                    if (rgb.max(axis=-1) != rgb.min(axis=-1)).any():
                        colour.append(path)
                # Upright, as viewers show it: a camera's EXIF orientation (a portrait photo stored sideways).
                upright = ImageOps.exif_transpose(image)
                if _has_transparency(upright):
                    transparent.append(path)
                width, height = upright.size
                pixels = upright.convert(COLOR_MODES[color_mode])
                if size is not None and (width, height) != (size[1], size[0]):
                    resized.append(f"{path}, {width}x{height}")
                    if abs(width * size[0] - height * size[1]) > max(width, height):  # not the size's shape
                        squashed.append(f"{path}, {width}x{height}")
                    pixels = pixels.resize((size[1], size[0]), Image.BILINEAR)
                array = np.asarray(pixels, np.uint8)
        except DataError:
            raise
        except (OSError, ValueError, Image.DecompressionBombError) as e:  # all named at once: not one per rerun
            unreadable.append(f"{path} ({type(e).__name__}: {' '.join(str(e).split())[:200]})")
            continue
        if first is None:
            first = (path, array.shape)
        elif array.shape != first[1]:
            raise DataError(f"images have different sizes: {first[0]} is {first[1][0]}x{first[1][1]}, {path} is "
                            f"{array.shape[0]}x{array.shape[1]} (height x width); pass --image_size=H,W to resize "
                            "them all")
        out.append(array)
    if unreadable:
        unreadable.sort()
        more = f"; {len(unreadable) - 3} more" if len(unreadable) > 3 else ""
        raise DataError(f"{len(unreadable)} file(s) cannot be read as images: {'; '.join(unreadable[:3])}{more}; "
                        "remove them or replace them with PNG/JPEG/BMP/GIF files")
    colour = colour and f"{len(colour)} of {len(paths)} image(s) have colours (e.g. {colour[0]})"
    if colour and model == SCORED:
        logging.warning("%s, and images are read as grayscale (the run's colour mode, or --color_mode="
                        "grayscale, the default); a model that takes colour needs --color_mode=rgb", colour)
    elif colour and model:
        logging.warning("%s, and images are read as grayscale, as %s takes them", colour, model)
    elif colour:
        logging.warning("%s, and images are read as grayscale (--color_mode=grayscale, the default); "
                        "to train on colour pass --color_mode=rgb (a grayscale run scores them gray)", colour)
    if gray:  # a colour model scored on gray images, or trained on a few among colour ones: worth a word
        logging.warning("%d of %d image(s) are grayscale (e.g. %s) and are read as rgb, each channel the same gray",
                        len(gray), len(paths), gray[0])
    if resized and model == EXPORT:  # (--image_size, the flags' or the run's, resizes by request; OOD folders too)
        logging.warning("%d of %d image(s) are not %dx%d (width x height; e.g. %s) and are resized to it (bilinear, "
                        "as --image_size resizes), the size the export takes", len(resized), len(paths), *size[::-1],
                        resized[0])
    if squashed:
        logging.warning("%d of %d image(s) have another shape than %dx%d (width x height; e.g. %s) and are "
                        "stretched to it, not cropped", len(squashed), len(paths), size[1], size[0], squashed[0])
    if transparent:  # what lies under it is read, not the background a viewer draws: a black sheet, often
        logging.warning("%d image(s) have transparent pixels (e.g. %s); they are read without their transparency, "
                        "so the colour stored under it shows (black in most files), not the background a viewer "
                        "draws: flatten them onto their background first (Pillow: Image.alpha_composite(Image.new("
                        "'RGBA', im.size, 'white'), im.convert('RGBA')))", len(transparent), transparent[0])
    images = np.stack(out)
    return images[..., np.newaxis] if images.ndim == 3 else images


def _has_transparency(image):
    """Whether an image has pixels that are not opaque (an alpha channel, or a palette/colour marked transparent)."""
    if "A" not in image.getbands() and "transparency" not in image.info:
        return False
    return image.convert("RGBA").getchannel("A").getextrema()[0] < 255


def _check_fits_in_memory(count, size, color_mode):
    """DataError where `count` images at `size` would not fit in half of this machine's memory."""
    if size is None or not hasattr(os, "sysconf"):
        return
    needed = count * size[0] * size[1] * (3 if color_mode == "rgb" else 1)
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return
    try:  # a container's limit (cgroup v2), where lower
        with open("/sys/fs/cgroup/memory.max") as f:
            memory = min(memory, int(f.read()))
    except (OSError, ValueError):  # none, or "max"
        pass
    if needed > memory / 2:
        raise DataError(f"{count:,} images at --image_size={size[0]},{size[1]} take {needed / 2**30:.1f} GiB, more "
                        f"than half of this machine's {memory / 2**30:.1f} GiB of memory; give a smaller --image_size")


def parse_image_size(text):
    """(H, W) from 'H,W' (or a sequence of two ints); None for None or ''."""
    if text is None or text == "":
        return None
    try:
        size = tuple(int(str(p).strip()) for p in (text.split(",") if isinstance(text, str) else list(text)))
    except (TypeError, ValueError):  # (an int: one side, not H,W)
        size = ()
    if len(size) != 2 or min(size) < 1:
        raise DataError(f"--image_size must be H,W in pixels, e.g. 28,28 or 32,32; got {text!r}")
    if size[0] * size[1] > MAX_IMAGE_PIXELS:  # every image is held in memory at this size
        raise DataError(f"--image_size={size[0]},{size[1]} is {size[0] * size[1]:,} pixels an image, more than the "
                        f"{MAX_IMAGE_PIXELS:,} an image may have here; give a smaller size (e.g. 224,224)")
    return size


def check_test_folder_apart(image_dir, test_image_dir):
    """DataError where --test_image_dir is --image_dir: a run would be tested on the images it trains on."""
    if test_image_dir and os.path.realpath(test_image_dir) == os.path.realpath(image_dir):
        raise DataError(f"--test_image_dir {os.path.abspath(test_image_dir)} is --image_dir: the run would be tested "
                        "on the images it trains on; give a folder of other images, or drop --test_image_dir to hold "
                        f"out {IMAGE_TEST_FRACTION:.0%} of each class")


def split_files(files, root):
    """(train, test) files: per class, the IMAGE_TEST_FRACTION whose path hash (of the name's bytes: any name, UTF-8
    or not) sorts first (seed-free, stable)."""
    by_class = {}
    for path, label in files:
        by_class.setdefault(label, []).append(path)
    train, test = [], []
    for label, paths in sorted(by_class.items()):
        ordered = sorted(paths, key=lambda p: hashlib.sha256(os.fsencode(os.path.relpath(p, root))).hexdigest())
        n_test = max(1, round(len(ordered) * IMAGE_TEST_FRACTION))  # every class has 2 or more (checked)
        test += [(p, label) for p in ordered[:n_test]]
        train += [(p, label) for p in ordered[n_test:]]
    if not test:
        raise DataError(f"--image_dir {root} has too few images per class to hold out a test split; add images or "
                        "pass --test_image_dir")
    return train, test

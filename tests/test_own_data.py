"""A user's own data: image folders and .npz files, end to end, and every bad input in one line.

Small files are generated here (PNG, JPEG, .npz); nothing comes from outside
the repository.
"""
import dataclasses
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import unicodedata

import numpy as np
import pytest
from absl import logging as absl_logging
from conftest import ROOT
from PIL import Image

from dropzoo import client
from dropzoo import compare
from dropzoo import config as config_lib
from dropzoo import folders
from dropzoo import readers
from dropzoo import sources
from dropzoo import sweep
from dropzoo import trainer
from dropzoo.errors import DataError
from dropzoo.errors import ExportError


def _digits(n, seed=0, size=12):
    """Learnable grayscale images: the class is which half is bright."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    images = rng.integers(0, 90, (n, size, size)).astype(np.uint8)
    for i, label in enumerate(labels):
        images[i, :, label * size // 2:(label + 1) * size // 2] += 120
    return images, labels


def write_folder(root, n=24, seed=0, size=12, rgb=False, ext=".png"):
    images, labels = _digits(n, seed, size)
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = os.path.join(root, ["left", "right"][label])
        os.makedirs(folder, exist_ok=True)
        pixels = np.stack([image] * 3, axis=-1) if rgb else image
        Image.fromarray(pixels).save(os.path.join(folder, f"{i}{ext}"))
    return root


@pytest.fixture
def png_folders(tmp_path):
    return write_folder(str(tmp_path / "train"), 40), write_folder(str(tmp_path / "test"), 16, seed=1)


def test_an_image_folder_with_a_test_folder_loads_with_classes_from_folder_names(png_folders):
    train, test = png_folders
    source = sources.load_source(image_dir=train, test_image_dir=test)
    assert source.image_shape == (12, 12, 1) and source.num_classes == 2
    assert source.num_train == 40 and source.num_test == 16
    assert source.details["class_names"] == ["left", "right"]
    assert source.origin == {"image_dir": train, "test_image_dir": test, "image_size": None,
                             "color_mode": "grayscale"}
    # The name says where the test images come from: comparisons head their report with it.
    assert source.name == f"images:{train}, tested on {test}"
    again = sources.load_source(**source.origin, need_train=False)  # what eval and compare do
    assert again.num_test == 16 and again.name == source.name
    images, labels = next(iter(again.test.batch(16).as_numpy_iterator()))
    assert images.dtype == np.uint8 and set(labels) <= {0, 1}
    # Training tested on its own training images is refused; evaluating every image of a folder is not.
    with pytest.raises(DataError, match=r"--test_image_dir .* is --image_dir: the run would be tested on the images"):
        sources.load_source(image_dir=train, test_image_dir=train)
    with pytest.raises(DataError, match=r"--test_image_dir .* is --image_dir"):  # --dry_run's look at the data
        sources.describe(image_dir=train, test_image_dir=train + "/")
    assert sources.load_source(image_dir=train, test_image_dir=train, need_train=False).num_test == 40


def test_an_rgb_jpeg_folder_without_a_test_folder_gets_a_fixed_stratified_split(tmp_path):
    root = write_folder(str(tmp_path / "shapes"), 50, size=32, rgb=True, ext=".jpg")
    first = sources.load_source(image_dir=root, color_mode="rgb")
    second = sources.load_source(image_dir=root, color_mode="rgb")
    assert first.image_shape == (32, 32, 3) and first.num_train + first.num_test == 50
    split = first.details["test_split"]
    assert split["fraction"] == readers.IMAGE_TEST_FRACTION
    assert split == second.details["test_split"]  # the same split every time, whatever the run's seed
    labels = [int(y) for _, y in first.test.as_numpy_iterator()]
    per_class = {c: sum(1 for f in os.listdir(os.path.join(root, name))) for c, name in enumerate(["left", "right"])}
    for c, count in per_class.items():  # stratified: each class gives its own share
        assert labels.count(c) == max(1, round(count * readers.IMAGE_TEST_FRACTION))


def test_image_size_resizes_and_mixed_sizes_without_it_are_one_line(tmp_path):
    root = write_folder(str(tmp_path / "mixed"), 8)
    Image.fromarray(np.zeros((20, 16), np.uint8)).save(os.path.join(root, "left", "big.png"))
    with pytest.raises(DataError, match=r"images have different sizes: .* is 20x16 \(height x width\); pass "
                                        r"--image_size=H,W") as info:
        sources.load_source(image_dir=root)
    assert "\n" not in str(info.value)
    source = sources.load_source(image_dir=root, image_size="16,16")
    assert source.image_shape == (16, 16, 1)
    with pytest.raises(DataError, match=r"^--image_size must be H,W in pixels, e.g. 28,28 or 32,32; got 16$"):
        sources.load_source(image_dir=root, image_size=16)  # from Python: a TypeError traceback


@pytest.mark.parametrize("make,message", [
    (lambda root: os.makedirs(os.path.join(root, "empty")), r"class folder .*empty has no images"),
    (lambda root: open(os.path.join(root, "left", "broken.png"), "wb").write(b"not a png"),
     r"^1 file\(s\) cannot be read as images: .*broken.png \(UnidentifiedImageError: .*remove them or replace"),
    # Every unreadable file at once: ten bad files took ten reruns, each naming the next.
    (lambda root: [open(os.path.join(root, "left", f"bad{k}.png"), "wb").write(b"x") for k in range(5)],
     r"^5 file\(s\) cannot be read as images: .*bad0.png .*; .*bad1.png .*; .*bad2.png .*; 2 more; remove them"),
    (lambda root: [os.remove(os.path.join(root, "right", f)) for f in os.listdir(os.path.join(root, "right"))]
     and os.rmdir(os.path.join(root, "right")), "has 1 class subfolder"),
    (lambda root: [os.remove(os.path.join(root, "right", f))
                   for f in sorted(os.listdir(os.path.join(root, "right")))[1:]],
     r"class\(es\) right have a single image; .* give each class at least 2 images"),
])
def test_bad_image_folders_are_one_line(tmp_path, make, message):
    root = write_folder(str(tmp_path / "data"), 8)
    make(root)
    with pytest.raises(DataError, match=message) as info:
        sources.load_source(image_dir=root)
    assert "\n" not in str(info.value)


def test_a_folder_of_single_images_scored_is_told_of_test_image_dir(tmp_path):
    """Scoring, --validation_fraction is no flag of eval.py: the fix is to score the folder whole."""
    root = write_folder(str(tmp_path / "data"), 8)
    for name in ("left", "right"):
        for f in sorted(os.listdir(os.path.join(root, name)))[1:]:
            os.remove(os.path.join(root, name, f))
    with pytest.raises(DataError, match=rf"have a single image; .* or score every image of it with "
                                        rf"--test_image_dir={root} in place of --image_dir$"):
        sources.load_source(image_dir=root, need_train=False)
    assert sources.load_source(test_image_dir=root, image_dir=root, need_train=False).num_test == 2


def test_a_test_folder_without_one_of_the_classes_is_refused(png_folders):
    """Its accuracy would cover the other classes only, and say nothing."""
    train, test = png_folders
    os.makedirs(os.path.join(train, "middle"))
    for i in range(4):
        Image.fromarray(np.full((12, 12), 60 * i, np.uint8)).save(os.path.join(train, "middle", f"{i}.png"))
    with pytest.raises(DataError, match=r"--test_image_dir .* has no images of class\(es\) 'middle' that "
                                        r"--image_dir .* trains on") as info:
        sources.load_source(image_dir=train, test_image_dir=test)
    assert "\n" not in str(info.value)
    # Quoted, so a name that differs by a trailing space shows it.
    os.makedirs(os.path.join(test, "middle "))
    Image.fromarray(np.zeros((12, 12), np.uint8)).save(os.path.join(test, "middle ", "0.png"))
    with pytest.raises(DataError, match=r"has class folder\(s\) 'middle ' that --image_dir .* lacks"):
        sources.load_source(image_dir=train, test_image_dir=test)
    # Another case: said. One class only: named as missing classes, not "a classifier needs at least 2".
    os.rename(os.path.join(test, "middle "), os.path.join(test, "Middle"))
    with pytest.raises(DataError, match=r"has class folder\(s\) 'Middle' that --image_dir .* lacks; both take the "
                                        r"same class subfolders \(names differ in case only: 'Middle' here, 'middle' "
                                        r"in --image_dir; class names are case-sensitive"):
        sources.load_source(image_dir=train, test_image_dir=test)
    for name in ("Middle", "right"):
        shutil.rmtree(os.path.join(test, name))
    with pytest.raises(DataError, match=r"--test_image_dir .* has no images of class\(es\) 'middle', 'right' that "
                                        r"--image_dir .* trains on"):
        sources.load_source(image_dir=train, test_image_dir=test)


def test_images_without_class_subfolders_say_how_to_arrange_them(tmp_path):
    root = tmp_path / "flat"
    root.mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / "a.png")
    with pytest.raises(DataError, match="holds images but no class subfolders"):
        sources.load_source(image_dir=str(root))


def test_a_decompression_bomb_is_refused_from_its_header_before_decoding(tmp_path, monkeypatch):
    from PIL import ImageFile

    root = write_folder(str(tmp_path / "bomb"), 6)
    monkeypatch.setattr(readers, "MAX_IMAGE_PIXELS", 100)  # a 12x12 image "exceeds" it

    def no_decoding(self, *args, **kwargs):
        raise AssertionError("the image was decoded before its size was checked")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(DataError, match=r"12 x 12 pixels, more than the 100 an image may have here"):
        sources.load_source(image_dir=root)


def test_test_images_that_are_training_images_are_refused_or_counted(png_folders, tmp_path, caplog):
    train, _ = png_folders
    copy = str(tmp_path / "copy")
    shutil.copytree(train, copy)  # the training folder copied, given as the test folder
    with pytest.raises(DataError, match=r"^images:.*, tested on .*copy: every one of its 40 test images is also a "
                                        r"training image \(byte for byte\), so the test accuracy would be the "
                                        "training accuracy"):
        sources.load_source(image_dir=train, test_image_dir=copy)
    assert sources.load_source(image_dir=train, test_image_dir=copy, need_train=False).num_test == 40  # evaluating
    # Two copies among other test images (an image under two names in a collection): counted and said.
    mixed = write_folder(str(tmp_path / "mixed"), 16, seed=5)
    shutil.copy(os.path.join(train, "left", sorted(os.listdir(os.path.join(train, "left")))[0]),
                os.path.join(mixed, "left", "copy-a.png"))
    shutil.copy(os.path.join(train, "right", sorted(os.listdir(os.path.join(train, "right")))[0]),
                os.path.join(mixed, "right", "copy-b.png"))
    source = sources.load_source(image_dir=train, test_image_dir=mixed)
    assert source.details["test_in_train"] == 2
    said = [r.getMessage() for r in caplog.records if "test images are also training images" in r.getMessage()]
    assert len(said) == 1 and ": 2 of its 18 test images are also training images (byte for byte" in said[0]
    assert sources.load_source(npz=_npz(tmp_path / "d.npz")).details.get("test_in_train") is None


def _npz(path, **overrides):
    x_train, y_train = _digits(40)
    x_test, y_test = _digits(10, seed=1)
    arrays = dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    arrays.update(overrides)
    np.savez(path, **arrays)
    return str(path)


def test_an_npz_loads_grayscale_or_channels(tmp_path):
    source = sources.load_source(npz=_npz(tmp_path / "d.npz"))
    assert source.image_shape == (12, 12, 1) and source.num_train == 40 and source.num_classes == 2
    rgb = np.repeat(_digits(40)[0][..., None], 3, axis=-1)
    source = sources.load_source(npz=_npz(tmp_path / "rgb.npz", x_train=rgb,
                                          x_test=np.repeat(_digits(10, 1)[0][..., None], 3, axis=-1)))
    assert source.image_shape == (12, 12, 3)


@pytest.mark.parametrize("overrides,message", [
    ({"x_train": np.zeros((40, 12, 12), np.float32)}, r"x_train is float32; the zoo takes raw uint8 pixels"),
    ({"y_test": np.full(10, 7)}, r"y_test has label 7, but y_train's labels only go up to 1"),
    ({"y_train": np.full(40, -1)}, "negative label -1"),
    ({"x_test": np.zeros((10, 8, 8), np.uint8)}, "give both splits the same image shape"),
    ({"y_train": np.zeros(3, np.int64)}, "one integer class id per image"),
    # The fix named follows the pixels' range: x * 255 would ruin 0-255 values.
    ({"x_train": np.full((40, 12, 12), 0.5, np.float32)}, r"pixels scaled to \[0, 1\]: np.round\(x \* 255\)"),
    ({"x_train": np.full((40, 12, 12), 200.0)}, r"float64; .*convert x_train \(pixels 0-255: np.round\(x\)\.astype"),
    ({"x_train": np.full((40, 12, 12), 200, np.int64)}, r"int64; .*\(its values are 0-255: x.astype\(np.uint8\)\)"),
    ({"x_train": np.full((40, 12, 12), 65280, np.uint16)},
     r"uint16; .*\(its values span 65280\.\.65280: rescale them to 0-255 by the range the pixels can take, e\.g\. "
     r"\(x // 257\)\.astype\(np\.uint8\) for 16-bit ones"),
    ({"x_train": np.full((40, 12, 12), -5, np.int16)}, r"int16; .*\(its values span -5\.\.-5: rescale them"),
    # Class ids a model would silently never answer, or wrap to negative ones.
    ({"y_train": np.ones(40, np.int64), "y_test": np.ones(10, np.int64)}, r"y_train holds one class \(1\)"),
    ({"y_train": np.full(40, 2**63, np.uint64)}, r"y_train has the label 9223372036854775808; labels are class ids"),
])
def test_bad_npz_arrays_are_one_line(tmp_path, overrides, message):
    with pytest.raises(DataError, match=message) as info:
        sources.load_source(npz=_npz(tmp_path / "bad.npz", **overrides))
    assert "\n" not in str(info.value)


def test_npz_class_ids_without_training_examples_are_said(tmp_path, caplog):
    # Labels 1..K: class 0 gets an output that training only keeps off. Not wrong, so said, not refused.
    with caplog.at_level("WARNING"):
        source = sources.load_source(npz=_npz(tmp_path / "d.npz", y_train=_digits(40)[1] + 1,
                                              y_test=_digits(10, 1)[1] + 1))
    assert source.num_classes == 3
    assert ("y_train has no example of class 0 (of 0..2): the model gets an output for it that training only keeps "
            "off; labels are class ids 0..K-1; labels 1..K? subtract 1") in caplog.text


def test_an_npz_object_array_is_refused_and_never_unpickled(tmp_path):
    path = str(tmp_path / "evil.npz")
    x_train, y_train = _digits(4)
    np.savez(path, x_train=np.array([x_train[0], "payload"], dtype=object), y_train=y_train,
             x_test=x_train, y_test=y_train)
    with pytest.raises(DataError, match="holds an object array, which would have to be unpickled"):
        sources.load_source(npz=path)
    np.savez(str(tmp_path / "partial.npz"), x_train=x_train)
    with pytest.raises(DataError, match=r"partial.npz lacks y_train, x_test, y_test \(it holds x_train\); save it "
                                        r"with np.savez\(path, x_train=x_train, .*\)$"):
        sources.load_source(npz=str(tmp_path / "partial.npz"))
    (tmp_path / "text.npz").write_text("hello")  # np.load would call it pickled data
    with pytest.raises(DataError, match="text.npz is not an .npz archive; save the four arrays in one file"):
        sources.load_source(npz=str(tmp_path / "text.npz"))
    np.save(str(tmp_path / "one.npy"), x_train)
    with pytest.raises(DataError, match=r"one.npy is an .npy file \(one array\); save the four arrays"):
        sources.load_source(npz=str(tmp_path / "one.npy"))
    with pytest.raises(DataError, match=r"is a directory; give the path of an .npz file .*\(a folder of images "):
        sources.load_source(npz=str(tmp_path))


def test_a_path_given_as_a_dataset_name_points_to_its_flag(tmp_path, png_folders):
    train, _ = png_folders
    with pytest.raises(DataError, match=f"--dataset takes a dataset name, not a path: for {train} pass "
                                        f"--image_dir={train}"):
        sources.load_source(dataset=train)
    with pytest.raises(DataError, match=r"pass --npz="):
        sources.load_source(dataset=_npz(tmp_path / "d.npz"))
    idx = tmp_path / "idx"
    idx.mkdir()
    (idx / "t10k-images-idx3-ubyte.gz").write_bytes(b"")
    with pytest.raises(DataError, match=f"pass --idx_dir={idx}"):
        sources.load_source(dataset=str(idx))
    with pytest.raises(DataError, match="give one data source, not --npz and --image_dir"):
        sources.load_source(npz="a.npz", image_dir=train)
    # A --dataset beside a folder was ignored, and recorded in the run's config as what it trained on.
    with pytest.raises(DataError, match="give one data source, not --image_dir and --dataset"):
        sources.load_source(dataset="fashion_mnist", image_dir=train)
    assert sources.load_source(dataset="mnist", image_dir=train).num_train == 32  # the default names nothing



def test_a_tfds_name_is_a_name_with_its_config_and_beside_a_folder_of_that_name(tmp_path, monkeypatch):
    from dropzoo import tfds_source

    # `emnist/byclass` (a config) was called a path, and a folder ./mnist made the default command fail.
    for name in ("emnist/byclass", "mnist_corrupted/shot_noise", "mnist:3.*.*", "mnist"):
        assert tfds_source._path_hint(name) == "", name
    monkeypatch.chdir(tmp_path)
    os.makedirs("mnist")
    assert tfds_source._path_hint("mnist") == ""
    os.makedirs("my_digits/train")
    assert tfds_source._path_hint("my_digits/train").startswith("--dataset takes a dataset name, not a path: for "
                                                                "my_digits/train pass --image_dir=my_digits/train")
    assert "looks like a path" in tfds_source._path_hint("/data/nowhere")
    # A path below a folder named as a dataset is still a path; a config the dataset lacks is said to be one.
    os.makedirs("cifar10/train/cat")
    assert tfds_source._path_hint("cifar10/train").startswith("--dataset takes a dataset name, not a path: for "
                                                              "cifar10/train pass --image_dir=cifar10/train")
    assert tfds_source._path_hint("mnist/").startswith("--dataset takes a dataset name, not a path: for mnist/")
    assert tfds_source._path_hint("emnist/nonesuch") == (
        "tfds dataset 'emnist' has no config 'nonesuch'; its configs: byclass, bymerge, balanced, letters, digits, "
        "mnist")


# ------------------------------------------------------------- end to end


def _tiny(**overrides):
    values = dict(model="dense_mlp", epochs=2, batch_size=8, optimizer="adam", learning_rate=0.003, seed=0)
    values.update(overrides)
    return config_lib.TrainConfig(**values)


def test_a_colour_export_out_of_its_run_reads_an_image_folder_in_colour(tmp_path):
    """eval.py --saved_model=COPY --image_dir=DIR read the folder as grayscale (the flag's default) and was refused
    for a colour model, where its run's own export, the client and --ood_image_dir read colour."""
    from dropzoo import evaluate

    train = write_folder(str(tmp_path / "train"), 24, rgb=True)
    test = write_folder(str(tmp_path / "test"), 12, seed=1, rgb=True)
    workdir = str(tmp_path / "run")
    trainer.train_and_evaluate(_tiny(image_dir=train, color_mode="rgb", epochs=1), workdir, verbose=0,
                               serving_artifacts=False)
    copied = shutil.copytree(os.path.join(workdir, "saved_model"), str(tmp_path / "copied"))
    result = evaluate.evaluate_on_dataset(copied, data={"image_dir": train, "test_image_dir": test})
    asked = evaluate.evaluate_on_dataset(copied, data={"image_dir": train, "test_image_dir": test,
                                                       "color_mode": "rgb"})
    assert result["data_sha256"] == asked["data_sha256"] and result["accuracy"] == asked["accuracy"]
    with pytest.raises(ValueError, match=r"takes images of shape .*--color_mode=rgb reads them so"):  # asked: kept
        evaluate.evaluate_on_dataset(copied, data={"image_dir": train, "test_image_dir": test,
                                                   "color_mode": "grayscale"})


@pytest.mark.slow
def test_a_sweep_over_the_data_trains_each_run_on_its_own(png_folders, tmp_path):
    # All runs once took the first run's data: the rgb run trained on grayscale images, recorded as rgb.
    train, test = png_folders
    configs = sweep.expand(_tiny(image_dir=train, test_image_dir=test, epochs=1),
                           {"color_mode": ["grayscale", "rgb"]})
    runs = [(c, sweep.run_dir(str(tmp_path / "runs"), c, sweep.varying_fields(configs))) for c in configs]
    results = sweep.run_sweep(runs, verbose=0, serving_artifacts=False)
    for config, _, metrics in results:
        assert isinstance(metrics, dict), metrics
        assert metrics["data"]["origin"]["color_mode"] == config.color_mode
        assert metrics["data"]["image_shape"][-1] == {"grayscale": 1, "rgb": 3}[config.color_mode]
    with pytest.raises(ValueError, match="source=images:.* is one dataset, but the runs take 2 data settings; "
                                         "pass source=None"):
        sweep.run_sweep(runs, source=sources.load_source(image_dir=train, test_image_dir=test), verbose=0)


@pytest.mark.slow
def test_an_image_folder_trains_sweeps_evaluates_and_compares(png_folders, tmp_path, eval_main, capsys):
    train, test = png_folders
    root = str(tmp_path / "runs")
    configs = sweep.expand(_tiny(image_dir=train, test_image_dir=test), {"placement": ["canonical", "none"]})
    results = sweep.run_sweep([(c, sweep.run_dir(root, c)) for c in configs], verbose=0)
    assert all(isinstance(m, dict) and m["export_check"]["passed"] for _, _, m in results), results
    workdir = results[0][1]
    metrics = results[0][2]
    assert metrics["data"]["origin"]["image_dir"] == train
    assert metrics["data"]["details"]["class_names"] == ["left", "right"]
    # Its export carries its test split by content, so a copy scored on other data can say so.
    from dropzoo import export as export_lib
    assert export_lib.recorded_test_data(os.path.join(workdir, "saved_model")) == {
        "source": metrics["data"]["source"], "test_sha256": metrics["data"]["test_sha256"]}
    # eval.py --workdir: the run's own recorded data, with no data flag given.
    capsys.readouterr()
    assert eval_main(f"--workdir={workdir}") == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["data_source"] == f"images:{train}, tested on {test}" and printed["num_examples"] == 16
    with open(os.path.join(workdir, "eval.json")) as f:
        assert json.load(f)["accuracy"] == printed["accuracy"]
    # Its own test folder named alone: the run's own test data (alone, --image_dir would mean its 20% split).
    assert eval_main(f"--workdir={workdir}", f"--image_dir={test}") == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["num_examples"] == 16 and "note:" not in captured.err
    # Other data, given explicitly: named, and written beside eval.json, never over it; a folder's split said so.
    other = write_folder(str(tmp_path / "other"), 10, seed=3)
    assert eval_main(f"--workdir={workdir}", f"--image_dir={other}") == 0
    captured = capsys.readouterr()
    assert "not the test data the run recorded" in captured.err
    tested = json.loads(captured.out)["num_examples"]
    assert f"note: scored the test split of {other} ({tested} images: 20% of each class, rounded, at least one " \
           "image each); to score every image in " \
           f"it, pass --test_image_dir={other} too" in captured.err and tested < 10
    # A test folder named alone scores every image in it, for the run's classes (it was refused: "the data given
    # is --dataset", though none was given).
    assert eval_main(f"--workdir={workdir}", f"--test_image_dir={other}") == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["num_examples"] == 10 and "not the test data the run recorded" in captured.err
    # Its training folder: the scores are of training images, and said to be; scoring all of it is not suggested.
    assert eval_main(f"--workdir={workdir}", f"--image_dir={train}") == 0
    captured = capsys.readouterr()
    assert f"note: {train} holds images {workdir} trained on, so its scores there include training images" \
        in captured.err and "--test_image_dir" not in captured.err
    others = [f for f in os.listdir(workdir) if f.startswith("eval-")]
    assert len(others) == 3
    with open(os.path.join(workdir, "eval.json")) as f:
        assert json.load(f)["num_examples"] == 16  # untouched
    comparison = compare.compare_runs(root)
    assert {e["variant"] for e in comparison["table"]} == {"dense_mlp/canonical", "dense_mlp/none"}
    # A comparison given the runs' own test folder scores their own test data; another folder's split is said.
    own = compare.compare_runs(root, data_override={"image_dir": test}, output_dir=str(tmp_path / "own"))
    assert own["table"] == comparison["table"] and own["notes"] == comparison["notes"]
    assert [n for n in own["notes"] if not n.startswith("the smallest test data here has 16 images")] == []
    split = compare.compare_runs(root, data_override={"image_dir": other}, output_dir=str(tmp_path / "split"))
    assert [n for n in split["notes"] if n.startswith(f"scored the test split of {other} ({tested} images")]
    assert comparison["contrasts"][0]["test_accuracy"]["n"] == 1
    # Rerun into the same directory: what an earlier comparison wrote and this one does not is gone.
    output = os.path.dirname(comparison["paths"]["comparison.md"])
    open(os.path.join(output, "rates.md"), "w").write("an earlier comparison's")
    os.makedirs(os.path.join(output, "hparams", "gone_run"))
    again = compare.compare_runs(root)
    assert not os.path.exists(os.path.join(output, "rates.md"))
    assert not os.path.exists(os.path.join(output, "hparams", "gone_run"))
    assert set(os.listdir(output)) == set(again["paths"])
    # Other data whose class folders are not the runs' own: refused, naming the run, before any score.
    renamed = write_folder(str(tmp_path / "renamed"), 16, seed=2)
    os.rename(os.path.join(renamed, "right"), os.path.join(renamed, "zz"))
    with pytest.raises(DataError, match=r"^run .*seed0: the test images' class folders include zz, which the run "):
        compare.compare_runs(root, data_override={"image_dir": renamed}, output_dir=str(tmp_path / "other"))
    # The test folder changed after training: the recorded evaluations are shown, and the comparison says so.
    Image.fromarray(np.zeros((12, 12), np.uint8)).save(os.path.join(test, "left", "added.png"))
    changed = compare.compare_runs(root)
    assert [n for n in changed["notes"] if "now holds other test data than the runs trained on it" in n]
    assert changed["table"] == again["table"]
    with open(changed["paths"]["comparison.md"]) as f:
        assert f"to score them on it as it is now, pass --image_dir={train} --test_image_dir={test}" in f.read()
    # The test folder gone: the recorded evaluations are shown, and said to be of data that is not here.
    shutil.rmtree(test)
    gone = compare.compare_runs(root)
    assert [n for n in gone["notes"] if n.startswith(f"the runs' test data (--test_image_dir={test}) cannot be "
                                                    "read here (")], gone["notes"]
    assert gone["table"] == again["table"]


def test_a_run_that_fails_on_bad_data_leaves_nothing(tmp_path, png_folders):
    workdir = tmp_path / "runs" / "m" / "seed0"
    broken = write_folder(str(tmp_path / "broken"), 6)
    open(os.path.join(broken, "left", "x.png"), "wb").write(b"junk")
    with pytest.raises(DataError, match=r"cannot be read as images: .*x.png"):
        trainer.train_and_evaluate(_tiny(image_dir=broken), str(workdir), verbose=0)
    assert not (tmp_path / "runs").exists()  # nothing written, not even the directories
    # A sweep of it stops at once in one line too: each of its runs failed alike, and the sweep exited 1.
    runs = [(c, sweep.run_dir(str(tmp_path / "runs"), c)) for c in sweep.expand(
        _tiny(image_dir=broken), {"placement": ["canonical", "none"]}, seeds=2)]
    with pytest.raises(DataError, match=r"cannot be read as images: .*x.png"):
        sweep.run_sweep(runs, verbose=0)
    assert not (tmp_path / "runs").exists()
    train, test = png_folders
    metrics = trainer.train_and_evaluate(_tiny(image_dir=train, test_image_dir=test, epochs=1), str(workdir),
                                         verbose=0, serving_artifacts=False)
    assert metrics["export_check"]["passed"]


# ---------------------------------------------------------- float pixels


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    import keras

    from dropzoo import export as export_lib

    keras.utils.set_random_seed(0)
    image = keras.Input(shape=(12, 12, 1), name="image")
    x = keras.layers.Dense(16, activation="relu")(keras.layers.Flatten()(image))
    model = keras.Model(image, keras.layers.Softmax()(keras.layers.Dense(2)(x)))
    path = export_lib.export_saved_model(model, str(tmp_path_factory.mktemp("export") / "saved_model"),
                                         class_names=["left", "right"])
    return path, _digits(32, seed=3)[0][..., None]


def test_the_client_gives_the_right_answer_for_every_pixel_dtype_or_one_error(export):
    path, images = export
    model = client.Client(path)
    expected = model.predict(images)
    scaled = images.astype(np.float64) / 255.0
    np.testing.assert_array_equal(model.predict(scaled)["class_id"], expected["class_id"])
    np.testing.assert_allclose(model.predict(scaled)["probabilities"], expected["probabilities"], atol=1e-6)
    np.testing.assert_array_equal(model.predict(images.astype(np.int64))["class_id"], expected["class_id"])
    assert model.predict(images[0])["class_id"].shape == (1,)  # one image
    for bad, message in [(images.astype(np.float32), r"float pixels must be scaled to \[0, 1\], these span"),
                         (images[:, :6], "this export takes .*: resize them"),
                         (images[0, :6], r"or one \[12, 12, 1\] image: resize it as the training data was"),
                         (np.zeros((24, 24, 3), np.uint8), r"or one \[12, 12, 1\] image: read it as the training "
                          r"data was, np\.asarray\(PIL\.ImageOps\.exif_transpose\(PIL\.Image\.open\(path\)\)"
                          r"\.convert\('L'\)\.resize\(\(12, 12\), PIL\.Image\.BILINEAR\)\)\[\.\.\., None\]"),
                         (images[..., 0], r"add the channel axis, images\[..., np.newaxis\]"),
                         (np.repeat(images, 3, axis=-1), r"convert them to 1 channel\(s\)"),
                         (images[:0], r"no images to predict: the batch is empty"),
                         (np.moveaxis(images, -1, 1), r"move the channel axis last, np.moveaxis\(images, 1, -1\)"),
                         (images.astype(np.int64) + 300, "0-255"),
                         (np.full(images.shape, "a"), "images are <U1; pass uint8 pixels")]:
        with pytest.raises(ValueError, match=message):
            model.predict(bad)
    with pytest.raises(ValueError, match=r"^batch_size must be a positive integer, got 0$"):  # range() arg 3 ...
        model.predict(images, batch_size=0)


def test_the_client_says_binarized_integer_pixels_are_near_black(export, caplog):
    """0/1 integer images answered as near black (every one class 5) without the warning training gives."""
    path, images = export
    model = client.Client(path)
    model.predict(images)
    assert "binarized" not in caplog.text
    model.predict((images > 127).astype(np.uint8))
    assert ("the images' pixels are 0 and 1 (binarized?); integer pixels are read as 0-255, so these are near "
            "black: multiply by 255") in caplog.text


def test_the_client_from_a_shell_names_each_image_files_class_or_says_what_is_wrong(export, tmp_path, capsys,
                                                                                       caplog):
    # `python -m dropzoo.client` printed nothing and exited 0.
    path, images = export
    files = []
    for i, image in enumerate(images[:3]):
        files.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(np.repeat(np.repeat(image[..., 0], 2, 0), 2, 1)).convert("RGB").save(files[-1])  # 24x24 RGB
    expected = client.Client(path).predict(readers.read_images(files, (12, 12), "grayscale"))
    with caplog.at_level("WARNING"):
        assert client.main([path, *files]) == 0
    lines = capsys.readouterr().out.splitlines()
    # Resized to the export's size: said (not where the shape was the size's), as the client's other warnings in
    # the scripts' `warning:` form, by absl's handler (Python's own printed `WARNING:absl:` lines).
    said = [r for r in caplog.records if "resized" in r.getMessage()]
    handler = absl_logging.get_absl_handler()
    assert len(said) == 1 and handler in logging.getLogger().handlers and handler.format(said[0]) == (
        f"warning: 3 of 3 image(s) are not 12x12 (width x height; e.g. {files[0]}, 24x24) and are resized to it "
        "(bilinear, as --image_size resizes), the size the export takes")
    assert [line.split("\t")[:2] for line in lines] == [[f, ["left", "right"][k]] for f, k in
                                                        zip(files, expected["class_id"])]
    assert [float(line.split("\t")[2]) for line in lines] == pytest.approx(
        expected["probabilities"].max(axis=1), abs=1e-4)
    assert client.main([os.path.dirname(path), files[0]]) == 0  # the run's directory: its saved_model/
    assert capsys.readouterr().out.splitlines() == lines[:1]
    run = tmp_path / "runs" / "net" / "seed0"  # a folder of runs: one of them is named, not eval.py's --runs_dir
    shutil.copytree(path, run / "saved_model")
    (run / "metrics.json").write_text("{}")
    with pytest.raises(SystemExit):
        client.main([str(tmp_path / "runs"), files[0]])
    assert capsys.readouterr().err.strip() == (f"error: {tmp_path / 'runs'} holds runs below it, not an export; give "
                                               f"one run (e.g. {run})")
    # A run whose export is gone, and a TFLite model: what to do, not eval.py's flags (--workdir, --tflite).
    shutil.rmtree(run / "saved_model")
    with pytest.raises(SystemExit):
        client.main([str(run), files[0]])
    assert capsys.readouterr().err.strip() == (f"error: {run} is a run's directory without its export "
                                               "(saved_model/); it cannot be exported again here: the run has no "
                                               "checkpoint here (records carried from where it trained?); use the "
                                               "exports where it trained")
    (tmp_path / "model.tflite").write_bytes(b"TFL3")
    with pytest.raises(ExportError, match=r"^.*model\.tflite is a TFLite model; the client serves a SavedModel: "):
        client.Client(str(tmp_path / "model.tflite"))
    # A run identical by construction to another is served by that run's export.
    twin = tmp_path / "runs" / "net" / "seed1"
    twin.mkdir()
    (twin / "metrics.json").write_text(json.dumps({"identical_to": os.path.relpath(os.path.dirname(path), twin)}))
    assert client.Client(str(twin)).path == path
    assert client.main([str(twin), files[0]]) == 0 and capsys.readouterr().out.splitlines() == lines[:1]
    assert client.main([]) == 2
    assert capsys.readouterr().err.startswith("error: usage: python -m dropzoo.client SAVED_MODEL_OR_RUN IMAGE")
    assert client.main([path, "--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: python -m dropzoo.client SAVED_MODEL_OR_RUN IMAGE")
    with pytest.raises(SystemExit) as exit_:
        client.main([path, str(tmp_path / "missing.png")])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == (f"error: {tmp_path / 'missing.png'} is not a file; give image files "
                                               "(PNG, JPEG, BMP, GIF), e.g. python -m dropzoo.client "
                                               "SAVED_MODEL_OR_RUN IMAGE [IMAGE ...]")


def test_the_client_prints_a_class_name_that_is_not_utf8_as_its_bytes(export, tmp_path, monkeypatch):
    """A class folder named in Latin-1 bytes (`caf\\xe9`) stopped the client at its first line on a strict stdout,
    the other images' lines lost."""
    import io

    path, images = export
    files = [str(tmp_path / f"{i}.png") for i in range(2)]
    for name, image in zip(files, images):
        Image.fromarray(image[..., 0]).save(name)
    monkeypatch.setattr(client, "classify", lambda _, paths: [(p, "caf\udce9", 0.5) for p in paths])
    out = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(out, encoding="utf-8", errors="strict"))
    assert client.main([path, *files]) == 0
    sys.stdout.flush()
    assert out.getvalue().splitlines() == [f"{f}\tcaf\xe9\t0.5000".encode("latin-1") for f in files]  # its bytes


def test_the_client_serves_mc_dropout_the_uint8_pixels_floats_came_from(export):
    """A NumPy float image handed to an MC signature is cast to uint8 before the graph: every image answered alike."""
    path, images = export
    model = client.Client(path)
    seeded = model.mc_dropout(images, samples=3, seed=7)
    assert set(seeded) >= {"probabilities", "class_id", "probabilities_std", "predictive_entropy",
                           "mutual_information"}
    np.testing.assert_array_equal(seeded["class_id"], model.predict(images)["class_id"])  # no dropout here
    scaled = model.mc_dropout(images / 255.0, samples=3, seed=7)
    for key, value in seeded.items():
        np.testing.assert_array_equal(scaled[key], value)
    assert model.mc_dropout(images, samples=2)["probabilities"].shape == (len(images), 2)  # unseeded
    halves = model.mc_dropout((images / 255.0).astype(np.float16), samples=3, seed=7)  # 1/255 held to 2e-3
    np.testing.assert_array_equal(halves["probabilities"], seeded["probabilities"])
    # A request split into chunks: each its own masks (one seed for all repeated them every batch_size images).
    twice = np.concatenate([images[:4], images[:4]])
    assert model.mc_dropout(twice, samples=3, seed=7, batch_size=4)["probabilities"].shape == (8, 2)
    for bad, message in [((images / 255.0 * 0.999,), "not pixels scaled by 1/255 .*np.round"),
                         ((images.astype(np.float32),), r"float pixels must be scaled to \[0, 1\]"),
                         ((images, 0), "samples must be a positive integer"),
                         ((images, 2.5), "samples must be a positive integer"),
                         ((images, 16385), r"samples must be .* at most 16384 \(the passes an MC call draws at once"),
                         ((images, 3, 2**32), r"seed must be an integer in \[0, 2\*\*31\)"),
                         ((images, 3, -1), r"seed must be an integer in \[0, 2\*\*31\)")]:
        with pytest.raises(ValueError, match=message):
            model.mc_dropout(*bad)


def test_serving_float_answers_scaled_pixels_and_refuses_raw_ones(export):
    import tensorflow as tf

    path, images = export
    signatures = tf.saved_model.load(path).signatures
    served = signatures["serving_default"](image=tf.constant(images))
    floats = signatures["serving_float"](image=tf.constant(images / np.float32(255.0)))
    np.testing.assert_array_equal(floats["class_id"], served["class_id"])
    with pytest.raises(tf.errors.InvalidArgumentError, match="serving_float takes pixels scaled to"):
        signatures["serving_float"](image=tf.constant(images.astype(np.float32)))
    # What the client exists for: NumPy floats handed to the uint8 signature are cast before the graph.
    zeros = signatures["serving_default"](image=images / np.float32(255.0))
    assert len(set(zeros["class_id"].numpy())) == 1  # every image gets the same answer


def test_every_signature_refuses_images_of_another_shape_naming_both(export):
    # A loaded signature checks dtypes, not shapes: a conv net answered RGBA images sent to a grayscale
    # model (a grouped convolution), and a missing channel axis aborted the process.
    import tensorflow as tf

    path, images = export
    signatures = tf.saved_model.load(path).signatures
    wrong = [np.concatenate([images[:4]] * 2, axis=-1), images[:4, ..., 0]]  # 2 channels; no channel axis
    for name, signature in signatures.items():
        extra = {"samples": tf.constant(2)} if name.startswith("mc_") else {}
        if name not in ("serving_default", "serving_float", "mc_dropout"):
            extra["seed"] = tf.constant(1)
        for pixels in wrong:
            pixels = pixels / np.float32(255.0) if name == "serving_float" else pixels
            with pytest.raises(tf.errors.InvalidArgumentError, match=r"Shape of tensor image \[4,12,12(,2)?\] is "
                                                                     r"not compatible with expected shape "
                                                                     r"\[\?,12,12,1\]"):
                signature(image=tf.constant(pixels), **extra)


def test_every_signature_refuses_an_empty_batch_in_one_line(export, tmp_path):
    # oneDNN's convolution refused an empty batch with a message about its own arguments.
    import keras
    import tensorflow as tf

    from dropzoo import export as export_lib

    _, images = export
    keras.utils.set_random_seed(0)
    image = keras.Input(shape=(12, 12, 1), name="image")
    x = keras.layers.Dropout(0.25)(keras.layers.Flatten()(keras.layers.Conv2D(2, 3, activation="relu")(image)))
    model = keras.Model(image, keras.layers.Softmax()(keras.layers.Dense(2)(x)))
    signatures = tf.saved_model.load(export_lib.export_saved_model(model, str(tmp_path / "conv"))).signatures
    assert signatures["serving_default"](image=tf.constant(images[:3]))["class_id"].shape == (3,)
    for name, signature in signatures.items():
        extra = {"samples": tf.constant(2)} if name.startswith("mc_") else {}
        if name not in ("serving_default", "serving_float", "mc_dropout"):
            extra["seed"] = tf.constant(1)
        pixels = images[:0] / np.float32(255.0) if name == "serving_float" else images[:0]
        with pytest.raises(tf.errors.InvalidArgumentError, match="no images to predict: the batch is empty"):
            signature(image=tf.constant(pixels), **extra)


@pytest.mark.slow
def test_saved_model_cli_run_with_float_pixels(export, tmp_path):
    path, images = export
    scaled, raw = tmp_path / "scaled.npy", tmp_path / "raw.npy"
    np.save(scaled, images[:4].astype(np.float32) / np.float32(255.0))
    np.save(raw, images[:4].astype(np.float32))
    cli = [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "run", "--dir", path, "--tag_set",
           "serve", "--signature_def", "serving_float", "--inputs"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    good = subprocess.run(cli + [f"image={scaled}"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert good.returncode == 0, good.stderr[-2000:]
    assert "class_id" in good.stdout
    bad = subprocess.run(cli + [f"image={raw}"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert bad.returncode != 0 and "serving_float takes pixels scaled to [0, 1]" in bad.stderr


def test_an_image_folder_of_other_classes_than_the_model_is_refused(export, tmp_path):
    """Folder k is scored as the model's class k: only right where the classes are the model's."""
    from dropzoo import evaluate
    from dropzoo import export as export_lib

    path, _ = export  # a 2-class model, exported with its class names
    assert export_lib.class_names(path) == ["left", "right"]
    two = write_folder(str(tmp_path / "two"), 8)
    result = evaluate.evaluate_on_dataset(path, data={"image_dir": two})  # the export says its classes
    assert result["num_examples"] == sources.load_source(image_dir=two, need_train=False).num_test
    three = write_folder(str(tmp_path / "three"), 8)
    os.rename(os.path.join(three, "left"), os.path.join(three, "aa"))
    write_folder(os.path.join(str(tmp_path), "more"), 12)
    os.rename(os.path.join(str(tmp_path), "more", "left"), os.path.join(three, "left"))
    with pytest.raises(DataError, match=r"^the model was trained on data without class names, so a folder's class "
                                        r"subfolders are its class numbers: name them by number, 0 to 1 \(some of "
                                        r"them will do\), got aa, left, right$"):
        evaluate.evaluate_on_dataset(path, data={"image_dir": three}, run_class_names=())
    renamed = write_folder(str(tmp_path / "renamed"), 8)
    os.rename(os.path.join(renamed, "right"), os.path.join(renamed, "zz"))
    for names in (None, ["left", "right"]):  # the export's own record, or its run's
        with pytest.raises(DataError, match=r"^the test images' class folders include zz, which the run did not "
                                            r"train on: nothing says which of its classes they hold"):
            evaluate.evaluate_on_dataset(path, data={"image_dir": renamed}, run_class_names=names)
    # Some of its classes, by name: scored as those, the others said absent.
    os.rename(os.path.join(renamed, "zz"), os.path.join(str(tmp_path), "zz"))
    result = evaluate.evaluate_on_dataset(path, data={"image_dir": renamed, "test_image_dir": renamed})
    assert result["classes_absent"] == [1] and result["num_examples"] == len(os.listdir(os.path.join(renamed,
                                                                                                     "left")))
    # Copied out of its run, a model without class names scored folder k as class k, right or not.
    from dropzoo import tflite
    model_path = str(tmp_path / "model.tflite")
    with open(model_path, "wb") as f:
        f.write(tflite.convert(path))
    assert tflite.Model.load(model_path).num_classes == 2
    with pytest.raises(DataError, match=r"model.tflite records no class names \(copied out of its run, or exported "
                                        r"before exports carried them\), so nothing says which"):
        evaluate.evaluate_on_dataset(model_path, data={"image_dir": two}, tflite_model=True)
    evaluate.evaluate_on_dataset(model_path, data={"image_dir": two}, tflite_model=True,
                                 run_class_names=["left", "right"])


def test_what_an_image_folder_given_to_eval_means_against_a_run(tmp_path):
    """folders.py: its own test folder, a folder's split, and images the run trained on."""
    from dropzoo import folders

    train, test, other = str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "c")
    tested_apart = {"image_dir": train, "test_image_dir": test, "image_size": [28, 28], "color_mode": "grayscale"}
    split_run = {"image_dir": train, "test_image_dir": None, "image_size": None, "color_mode": "grayscale"}
    assert folders.is_own_test_folder(tested_apart, {"image_dir": test + "/"})
    assert folders.is_own_test_folder(tested_apart, {"image_dir": test, "image_size": "28,28"})
    assert not folders.is_own_test_folder(tested_apart, {"image_dir": test, "image_size": "32,32"})
    assert not folders.is_own_test_folder(tested_apart, {"image_dir": test, "color_mode": "rgb"})
    assert not folders.is_own_test_folder(split_run, {"image_dir": train})
    assert folders.notes({"image_dir": other}, [(split_run, 9, "r", False)]) == [
        f"scored the test split of {other} (9 images: 20% of each class, rounded, at least one image each); to score "
        "every image in it, pass "
        f"--test_image_dir={other} too"]
    assert folders.notes({"image_dir": other, "test_image_dir": other}, [(split_run, 9, "r", False)]) == []
    for data in ({"dataset": "mnist"}, {"idx_dir": other}, {"npz": other}):  # no folder: nothing to say
        assert folders.notes(data, [(split_run, 9, "r", False)]) == []
    assert "--test_image_dir" not in folders.notes({"image_dir": train}, [(split_run, 9, "r", False)])[0]
    # Several runs: one note of each kind, naming them.
    assert folders.notes({"image_dir": train}, [(tested_apart, 9, "r1", False), (tested_apart, 12, "r2", False)]) == [
        f"scored the test split of {train} (9 or 12 images: 20% of each class, rounded, at least one "
        "image each)",
        f"{train} holds images 2 runs (r1, r2) trained on, so its scores there include training images, not test "
        "scores"]
    # The training folder scored whole, or by its split where the run was tested apart: training images.
    assert folders.scores_training_images(split_run, {"image_dir": train, "test_image_dir": train})
    assert folders.scores_training_images(tested_apart, {"image_dir": train})
    assert not folders.scores_training_images(split_run, {"image_dir": train})  # the split it held out
    assert not folders.scores_training_images(tested_apart, {"image_dir": other})
    # The training folder's split, changed since the run held it out: maybe training images.
    then, now = {"test_split": {"test_files_sha256": "a"}}, {"test_split": {"test_files_sha256": "b"}}
    assert folders.split_changed(split_run, then, {"image_dir": train}, now)
    assert not folders.split_changed(split_run, then, {"image_dir": train}, then)
    assert not folders.split_changed(split_run, then, {"image_dir": other}, now)  # another folder's split
    assert not folders.split_changed(split_run, {}, {"image_dir": train}, now)  # nothing recorded
    assert folders.notes({"image_dir": train}, [(split_run, 9, "r", True)])[1] == (
        f"{train} changed since r trained on it: its test split now holds other files than were held out, "
        "possibly images trained on, so its scores there are not test scores; restore the folder, or test on new "
        "images with --test_image_dir=DIR")


def test_a_folder_given_to_eval_is_read_as_the_run_read_its_images():
    # eval.py --workdir=RGB_RUN --image_dir=X read X as grayscale and refused it as the wrong shape.
    trained_on = {"image_dir": "a", "test_image_dir": None, "color_mode": "rgb", "image_size": [32, 32]}
    assert folders.with_run_image_options({"image_dir": "b"}, trained_on) == {
        "image_dir": "b", "color_mode": "rgb", "image_size": [32, 32]}
    given = {"image_dir": "b", "color_mode": "grayscale"}  # what is given stays given
    assert folders.with_run_image_options(given, trained_on)["color_mode"] == "grayscale"
    assert folders.with_run_image_options({"dataset": "mnist"}, trained_on) == {"dataset": "mnist"}
    assert folders.with_run_image_options({"image_dir": "b"}, None) == {"image_dir": "b"}
    # A run trained on an .npz of colour images records no colour mode: its image shape says it (eval.py --workdir
    # read such a folder in colour, --runs_dir gray and refused it).
    npz = {"npz": "colour.npz"}
    assert folders.with_run_image_options({"image_dir": "b"}, npz, [16, 16, 3]) == {"image_dir": "b",
                                                                                    "color_mode": "rgb"}
    assert folders.with_run_image_options({"image_dir": "b"}, npz, [16, 16, 1]) == {"image_dir": "b"}
    assert folders.with_run_image_options(given, npz, [16, 16, 3])["color_mode"] == "grayscale"


def _named_folder(root, classes):
    for k, name in enumerate(classes):
        os.makedirs(os.path.join(root, name))
        for i in range(2):
            Image.fromarray(np.full((12, 12), 20 * k + i, np.uint8)).save(os.path.join(root, name, f"{i}.png"))
    return root


def test_a_digit_run_scores_only_folders_named_by_class_number(tmp_path, caplog):
    # An MNIST run scored on folders zero..nine mapped them in sorted order (eight, five, four, ...): 8.5%.
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    named = sources.load_source(image_dir=_named_folder(str(tmp_path / "words"), words),
                                test_image_dir=_named_folder(str(tmp_path / "words_test"), words), need_train=False)
    with pytest.raises(DataError, match=r"trained on data without class names, so a folder's class subfolders are "
                                        r"its class numbers: name them by number, 0 to 9"):
        folders.check_classes(named, 10, ())
    with pytest.raises(DataError, match=r"^the model records no class names"):  # a model of unknown origin
        folders.check_classes(named, 10, None)
    digits = [str(k) for k in range(10)]
    numbered = sources.load_source(image_dir=_named_folder(str(tmp_path / "digits"), digits),
                                   test_image_dir=_named_folder(str(tmp_path / "digits_test"), digits),
                                   need_train=False)
    folders.check_classes(numbered, 10, ())
    folders.check_classes(numbered, 10, None)  # a model of unknown origin: folders named by class number
    # A run with named classes (a tfds dataset's: Fashion-MNIST's 'T-shirt/top' is no folder name) takes them too.
    fashion = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot"]
    assert folders.check_classes(numbered, 10, fashion) is numbered
    # Folders of some of the classes: scored as those (the evaluation notes the classes absent).
    assert folders.check_classes(numbered, 11, fashion + ["Hat"]) is numbered

    def labels(source):
        return [int(label) for _, label in source.test.as_numpy_iterator()]

    # Folders of the run's names, whose order is not sorted order: each scored as the run's class of its name (they
    # were refused: folder k would have been class k).
    shuffled = ["b", "a", "c"]
    abc = sources.load_source(image_dir=_named_folder(str(tmp_path / "abc"), sorted(shuffled)),
                              test_image_dir=_named_folder(str(tmp_path / "abc_test"), sorted(shuffled)),
                              need_train=False)
    relabelled = folders.check_classes(abc, 3, shuffled)
    assert labels(abc) == [0, 0, 1, 1, 2, 2] and labels(relabelled) == [1, 1, 0, 0, 2, 2]
    assert relabelled.details["class_ids"] == {"a": 1, "b": 0, "c": 2}
    assert sources.fingerprint(relabelled) != sources.fingerprint(abc)
    # ... and some of them: folders a and c of a run on b, a, c, d.
    ac = sources.load_source(image_dir=_named_folder(str(tmp_path / "ac"), ["a", "c"]),
                             test_image_dir=_named_folder(str(tmp_path / "ac_test"), ["a", "c"]), need_train=False)
    assert labels(folders.check_classes(ac, 4, shuffled + ["d"])) == [1, 1, 2, 2]
    # Folders named by number, some of them: each scored as its number's class (not as its place in the list).
    some = sources.load_source(image_dir=_named_folder(str(tmp_path / "37"), ["3", "7"]),
                               test_image_dir=_named_folder(str(tmp_path / "37_test"), ["3", "7"]), need_train=False)
    caplog.clear()
    for run_names in ((), None, fashion):
        assert labels(folders.check_classes(some, 10, run_names)) == [3, 3, 7, 7]
    # ... said where the run's classes have names (a folder 1/ of a run on one, seven, three was 'seven', unsaid).
    said = [r.getMessage() for r in caplog.records if "each scored as the run's class of that number" in r.getMessage()]
    assert len(said) == 1 and said[0].endswith("class of that number: 3 as 'Dress', 7 as 'Sneaker'"), said
    with pytest.raises(DataError, match=r"^the test images' class folders include 7, which the run did not "
                                        r"train on: nothing says"):  # a run whose classes were numbers: held to them
        folders.check_classes(some, 10, ["1", "10", "2", "3"])
    # A run on 1, 2, 3, x: folder 1/ is its class '1' alone, and refused beside a 0/ (it became class id 1, '2').
    one = sources.load_source(image_dir=_named_folder(str(tmp_path / "1"), ["1"]),
                              test_image_dir=_named_folder(str(tmp_path / "1_test"), ["1"]), need_train=False)
    assert labels(folders.check_classes(one, 4, ["1", "2", "3", "x"])) == [0, 0]
    zero_one = sources.load_source(image_dir=_named_folder(str(tmp_path / "01"), ["0", "1"]),
                                   test_image_dir=_named_folder(str(tmp_path / "01_test"), ["0", "1"]),
                                   need_train=False)
    with pytest.raises(DataError, match=r"^the test images' class folders include 0, which the run did not train "
                                        r"on: nothing says which of its classes they hold; leave out a class the "
                                        r"run did not train on \(one added since it trained\), or name each folder "
                                        r"as the run's class it holds \(some of them will do\)$"):
        folders.check_classes(zero_one, 4, ["1", "2", "3", "x"])
    with pytest.raises(DataError, match=r"^the test images' class folder\(s\) 7 name no class of the model, which "
                                        r"answers 5 classes \(0 to 4\); leave them out$"):
        folders.check_classes(some, 5, ())  # folder 7 of a 5-class model
    # A tfds dataset's labels are class ids, whatever names it has: scored by any run (it was refused as a folder).
    images = np.arange(8 * 28 * 28, dtype=np.uint32).reshape(8, 28, 28, 1).astype(np.uint8)
    tfds_like = sources.array_source("tfds:fashion_mnist", (images[:4], np.arange(4)), (images[4:], np.arange(4)),
                                     origin={"dataset": "fashion_mnist"}, details={"class_names": fashion})
    folders.check_classes(tfds_like, 10, ())
    folders.check_classes(tfds_like, 10, None)
    folders.check_classes(tfds_like, 10, fashion)  # a run trained on those names, in that order
    # ... but where the run's classes have names, a dataset's label k is its class k only under the same name: a run
    # scored 0% on its own classes in another order, without a word.
    reordered = fashion[1:] + fashion[:1]
    with pytest.raises(DataError, match=r"^tfds:fashion_mnist's classes are the run's classes in another order "
                                        r"\(label 0 is 'T-shirt/top', the run's class 0 'Trouser'\): its label k "
                                        r"would be scored as the run's class k; evaluate on data with the run's "
                                        r"classes in its order"):
        folders.check_classes(tfds_like, 10, reordered)
    with pytest.raises(DataError, match=r"^tfds:fashion_mnist's classes include T-shirt/top, .*, which the run did "
                                        r"not train on"):
        folders.check_classes(tfds_like, 10, [f"class {k}" for k in range(10)])
    digits_like = sources.array_source("tfds:mnist", (images[:4], np.arange(4)), (images[4:], np.arange(4)),
                                       origin={"dataset": "mnist"}, details={"class_names": digits})
    folders.check_classes(digits_like, 10, [f"{k:02d}" for k in range(10)])  # folders 00..09: the same numbers
    # A run trained on folders 0..9 takes a named dataset's labels as its class numbers, as its folders say.
    folders.check_classes(tfds_like, 10, digits)
    with pytest.raises(DataError, match=r"^tfds:fashion_mnist's classes include T-shirt/top"):  # folders 1..10: not
        folders.check_classes(tfds_like, 10, sorted(str(k) for k in range(1, 11)))  # class ids


def test_wide_pixels_are_refused_and_skipped_entries_are_said(tmp_path, caplog):
    root = write_folder(str(tmp_path / "f"), 8)
    ramp = (np.arange(16 * 16, dtype=np.uint16).reshape(16, 16) * 250)
    wide = os.path.join(root, "left", "wide.png")
    Image.fromarray(ramp).save(wide)  # 16-bit: Pillow's convert clipped it to nearly white
    with pytest.raises(DataError, match=r"wide.png has I;16 pixels \(16-bit\); images are read as 8-bit"):
        readers.read_images([wide])
    os.remove(wide)
    os.makedirs(os.path.join(root, "left", "more"))
    os.makedirs(os.path.join(root, "left", "album.png"))  # a folder named as an image: not read, and said once
    open(os.path.join(root, "right", "photo.webp"), "wb").close()
    open(os.path.join(root, "right", "notes.txt"), "w").close()
    open(os.path.join(root, "stray.png"), "wb").close()  # beside the class folders
    open(os.path.join(root, "left", ".DS_Store"), "wb").close()  # hidden: not said
    with caplog.at_level("WARNING"):
        _, files = readers.list_image_folder(root)
    assert not any(path.endswith((".webp", ".txt", "stray.png", "album.png")) for path, _ in files)
    assert "5 entries are not read (subfolders, files beside the class folders, and files other than" in caplog.text
    assert "stray.png, left/album.png/, left/more/, right/notes.txt, right/photo.webp" in caplog.text
    webp_only = write_folder(str(tmp_path / "w"), 6)
    for name in os.listdir(os.path.join(webp_only, "right")):
        os.rename(os.path.join(webp_only, "right", name), os.path.join(webp_only, "right", name + ".webp"))
    with pytest.raises(DataError, match=r"right has no images .*; it holds \d+ other file\(s\), e.g. .*\.png\.webp; "
                                        r"add its images to it \(or convert them\)"):
        readers.list_image_folder(webp_only)
    only_nested = os.path.join(root, "nested")
    os.makedirs(os.path.join(only_nested, "inner"))
    with pytest.raises(DataError, match=r"nested has no images .*; its subfolders \(inner\) are not read"):
        readers.list_image_folder(root)


def test_colour_images_read_as_grayscale_are_said_to_be(tmp_path, caplog):
    gray = write_folder(str(tmp_path / "gray"), 6, rgb=True)  # RGB files of grey pixels: nothing lost
    with caplog.at_level("WARNING"):
        readers.read_images([os.path.join(gray, "left", f) for f in os.listdir(os.path.join(gray, "left"))])
    assert "has colours" not in caplog.text
    red = os.path.join(gray, "left", "red.png")
    Image.fromarray(np.tile(np.array([200, 10, 10], np.uint8), (12, 12, 1))).save(red)
    with caplog.at_level("WARNING"):
        assert readers.read_images([red]).shape == (1, 12, 12, 1)
    assert "1 of 1 image(s) have colours (e.g. " in caplog.text and "red.png), and images are read as grayscale" in \
        caplog.text
    assert readers.read_images([red], color_mode="rgb").shape == (1, 12, 12, 3)
    # Test images to score, in the flags' default mode: not "as the run takes them" (there may be no run, and the
    # model take colour).
    caplog.clear()
    with caplog.at_level("WARNING"):
        sources.load_source(image_dir=gray, test_image_dir=gray, need_train=False)
    assert ("red.png), and images are read as grayscale (the run's colour mode, or --color_mode=grayscale, "
            "the default); a model that takes colour needs --color_mode=rgb") in caplog.text
    assert re.search(r"\b1 of \d+ image\(s\) have colours \(e\.g\. ", caplog.text)  # how many, not one file


def test_transparent_images_are_said_to_lose_their_background(tmp_path, caplog):
    """Ink on a transparent sheet was read as a black sheet, without a word (a drawing model then scored chance)."""
    ink = np.zeros((12, 12, 4), np.uint8)
    ink[4:8, 2:10, 3] = 255  # opaque black strokes; the rest transparent black
    drawn = str(tmp_path / "drawn.png")
    Image.fromarray(ink).save(drawn)
    opaque = str(tmp_path / "opaque.png")
    Image.fromarray(np.full((12, 12, 4), 255, np.uint8)).save(opaque)  # an alpha channel, every pixel opaque
    keyed = str(tmp_path / "keyed.png")
    Image.fromarray(np.full((12, 12), 7, np.uint8)).save(keyed, transparency=7)  # a grey marked transparent
    with caplog.at_level("WARNING"):
        readers.read_images([opaque])
    assert "transparent" not in caplog.text
    with caplog.at_level("WARNING"):
        read = readers.read_images([opaque, drawn, keyed])
    assert read[1].max() == 0  # the drawing as read: a black sheet
    assert ("2 image(s) have transparent pixels (e.g. " + drawn + "); they are read without their transparency, so "
            "the colour stored under it shows (black in most files)") in caplog.text


def test_an_image_size_too_large_to_hold_is_refused_before_reading(tmp_path):
    """--image_size=100000,100000 ran out of memory (killed, or a MemoryError traceback)."""
    with pytest.raises(DataError, match=r"^--image_size=100000,100000 is 10,000,000,000 pixels an image, more than"):
        readers.parse_image_size("100000,100000")
    with pytest.raises(DataError, match=r"^10,000,000 images at --image_size=5000,5000 take .* GiB, more than half of "
                                        r"this machine's"):
        readers.read_images(["unread.png"] * 10_000_000, size=(5000, 5000))


@pytest.mark.slow
def test_a_training_folder_changed_since_its_run_is_not_scored_as_test_data(tmp_path, eval_main, capsys):
    # The split is per class by path hash: new images move it, and images trained on may then be scored.
    train = write_folder(str(tmp_path / "train"), 30)
    root = str(tmp_path / "runs")
    workdir = os.path.join(root, "m", "seed0")
    trainer.train_and_evaluate(_tiny(image_dir=train, epochs=1), workdir, verbose=0, serving_artifacts=False)
    assert eval_main(f"--workdir={workdir}") == 0
    assert "note:" not in capsys.readouterr().err  # the folder as it was: the run's own test split
    write_folder(os.path.join(str(tmp_path), "more"), 30, seed=5)
    for label in ("left", "right"):
        for name in os.listdir(os.path.join(tmp_path, "more", label)):
            os.rename(os.path.join(tmp_path, "more", label, name), os.path.join(train, label, "new" + name))
    changed = f"{train} changed since {workdir} trained on it: its test split now holds other files than were held out"
    assert eval_main(f"--workdir={workdir}") == 0
    assert changed in capsys.readouterr().err
    assert eval_main(f"--workdir={workdir}", f"--image_dir={train}") == 0
    assert changed in capsys.readouterr().err
    comparison = compare.compare_runs(root, data_override={"image_dir": train})
    assert any(note.startswith(f"{train} changed since {workdir} trained on it") for note in comparison["notes"])


def test_a_dry_run_reads_the_training_images_as_training_does(tmp_path):
    """It read the test split only: a test folder copied from the training folder, or a training image that
    cannot be read, passed it ("1 to train") and was refused when training started."""
    train = write_folder(str(tmp_path / "train"), 24)
    copy = str(tmp_path / "copy")
    shutil.copytree(train, copy)
    config = config_lib.TrainConfig(model="dense_mlp", image_dir=train, test_image_dir=copy)
    with pytest.raises(DataError, match="every one of its 24 test images is also a training image"):
        sweep.dry_run([(config, str(tmp_path / "run"))])[0]
    test = write_folder(str(tmp_path / "test"), 8, seed=1)
    with open(os.path.join(train, "left", "broken.png"), "wb") as f:
        f.write(b"not a png")
    config = config_lib.TrainConfig(model="dense_mlp", image_dir=train, test_image_dir=test)
    with pytest.raises(DataError, match=r"cannot be read as images: .*broken.png"):
        sweep.dry_run([(config, str(tmp_path / "run"))])[0]
    os.remove(os.path.join(train, "left", "broken.png"))
    assert "1 run(s), 1 to train" in sweep.dry_run([(config, str(tmp_path / "run"))])[0]
    assert not (tmp_path / "run").exists()


def test_a_dry_run_of_a_sweep_on_a_callers_arrays_checks_the_networks_on_them(tmp_path):
    """It said MNIST would be downloaded, and built each network on 28x28x1 images, for runs given source=."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 6, 6, 3), dtype=np.uint8)
    arrays = sources.array_source("mine", (images[:32], np.arange(32) % 2), (images[32:], np.arange(8) % 2))
    runs = [(_tiny(model="dry_arrays_cnn", placement=p, network="conv4k3,conv4k3,flatten,dense8,logits"),
             str(tmp_path / p)) for p in ("none", "before_dense")]
    text, refused = sweep.dry_run(runs, source=arrays)
    assert refused == 0 and "2 run(s), 2 to train" in text and "mnist" not in text
    deep = [(_tiny(model="dry_arrays_deep", network="conv4k3,conv4k3,conv4k3,flatten,dense8,logits"),
             str(tmp_path / "deep"))]
    with pytest.raises(ValueError, match=r"layer .conv3. takes a 3x3 window but its input is 2x2x4"):  # on 6x6
        sweep.dry_run(deep, source=arrays)
    deep = [(dataclasses.replace(deep[0][0], dataset="mnist_sample"), deep[0][1])]
    assert "1 to train" in sweep.dry_run(deep)[0]  # on the config's own data (28x28 digits) it fits
    # A config naming other data beside the source: refused as training refuses it (it said "1 to train").
    with pytest.raises(DataError, match=r"^source=mine replaces the config's data, and the config names other data "
                                        r"\(--dataset=mnist_sample\)"):
        sweep.dry_run(deep, source=arrays)


def test_a_folder_whose_names_are_not_utf8_is_split_and_read(tmp_path):
    """A class folder named in Latin-1 crashed the 20% split with a bare UnicodeEncodeError naming no file."""
    root = write_folder(str(tmp_path / "latin1"), 12)
    os.rename(os.path.join(root, "left"), os.path.join(root, b"\xe9t\xe9".decode("utf-8", "surrogateescape")))
    source = sources.load_source(image_dir=root)
    assert source.num_train + source.num_test == 12 and source.num_classes == 2
    again = sources.load_source(image_dir=root)
    assert source.details["test_split"] == again.details["test_split"]


def test_an_npz_test_split_without_one_of_the_classes_is_refused(tmp_path):
    """As a test folder without one of the classes: the accuracy would cover the others only, and say nothing."""
    images = np.random.default_rng(0).integers(0, 255, (30, 4, 4), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x_train=images[:20], y_train=np.arange(20) % 3, x_test=images[20:],
             y_test=np.zeros(10, int))
    with pytest.raises(DataError, match=r"d.npz: y_test has no example of class\(es\) 1, 2 that y_train trains on"):
        sources.load_source(npz=str(tmp_path / "d.npz"))
    # Only tested (eval.py, OOD data): what it holds is what is asked to be scored.
    assert sources.load_source(npz=str(tmp_path / "d.npz"), need_train=False).num_test == 10


def test_class_folders_named_by_numbers_in_text_order_are_said(tmp_path, caplog):
    """Folders 0..10 are classes 0, 1, 10, 2, ... (Keras' order): npz labels 0..10 meant as the folder numbers
    then scored 27% where the folder scored 82%, without a word."""
    for name in map(str, range(11)):
        os.makedirs(tmp_path / "n" / name)
        for i in range(2):
            Image.fromarray(np.full((4, 4), 20 * int(name) + i, np.uint8)).save(tmp_path / "n" / name / f"{i}.png")
    source = sources.load_source(image_dir=str(tmp_path / "n"))
    assert source.details["class_names"][:3] == ["0", "1", "10"]
    said = [r.getMessage() for r in caplog.records]
    assert any("its class folders are numbers, ordered as text, as Keras orders them (0, 1, 10, 2, ...): class id 2 "
               "is folder '10', not folder '2'; labels meant as the numbers would not match (pad them: 01, 02, ..., "
               "10)" in m and "start at 0" not in m for m in said), said
    # Numbered from 1: padding alone leaves the ids one below the numbers, said too.
    for name in ("1", "2", "10"):
        os.makedirs(tmp_path / "m" / name)
        for i in range(2):
            Image.fromarray(np.full((4, 4), 20 * int(name) + i, np.uint8)).save(tmp_path / "m" / name / f"{i}.png")
    caplog.clear()
    sources.load_source(image_dir=str(tmp_path / "m"))
    assert any("(1, 10, 2, ...): class id 1 is folder '10', not folder '2'; labels meant as the numbers would not "
               "match (pad them: 01, 02, ..., 10); padded too, ids start at 0: folder '1' would be class 0"
               in r.getMessage()
               for r in caplog.records), caplog.text
    arrays = sources.array_source("npz:x", None, (np.zeros((2, 4, 4, 1), np.uint8), np.array([0, 1])))
    folders.check_classes(arrays, 11, source.details["class_names"])
    assert any("npz:x: its labels are read as the run's class ids" in r.getMessage() and
               "label 2 scores as folder '10'" in r.getMessage() for r in caplog.records)


def test_images_are_read_upright_and_palette_colours_are_said(tmp_path, caplog):
    """A camera's EXIF orientation was ignored (a portrait photo trained sideways), and a colour palette PNG was
    read as grayscale without the warning an RGB one gets."""
    pixels = np.zeros((8, 12, 3), np.uint8)
    pixels[:, :6] = 255
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # stored rotated: shown turned by 90 degrees
    image.save(tmp_path / "turned.jpg", exif=exif)
    [upright] = readers.read_images([str(tmp_path / "turned.jpg")], color_mode="rgb")
    assert upright.shape == (12, 8, 3)
    palette = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), mode="P")
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.save(tmp_path / "palette.png")
    readers.read_images([str(tmp_path / "palette.png")])
    assert any("palette.png), and images are read as grayscale" in r.getMessage() for r in caplog.records)


def test_a_class_folder_linked_to_another_is_said_to_train_its_images_under_two_labels(tmp_path, caplog):
    """A symlinked alias class trained the same images under two labels, with only the test-duplicates warning."""
    root = write_folder(str(tmp_path / "alias"), 24)
    os.symlink(os.path.join(root, "left"), os.path.join(root, "leftalias"))
    source = sources.load_source(image_dir=root)
    assert source.num_classes == 3 and source.details["images_under_two_labels"] > 0
    assert any("of its training images are under two or more labels" in r.getMessage() or
               "of its training images is under two or more labels" in r.getMessage() for r in caplog.records)
    assert "images_under_two_labels" not in sources.load_source(image_dir=write_folder(str(tmp_path / "b"), 24)).details


def test_a_copy_of_a_runs_training_folder_is_said_to_hold_its_training_images(tmp_path):
    """Compared by path only, a byte copy of the training folder was scored as test data without a note."""
    train = write_folder(str(tmp_path / "train"), 24)
    copy = str(tmp_path / "copy")
    shutil.copytree(train, copy)
    origin = {"image_dir": train, "test_image_dir": None, "image_size": None, "color_mode": "grayscale"}
    given = {"image_dir": copy, "test_image_dir": copy, "color_mode": "grayscale"}
    [note] = folders.notes(given, [(origin, 24, "runs/r", False)])
    assert note == (f"{copy} holds images runs/r trained on, so its scores there include training images, not test "
                    "scores")
    other = write_folder(str(tmp_path / "other"), 12, seed=7)
    assert folders.notes({"image_dir": other, "test_image_dir": other}, [(origin, 12, "runs/r", False)]) == []


def test_folder_entries_that_would_be_lost_or_misread_are_refused_with_the_fix(tmp_path):
    # A class on a disk not mounted: a class less, said only among skipped files.
    root = write_folder(str(tmp_path / "linked"), 8)
    os.symlink(str(tmp_path / "unmounted" / "triangle"), os.path.join(root, "triangle"))
    with pytest.raises(DataError, match=r"linked: triangle is a link to .*unmounted/triangle, which does not exist"):
        readers.list_image_folder(root)
    os.remove(os.path.join(root, "triangle"))
    os.symlink(str(tmp_path / "gone.png"), os.path.join(root, "cover.png"))  # a file beside the classes: not read
    assert readers.list_image_folder(root)[0] == ["left", "right"]
    # A folder of splits: train and test read as two classes without images.
    splits = str(tmp_path / "data")
    write_folder(os.path.join(splits, "train"), 8), write_folder(os.path.join(splits, "test"), 8)
    with pytest.raises(DataError, match=rf"a folder of splits: pass --image_dir={splits}/train --test_image_dir="
                                        rf"{splits}/test$"):
        readers.list_image_folder(splits)
    # '²' is a digit to str.isdigit, not a number int() reads: the number-order check raised ValueError.
    assert readers.first_out_of_number_order(["1", "²"]) is None


def test_a_class_mismatch_names_the_differences_not_every_class():
    names = [f"class{k:03d}" for k in range(300)]
    def arrays(names):
        train, test = (np.arange(k, k + 16, dtype=np.uint8).reshape(4, 2, 2, 1) for k in (0, 100))
        return sources.array_source("t", (train, np.array([0, 1, 0, 1])), (test, np.array([0, 1, 0, 1])),
                                    origin={"image_dir": "folders"}, details={"class_names": names})

    test = arrays(names[:299] + ["extra"])
    with pytest.raises(DataError) as info:
        folders.check_classes(test, 300, names)
    assert str(info.value).startswith("the test images' class folders include extra, which the run did not train "
                                      "on: nothing says which of its classes they hold; leave out a class the run "
                                      "did not train on (one added since it trained), or name each folder as the "
                                      "run's class it holds (some of them will do)") and len(str(info.value)) < 360
    nfd = [unicodedata.normalize("NFD", n) for n in ("café", "thé")]
    mac = arrays(nfd)
    with pytest.raises(DataError, match=r"^the test images' class folders include 'cafe\\u0301', 'the\\u0301', which "
                                        r"the run did not train on \(the run's names in another Unicode form, as a "
                                        r"Mac writes them"):
        folders.check_classes(mac, 2, ["café", "thé"])
    assert "Unicode" not in folders._difference(["b"], ["a", "b"], in_order=True)  # nothing extra: no such hint
    with pytest.raises(DataError, match=r"^the test images' class folders include Cat, which the run did not train "
                                        r"on \(names differ in case only: 'Cat' here, 'cat' in the run; class names "
                                        r"are case-sensitive: rename the folders to the run's\)"):
        folders.check_classes(arrays(["Cat", "dog"]), 2, ["cat", "dog"])


def test_scoring_arrays_needs_their_test_split_alone_and_says_when_it_holds_training_images(tmp_path):
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 255, (40, 6, 6), dtype=np.uint8), np.arange(40) % 4
    np.savez(tmp_path / "run.npz", x_train=images[:30], y_train=labels[:30], x_test=images[30:], y_test=labels[30:])
    # A test split alone was refused ("lacks x_train, y_train"), and a dummy training split had to hold every class.
    np.savez(tmp_path / "only_test.npz", x_test=images[:10], y_test=labels[:10])
    scored = sources.load_source(npz=str(tmp_path / "only_test.npz"), need_train=False)
    assert scored.num_test == 10 and scored.num_train == 0
    with pytest.raises(DataError, match=r"only_test.npz lacks x_train, y_train"):
        sources.load_source(npz=str(tmp_path / "only_test.npz"))  # training still needs both
    # Its first 10 images are training images of the run's data: said, as for an image folder.
    trained_on = {"npz": str(tmp_path / "run.npz")}
    assert folders.trained_images_notes(trained_on, {"npz": str(tmp_path / "only_test.npz")}, "r", 10) == [
        "10 of the 10 images scored are in the training split of r's data (byte for byte), which it drew its "
        "training images from, so its scores there may include training images, not test scores"]
    assert folders.trained_images_notes(trained_on, trained_on, "r", 10) == []  # its own test split
    assert folders.trained_images_notes({"dataset": "mnist"}, trained_on, "r", 10) == []  # not loaded to look
    # The embedded sample is local too: a run trained on it, scored on some of its training digits.
    sample = sources.load_source(dataset="mnist_sample")
    digits, digit_labels = next(sample.train.batch(7).as_numpy_iterator())
    np.savez(tmp_path / "digits.npz", x_test=digits[..., 0], y_test=digit_labels)
    assert folders.trained_images_notes({"dataset": "mnist_sample"}, {"npz": str(tmp_path / "digits.npz")}, "r",
                                        7)[0].startswith("7 of the 7 images scored are in the training split of r's")


def test_a_workdir_inside_the_image_folder_is_refused_before_anything_is_written(tmp_path):
    """--workdir=--image_dir trained, then its checkpoints/, saved_model/ ... were class folders of its own data."""
    root = write_folder(str(tmp_path / "imgs"), 8)
    for workdir, name in ((root, "image_dir"), (os.path.join(root, "runs", "r"), "image_dir")):
        config = config_lib.TrainConfig(model="dense_mlp", image_dir=root, epochs=1)
        with pytest.raises(trainer.RunError, match=rf"^--workdir {re.escape(workdir)} is (inside )?--{name} "
                                                   rf"{re.escape(root)}: the run's records would be read as class "
                                                   "folders of its images; give a --workdir outside"):
            trainer.train_and_evaluate(config, workdir, verbose=0)
    assert sorted(os.listdir(root)) == ["left", "right"]


def test_a_rerun_naming_the_same_data_another_way_is_the_same_run(tmp_path, monkeypatch):
    """'16, 16' against a run recorded with '16,16', or another path to the same folder (relative from elsewhere,
    or moved), was refused as other settings, with --overwrite (training it again) offered. Content decides."""
    monkeypatch.chdir(tmp_path)
    os.makedirs("data/train")
    saved = config_lib.TrainConfig(image_dir="data/train", image_size="16,16").to_dict()
    same = config_lib.TrainConfig(image_dir=str(tmp_path / "data" / "train") + "/", image_size="16, 16")
    assert config_lib.differences(saved, same) == []
    other = config_lib.TrainConfig(image_dir=str(tmp_path / "data"), image_size="16,17")
    assert config_lib.differences(saved, other) == ["image_size"]  # the folder: its content is compared apart
    assert config_lib.differences(saved, config_lib.TrainConfig(npz="d.npz", image_size="16,16")) == [
        "image_dir", "npz"]  # another kind of data


def test_an_unset_data_path_and_an_empty_one_are_one_setting():
    """A run recorded with `idx_dir: ""` (TrainConfig(idx_dir="") from Python) was refused on a rerun without it as
    other settings; a `sites` recorded as a non-string raised a TypeError instead of naming the field."""
    saved = {**config_lib.TrainConfig().to_dict(), "idx_dir": "", "tfds_data_dir": ""}
    assert config_lib.differences(saved, config_lib.TrainConfig()) == []
    assert config_lib.differences(saved, config_lib.TrainConfig(idx_dir="data")) == ["idx_dir"]
    assert config_lib.settings_apart({"sites": 3}, config_lib.TrainConfig().to_dict()) == ["sites"]


@pytest.mark.parametrize("images,labels,hint", [
    (np.zeros((4, 3, 8, 8), np.uint8), np.arange(4), "(channels first: np.moveaxis(x_train, 1, -1))"),
    (np.zeros((4, 8, 8), np.uint8), np.eye(4, dtype=np.int64), "e.g. y_train.argmax(axis=1) (one-hot)"),
    (np.zeros((4, 8, 8), np.uint8), np.array(["a", "b", "a", "b"]), "np.unique(y_train, return_inverse=True)[1]"),
])
def test_arrays_in_a_common_other_layout_get_the_line_that_converts_them(images, labels, hint):
    with pytest.raises(DataError) as info:
        readers.check_arrays("d.npz", (images, labels), (images, labels))
    assert hint in str(info.value) and "\n" not in str(info.value)


def test_the_dry_run_compares_the_data_of_a_run_named_by_another_path(tmp_path):
    """A path no longer names a run (content does): --dry_run said 'finished: kept' where training refused."""
    train = write_folder(str(tmp_path / "train"), 16)
    workdir = str(tmp_path / "run")
    trainer.train_and_evaluate(_tiny(image_dir=train, epochs=1), workdir, verbose=0, serving_artifacts=False)
    moved = shutil.copytree(train, str(tmp_path / "moved"))
    assert "(finished: kept)" in sweep.dry_run([(_tiny(image_dir=moved, epochs=1), workdir)])[0]
    other = write_folder(str(tmp_path / "other"), 16, seed=7)
    plan = sweep.dry_run([(_tiny(image_dir=other, epochs=1), workdir)])[0]
    assert "(refused: " in plan and "holds a run finished on other training data" in plan
    os.remove(os.path.join(workdir, "metrics.json"))  # as if interrupted: it would resume on other data
    plan = sweep.dry_run([(_tiny(image_dir=other, epochs=1), workdir)])[0]
    assert "(refused: the training data differs from what this run's 1 epochs" in plan


def test_gray_images_read_as_rgb_and_images_stretched_to_the_size_are_said(tmp_path, caplog):
    """A grayscale test folder scored by a colour run (its mode and size applied) was converted and resized
    without a word, as were images of another shape than --image_size."""
    paths = []
    for i, (mode, size) in enumerate([("L", (64, 64)), ("RGB", (32, 32)), ("RGB", (96, 32)), ("RGB", (64, 64))]):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.new(mode, size, 128).save(paths[-1])
    assert readers.read_images(paths, size=(32, 32), color_mode="rgb").shape == (4, 32, 32, 3)
    said = [r.getMessage() for r in caplog.records]
    assert f"1 of 4 image(s) are grayscale (e.g. {paths[0]}) and are read as rgb, each channel the same gray" in said
    assert (f"1 of 4 image(s) have another shape than 32x32 (width x height; e.g. {paths[2]}, 96x32) and are "
            "stretched to it, not cropped") in said
    caplog.clear()
    readers.read_images(paths[1:2] + paths[3:], size=(32, 32), color_mode="rgb")  # colour, same shape: nothing
    assert not caplog.records


def test_test_folders_named_in_another_unicode_form_are_said_to_be(tmp_path):
    # The two lists printed alike ('Éclair' and 'Éclair'): the test folders were the same names, decomposed.
    import unicodedata

    names = ["Éclair", "Tarte"]
    train = _named_folder(str(tmp_path / "train"), names)
    test = _named_folder(str(tmp_path / "test"), [unicodedata.normalize("NFD", n) for n in names])
    with pytest.raises(DataError, match=r"has class folder\(s\) 'E\\u0301clair' that --image_dir .* lacks; both take "
                                        r"the same class subfolders \(these are its names in another Unicode form, "
                                        r"as a Mac writes them"):
        sources.load_source(image_dir=train, test_image_dir=test)
    other = _named_folder(str(tmp_path / "other"), ["Éclair", "Gâteau"])
    with pytest.raises(DataError, match=r"has class folder\(s\) 'Gâteau' that --image_dir .* lacks; both take the "
                                        r"same class subfolders$"):
        sources.load_source(image_dir=train, test_image_dir=other)


def test_a_runs_own_test_folder_is_scored_whatever_its_training_folder_gained_since(png_folders, tmp_path, eval_main,
                                                                                     capsys):
    # A class added to the training folder after the run (aa, sorting first) shifted every test label by one
    # and the run's own, unchanged test folder was refused, naming aa as the test folder's.
    train, test = png_folders
    workdir = str(tmp_path / "run")
    trainer.train_and_evaluate(_tiny(image_dir=train, test_image_dir=test, epochs=1), workdir, verbose=0,
                               serving_artifacts=False)
    assert eval_main(f"--workdir={workdir}") == 0
    before = capsys.readouterr().out.splitlines()[-1]
    # From Python, a run's export without data= is scored on the run's own test data too (it took MNIST).
    from dropzoo import evaluate as evaluate_lib
    with open(os.path.join(workdir, "eval.json")) as f:
        assert evaluate_lib.evaluate_on_dataset(os.path.join(workdir, "saved_model"))["accuracy"] == (
            json.load(f)["accuracy"])
    # eval.py --saved_model naming the run's directory scores its export as the run's own (its data, its folder's
    # image options), as --saved_model=RUN/saved_model does.
    assert eval_main(f"--saved_model={workdir}/saved_model") == 0
    by_export = capsys.readouterr()
    assert eval_main(f"--saved_model={workdir}") == 0
    by_run = capsys.readouterr()
    assert by_run.out.splitlines()[-1] == by_export.out.splitlines()[-1] and by_run.err == by_export.err
    # The run's directory serves for its export, as the client takes it (it was refused, naming eval.py's flags).
    assert evaluate_lib.evaluate_on_dataset(workdir)["saved_model"] == os.path.abspath(os.path.join(workdir,
                                                                                                     "saved_model"))
    with pytest.raises(DataError, match=r"^data= takes load_source's arguments as a dict, e\.g\. \{'dataset': "
                                        r"'mnist_sample'\} or \{'npz': PATH\}, not str 'mnist_sample'$"):
        evaluate_lib.evaluate_on_dataset(workdir, data="mnist_sample")
    with pytest.raises(DataError, match=r"^unknown data argument\(s\) datset; valid: "):
        evaluate_lib.evaluate_on_dataset(workdir, data={"datset": "mnist_sample"})
    shutil.copytree(os.path.join(train, "left"), os.path.join(train, "aa"))
    assert eval_main(f"--workdir={workdir}") == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[-1] == before and "note:" not in captured.err  # its own test data, as before
    # Its training folder given as out-of-distribution data: refused (it scored an AUROC near 0.5 without a word).
    shutil.rmtree(os.path.join(train, "aa"))
    assert eval_main(f"--workdir={workdir}", "--mc_samples=2", f"--ood_image_dir={train}") == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        "error: the out-of-distribution data is the training data of the model, or a copy of some of it: all 40 of "
        "its images are training-split images (byte for byte)")
    # The export copied out of its run, scored on its folders: the training folder as OOD data scored AUROC 0.5
    # without a word or an ood_train_checked (the scored data's own training split is in-distribution anyway).
    copied = str(tmp_path / "copied")
    shutil.copytree(os.path.join(workdir, "saved_model"), copied)
    assert eval_main(f"--saved_model={copied}", f"--image_dir={train}", f"--test_image_dir={test}",
                     f"--ood_image_dir={train}") == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        f"error: the out-of-distribution data is the training data of images:{train}, tested on {test}, or a copy "
        "of some of it: all 40 of its images are training-split images (byte for byte)")


def test_a_folder_scored_alone_or_as_ood_data_is_named_by_its_own_flag_in_errors(tmp_path, caplog):
    # A test folder scored alone (eval.py --workdir=RUN --test_image_dir=X) was named --image_dir in its errors, and
    # listed twice: its warnings said twice, once under each flag.
    train = _named_folder(str(tmp_path / "train"), ["a", "b"])
    empty = str(tmp_path / "empty")
    os.makedirs(empty)
    with pytest.raises(DataError, match=rf"^--test_image_dir {re.escape(empty)} has 0 class subfolder\(s\); give it "):
        sources.load_source(image_dir=train, test_image_dir=empty, need_train=False)
    test = _named_folder(str(tmp_path / "test"), ["a", "b"])
    with open(os.path.join(test, "a", "notes.txt"), "w") as f:
        f.write("not an image")
    sources.load_source(image_dir=train, test_image_dir=test, need_train=False)
    said = [r.getMessage() for r in caplog.records if "is not read" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith(f"--test_image_dir {test}: 1 entry is not read"), said
    # An OOD folder's unreadable image: the error says it is the OOD folder's (it read as the data scored's).
    from dropzoo import ood as ood_lib
    odd = str(tmp_path / "odd")
    os.makedirs(odd)
    Image.fromarray(np.full((12, 12), 600, np.uint16)).save(os.path.join(odd, "deep.png"))
    with pytest.raises(DataError, match=rf"^--ood_image_dir {re.escape(odd)}: .*deep\.png has I;16 pixels"):
        ood_lib.load(ood_lib.arguments(image_dir=odd))


def test_a_comparison_reads_a_folder_in_colour_for_runs_trained_on_colour_arrays(tmp_path):
    """Runs trained on an .npz of colour images record no colour mode: eval.py --workdir read a folder in colour
    for them, --runs_dir gray, and refused it as the wrong shape."""
    rng = np.random.default_rng(0)

    def arrays(n):
        labels = rng.integers(0, 2, n)
        images = rng.integers(0, 120, (n, 12, 12, 3)).astype(np.uint8)
        images[labels == 1, :6, :, 0] = 255  # class 1: a red top half
        return images, labels

    (x_train, y_train), (x_test, y_test) = arrays(64), arrays(16)
    np.savez(tmp_path / "colour.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    for i, (image, label) in enumerate(zip(x_test, y_test)):
        os.makedirs(tmp_path / "photos" / str(label), exist_ok=True)
        Image.fromarray(image).save(tmp_path / "photos" / str(label) / f"{i}.png")
    config = config_lib.TrainConfig(model="dense_mlp", npz=str(tmp_path / "colour.npz"), train_steps=2, epochs=1,
                                    batch_size=16, precision="float32", validation_fraction=0.25)
    trainer.train_and_evaluate(config, str(tmp_path / "runs" / "seed0"), verbose=0, serving_artifacts=False)
    comparison = compare.compare_runs(str(tmp_path / "runs"), data_override={
        "image_dir": str(tmp_path / "photos"), "test_image_dir": str(tmp_path / "photos")},
        output_dir=str(tmp_path / "out"))
    [row] = comparison["table"]
    assert row["test_accuracy"]["n"] == 1

"""Out-of-distribution data of every kind eval.py takes: a folder of images read at the model's size, arrays."""
import logging

import numpy as np
import pytest
from PIL import Image

from dropzoo import ood
from dropzoo.errors import DataError


def _folder(root):
    """9 readable images of three sizes and two modes (two in a subfolder), a hidden one and a text file."""
    rng = np.random.default_rng(0)
    (root / "cats" / "older").mkdir(parents=True)
    (root / ".thumbs").mkdir()
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), np.uint8)).save(root / f"{i}.png")
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (20, 20), np.uint8)).save(root / "cats" / f"{i}.jpg")
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (8, 8), np.uint8)).save(root / "cats" / "older" / f"{i}.bmp")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / ".thumbs" / "x.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / ".hidden.png")
    (root / "notes.txt").write_text("not an image")
    return root


def test_one_ood_source_at_a_time_as_the_flags_name_it():
    assert ood.arguments() is None
    assert ood.arguments(dataset="kmnist", tfds_data_dir="/data") == {"dataset": "kmnist", "tfds_data_dir": "/data"}
    assert ood.arguments(image_dir="photos", tfds_data_dir="/data") == {"image_dir": "photos"}
    with pytest.raises(DataError, match=r"^give one out-of-distribution source, not --ood_npz=a.npz and "
                                        r"--ood_image_dir=photos; keep one of them$"):
        ood.arguments(npz="a.npz", image_dir="photos")


@pytest.mark.parametrize("shape,mode", [((28, 28, 1), "grayscale"), ((32, 24, 3), "rgb")])
def test_a_folder_and_its_subfolders_are_read_at_the_models_size_and_channels(tmp_path, caplog, shape, mode):
    root = _folder(tmp_path / "photos")
    given = ood.for_model(ood.arguments(image_dir=str(root)), shape)
    assert given == {"image_dir": str(root), "image_size": f"{shape[0]},{shape[1]}", "color_mode": mode}
    with caplog.at_level(logging.WARNING):
        source = ood.load(given)
    assert source.image_shape == shape and source.num_test == 9  # hidden entries are not read
    assert source.name == f"images:{root}" and source.origin["ood_image_dir"] == str(root)
    said = caplog.text
    assert "1 file(s) other than .png" in said and "notes.txt" in said
    assert "stretched to it" in said
    assert ("have colours (e.g. " in said and "), and images are read as grayscale, as the model takes them" in said) \
        == (mode == "grayscale")
    assert "--color_mode" not in said  # eval.py has no such flag for OOD data: the model decides
    # Other kinds are read as they are; nothing resizes arrays.
    assert ood.for_model({"npz": "a.npz"}, shape) == {"npz": "a.npz"}


def test_linked_folders_are_read_once_each(tmp_path):
    root = _folder(tmp_path / "photos")
    other = tmp_path / "elsewhere"
    other.mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8), i, np.uint8)).save(other / f"{i}.png")
    (root / "linked").symlink_to(other, target_is_directory=True)
    (root / "cats" / "loop").symlink_to(root, target_is_directory=True)  # read once, not forever
    (root / "dogs").symlink_to(root / "cats", target_is_directory=True)  # a folder and its link: once
    assert ood.load(ood.for_model({"image_dir": str(root)}, (8, 8, 1))).num_test == 9 + 3


def test_arrays_give_their_x_test_or_their_one_array(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (6, 28, 28), np.uint8)
    np.savez(tmp_path / "split.npz", x_train=images[:1], y_train=[0], x_test=images, y_test=np.arange(6))
    np.savez(tmp_path / "one.npz", images)
    np.save(tmp_path / "one.npy", images)
    for name in ("split.npz", "one.npz", "one.npy"):
        source = ood.load({"npz": str(tmp_path / name)})
        assert source.num_test == 6 and source.image_shape == (28, 28, 1)
        held = np.concatenate([x for x, _ in source.test.batch(6).as_numpy_iterator()])
        np.testing.assert_array_equal(held[..., 0], images)
    # An .npz with labels keeps the fingerprint the data under test would have (a copy of it is refused).
    from dropzoo import sources
    assert sources.fingerprint(ood.load({"npz": str(tmp_path / "split.npz")})) == sources.fingerprint(
        sources.load_source(npz=str(tmp_path / "split.npz"), need_train=False))
    # Labels that are no class ids (-1 for "unknown", text) are not used, so they refuse nothing.
    for labels in (-np.ones(6, int), np.array(list("abcdef")), np.array([None] * 6, object)):
        np.savez(tmp_path / "unlabelled.npz", x_test=images, y_test=labels)
        assert ood.load({"npz": str(tmp_path / "unlabelled.npz")}).num_test == 6


@pytest.mark.parametrize("make,message", [
    (lambda p: None, r"--ood_npz .*x does not exist; give an .npz file whose x_test holds uint8 images"),
    (lambda p: p.mkdir(), r"--ood_npz .*x is a directory \(a folder of images: --ood_image_dir\)"),
    (lambda p: p.write_text('{"a": 1}'), r"--ood_npz .*x is not an .npz or .npy file; save the images with "
                                          r"np.savez\(path, x_test=images\)"),
    (lambda p: np.savez(open(p, "wb"), a=np.zeros(2), b=np.zeros(2)), r"--ood_npz .*x has no x_test \(it holds a, "
                                                                       r"b\); save the images as"),
    (lambda p: np.savez(open(p, "wb"), x_test=np.array([1, "a"], object)), r"it holds an object array"),
    (lambda p: np.savez(open(p, "wb"), x_test=np.zeros((2, 8, 8))), r"^out-of-distribution data: .*x_test is "
                                                                    r"float64; the zoo takes raw uint8 pixels"),
])
def test_unusable_ood_arrays_are_refused_in_one_line(tmp_path, make, message):
    make(tmp_path / "x")
    with pytest.raises(DataError, match=message) as info:
        ood.load({"npz": str(tmp_path / "x")})
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("make,message", [
    (lambda p: None, r"--ood_image_dir .*none does not exist; give a folder of images \(subfolders are read too\)"),
    (lambda p: p.write_text("x"), r"--ood_image_dir .*none is a file, not a directory"),
    (lambda p: (p.mkdir(), (p / "a.txt").write_text("x")), r"--ood_image_dir .*none has no images \(.png, .*\) in "
                                                             r"it or its subfolders; give a folder of images"),
])
def test_an_unusable_ood_folder_is_refused_in_one_line(tmp_path, make, message):
    make(tmp_path / "none")
    with pytest.raises(DataError, match=message):
        ood.load(ood.for_model({"image_dir": str(tmp_path / "none")}, (28, 28, 1)))


def test_an_ood_dataset_name_that_is_a_folder_names_its_ood_flag(tmp_path):
    with pytest.raises(DataError, match=r"^out-of-distribution data: --ood_dataset takes a dataset name, not a path: "
                                        r"for .* pass --ood_image_dir=.* \(a folder of images\)$"):
        ood.load({"dataset": str(tmp_path)})

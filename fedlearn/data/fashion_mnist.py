"""Fashion-MNIST (Xiao et al., 2017): 60,000 + 10,000 28x28 grey images, 10 classes.

Read from the four standard IDX files (gzipped or plain) in ``root``; Debian's
``dataset-fashion-mnist`` package installs them in the default folder.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from fedlearn.data import DataSpec, FederatedData

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (``.gz`` or plain) as a numpy array of its declared shape.

    The format: two zero bytes, a type byte, the number of dimensions, one
    big-endian int32 per dimension, then the data.
    """
    path = Path(path)
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise ValueError(f"dataset.root: {path} is not an IDX file")
    ndim = raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    data = np.frombuffer(raw, dtype=_DTYPES[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"dataset.root: {path} holds {data.size} values, header says {shape}")
    return data.reshape(shape)


def _find(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (root / name).is_file():
            return root / name
    raise ValueError(
        f"dataset.root={root} lacks {stem}[.gz]: install Debian's dataset-fashion-mnist"
        f" (apt-get install dataset-fashion-mnist, files in {DEFAULT_ROOT}) or set dataset.root"
        " to a folder with the four Fashion-MNIST IDX files"
    )


def load(
    root: str = DEFAULT_ROOT, max_train: int | None = None, max_test: int | None = None
) -> FederatedData:
    """Load Fashion-MNIST as float images in [0, 1], shape ``(N, 1, 28, 28)``.

    Parameters
    ----------
    root : str
        Folder with ``train-images-idx3-ubyte[.gz]`` and the other three files.
    max_train, max_test : int, optional
        Keep only the first this many train / test samples (quick runs).
    """
    for name, value in (("max_train", max_train), ("max_test", max_test)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"dataset.{name} must be a positive integer or null, got {value!r}")
    folder = Path(root).expanduser()
    arrays = {key: read_idx(_find(folder, stem)) for key, stem in FILES.items()}
    for split, cap in (("train", max_train), ("test", max_test)):
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(
                f"dataset.root: {split} images {x.shape} and labels {y.shape} do not match"
            )
        arrays[f"{split}_x"], arrays[f"{split}_y"] = x[:cap], y[:cap]

    def images(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.float32) / 255.0).unsqueeze(1)

    _, h, w = arrays["train_x"].shape
    return FederatedData(
        train_x=images(arrays["train_x"]),
        train_y=torch.from_numpy(arrays["train_y"].astype(np.int64)),
        test_x=images(arrays["test_x"]),
        test_y=torch.from_numpy(arrays["test_y"].astype(np.int64)),
        spec=DataSpec(input_shape=(1, h, w), num_classes=10, kind="image"),
    )

"""Fashion-MNIST from IDX files: a tiny copy written here, caps, the missing-files error."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from fedlearn.data import load_dataset
from fedlearn.data.fashion_mnist import read_idx
from fedlearn.models import build_model


def _write_idx(path: Path, array: np.ndarray) -> None:
    raw = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    raw += struct.pack(f">{array.ndim}i", *array.shape) + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    # Train files gzipped, test files plain: both forms are read.
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (12, 28, 28)))
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(12) % 10)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", np.full((5, 28, 28), 255))
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([9, 8, 7, 6, 5]))
    return tmp_path


def test_reads_idx_as_declared(root):
    images = read_idx(root / "train-images-idx3-ubyte.gz")
    assert images.shape == (12, 28, 28) and images.dtype == np.uint8


def test_load_scales_and_caps(root):
    cfg = {
        "_target_": "fedlearn.data.fashion_mnist.load",
        "root": str(root),
        "max_train": 10,
        "max_test": None,
    }
    data = load_dataset(cfg)
    assert data.train_x.shape == (10, 1, 28, 28) and data.train_x.dtype == torch.float32
    assert 0.0 <= float(data.train_x.min()) and float(data.train_x.max()) <= 1.0
    assert data.train_y.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert torch.all(data.test_x == 1.0) and data.test_y.tolist() == [9, 8, 7, 6, 5]
    assert data.spec.input_shape == (1, 28, 28) and data.spec.num_classes == 10
    assert data.spec.kind == "image" and data.train_ids is None
    # The CNN trains on it.
    model = build_model(
        {"_target_": "fedlearn.models.cnn.CNN", "channels": 4, "hidden": 8}, data.spec
    )
    F.cross_entropy(model(data.train_x), data.train_y).backward()


def test_missing_files_say_how_to_get_them(tmp_path):
    from fedlearn.data.fashion_mnist import load

    with pytest.raises(ValueError) as err:
        load(root=str(tmp_path))
    message = str(err.value)
    assert "\n" not in message and "apt-get install dataset-fashion-mnist" in message
    assert "dataset.root" in message


def test_bad_file_and_bad_cap(root):
    from fedlearn.data.fashion_mnist import load

    (root / "t10k-labels-idx1-ubyte").write_bytes(b"not an idx file")
    with pytest.raises(ValueError, match="is not an IDX file"):
        load(root=str(root))
    with pytest.raises(ValueError, match="dataset.max_train"):
        load(root=str(root), max_train=0)

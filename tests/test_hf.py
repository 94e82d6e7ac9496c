"""Hugging Face datasets: a local save_to_disk copy, and the Hub path through flwr-datasets."""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from fedlearn.data import hf


def _split(n: int, shape: tuple[int, ...], seed: int) -> datasets.Dataset:
    rng = np.random.default_rng(seed)
    images = [Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)) for _ in range(n)]
    features = datasets.Features(
        {"img": datasets.Image(), "fine": datasets.ClassLabel(names=["a", "b", "c", "d"])}
    )
    return datasets.Dataset.from_dict(
        {"img": images, "fine": (np.arange(n) % 4).tolist()}, features=features
    )


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[Path, datasets.DatasetDict]:
    path = tmp_path_factory.mktemp("hf") / "tiny"
    dd = datasets.DatasetDict(train=_split(10, (6, 5, 3), 0), valid=_split(4, (6, 5, 3), 1))
    dd.save_to_disk(str(path))
    return path, dd


def test_local_copy_rgb(saved):
    path, dd = saved
    data = hf.load(
        path=str(path), image_column="img", label_column="fine", test_split="valid", max_train=6
    )
    assert data.train_x.shape == (6, 3, 6, 5) and data.test_x.shape == (4, 3, 6, 5)
    assert data.train_x.dtype == torch.float32 and float(data.train_x.max()) <= 1.0
    expected = np.asarray(dd["train"][0]["img"]).transpose(2, 0, 1) / 255.0
    np.testing.assert_allclose(data.train_x[0].numpy(), expected, rtol=1e-6)
    assert data.train_y.tolist() == [0, 1, 2, 3, 0, 1]
    assert data.spec.input_shape == (3, 6, 5) and data.spec.num_classes == 4
    assert data.spec.kind == "image"


def test_grey_images_get_one_channel(tmp_path):
    dd = datasets.DatasetDict(train=_split(3, (4, 4), 0), test=_split(2, (4, 4), 1))
    dd.save_to_disk(str(tmp_path / "grey"))
    data = hf.load(path=str(tmp_path / "grey"), image_column="img", label_column="fine")
    assert data.train_x.shape == (3, 1, 4, 4)


def test_hub_name_goes_through_federated_dataset(saved, monkeypatch):
    path, dd = saved
    seen = {}

    class FakeFederatedDataset:  # what flwr-datasets would fetch from the Hub
        def __init__(self, *, dataset, subset, partitioners, shuffle):
            seen.update(dataset=dataset, subset=subset, shuffle=shuffle)

        def load_split(self, split):
            return dd[split]

    import flwr_datasets

    monkeypatch.setattr(flwr_datasets, "FederatedDataset", FakeFederatedDataset)
    data = hf.load(name="someone/tiny", image_column="img", label_column="fine", test_split="valid")
    assert seen == {"dataset": "someone/tiny", "subset": None, "shuffle": False}
    assert len(data.train_y) == 10 and len(data.test_y) == 4


def test_one_line_errors(saved, tmp_path):
    path, _ = saved
    cases = [
        ({}, "exactly one of dataset.name"),
        ({"path": str(tmp_path / "none")}, "save_to_disk"),
        ({"path": str(path), "image_column": "img", "label_column": "fine"}, "no split 'test'"),
        ({"path": str(path), "test_split": "valid"}, "dataset.image_column=image"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message) as err:
            hf.load(**kwargs)
        assert "\n" not in str(err.value)

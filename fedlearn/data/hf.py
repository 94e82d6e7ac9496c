"""Any Hugging Face image-classification dataset, from the Hub or a local copy.

Online, the dataset is fetched through flwr-datasets' ``FederatedDataset``
(which wraps ``datasets.load_dataset``); offline, from a folder written with
``DatasetDict.save_to_disk`` (``path``). Partitioning stays fedlearn's: the
loader returns the central train/test splits only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fedlearn.data import DataSpec, FederatedData


def _splits(name: str | None, path: str | None, subset: str | None, wanted: list[str]) -> dict:
    import datasets

    if (name is None) == (path is None):
        raise ValueError("dataset=hf needs exactly one of dataset.name (Hub id) or dataset.path")
    if path is not None:
        try:
            loaded = datasets.load_from_disk(path)
        except FileNotFoundError:
            raise ValueError(
                f"dataset.path={path} is not a folder written by datasets' save_to_disk"
            ) from None
        if not isinstance(loaded, datasets.DatasetDict):
            raise ValueError(f"dataset.path={path} holds one split; save a DatasetDict with splits")
        missing = [s for s in wanted if s not in loaded]
        if missing:
            raise ValueError(
                f"dataset.path={path} has no split {missing[0]!r}; it has {sorted(loaded)}"
            )
        return {s: loaded[s] for s in wanted}
    from flwr_datasets import FederatedDataset

    try:
        fds = FederatedDataset(
            dataset=name, subset=subset, partitioners={wanted[0]: 1}, shuffle=False
        )
        return {s: fds.load_split(s) for s in wanted}
    except Exception as err:  # offline, unknown id, unknown split: say which setting
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"dataset.name={name}: could not load it from the Hugging Face Hub ({reason});"
            " offline, save it with datasets' save_to_disk and set dataset.path"
        ) from None


def _images(column: Any) -> torch.Tensor:
    x = np.stack([np.asarray(img) for img in column])
    if x.ndim == 3:  # (N, H, W) grey
        x = x[:, None]
    elif x.ndim == 4:  # (N, H, W, C) -> (N, C, H, W)
        x = x.transpose(0, 3, 1, 2)
    else:
        raise ValueError(f"dataset.image_column: images of shape {x.shape[1:]} are not 2-D")
    scale = 255.0 if np.issubdtype(x.dtype, np.integer) else 1.0
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32) / scale)


def load(
    name: str | None = None,
    path: str | None = None,
    subset: str | None = None,
    image_column: str = "image",
    label_column: str = "label",
    train_split: str = "train",
    test_split: str = "test",
    max_train: int | None = None,
    max_test: int | None = None,
) -> FederatedData:
    """Load an image-classification dataset's train and test splits as tensors.

    Parameters
    ----------
    name : str, optional
        Hugging Face Hub id (e.g. ``"uoft-cs/cifar10"``); needs network.
    path : str, optional
        Folder written by ``DatasetDict.save_to_disk``; used instead of ``name``.
    subset : str, optional
        Hub configuration name, if the dataset has several.
    image_column, label_column : str
        Columns holding the images (PIL images or arrays) and integer labels.
    train_split, test_split : str
        Split names.
    max_train, max_test : int, optional
        Keep only the first this many samples of each split.

    Returns
    -------
    FederatedData
        Images as float tensors ``(N, C, H, W)`` in [0, 1], labels as int64.
    """
    for key, value in (("max_train", max_train), ("max_test", max_test)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"dataset.{key} must be a positive integer or null, got {value!r}")
    splits = _splits(name, path, subset, [train_split, test_split])
    out: dict[str, torch.Tensor] = {}
    for key, split, cap in (("train", train_split, max_train), ("test", test_split, max_test)):
        ds = splits[split]
        for column in (image_column, label_column):
            if column not in ds.column_names:
                setting = "image_column" if column == image_column else "label_column"
                raise ValueError(
                    f"dataset.{setting}={column} is not a column of split {split!r};"
                    f" columns: {ds.column_names}"
                )
        if cap is not None:
            ds = ds.select(range(min(cap, len(ds))))
        out[key + "_x"] = _images(ds[image_column])
        out[key + "_y"] = torch.as_tensor(np.asarray(ds[label_column]), dtype=torch.long)
    feature = splits[train_split].features[label_column]
    num_classes = getattr(feature, "num_classes", None)
    if num_classes is None:
        num_classes = int(max(out["train_y"].max(), out["test_y"].max())) + 1
    return FederatedData(
        train_x=out["train_x"],
        train_y=out["train_y"],
        test_x=out["test_x"],
        test_y=out["test_y"],
        spec=DataSpec(
            input_shape=tuple(out["train_x"].shape[1:]), num_classes=num_classes, kind="image"
        ),
    )

"""quickstart-app: the model, the data and the train/test loops (PyTorch)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset
from flwr_datasets.partitioner import IidPartitioner
from torch import nn
from torch.utils.data import DataLoader

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


class Net(nn.Module):
    """A small CNN for square one-channel images (adapted from the PyTorch 60-minute blitz)."""

    def __init__(self, side: int = 8, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3, padding=1)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 3, padding=1)
        self.fc1 = nn.Linear(16 * (side // 4) ** 2, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = x.flatten(1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def _idx(name: str) -> np.ndarray:
    with gzip.open(FASHION_MNIST / name) as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_images(dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """All images (N, 1, side, side) scaled to [0, 1] and their labels."""
    if dataset == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        return (digits.images / 16.0).astype(np.float32)[:, None], digits.target.astype(np.int64)
    if dataset == "fashion-mnist":
        x = _idx("train-images-idx3-ubyte.gz").astype(np.float32) / 255.0
        return x[:, None], _idx("train-labels-idx1-ubyte.gz").astype(np.int64)
    raise ValueError(f"dataset={dataset!r}: choose digits or fashion-mnist")


partitioner = None  # cache the partitioner across calls in the same process


def load_data(
    partition_id: int, num_partitions: int, dataset: str, max_samples: int, batch_size: int
) -> tuple[DataLoader, DataLoader]:
    """This partition's data: 80% to train on, 20% to evaluate on."""
    global partitioner
    if partitioner is None:
        x, y = load_images(dataset)
        if max_samples:
            x, y = x[:max_samples], y[:max_samples]
        partitioner = IidPartitioner(num_partitions=num_partitions)
        partitioner.dataset = Dataset.from_dict({"image": x, "label": y}).with_format("torch")
    partition = partitioner.load_partition(partition_id=partition_id)
    split = partition.train_test_split(test_size=0.2, seed=42)
    trainloader = DataLoader(split["train"], batch_size=batch_size, shuffle=True)
    testloader = DataLoader(split["test"], batch_size=batch_size)
    return trainloader, testloader


def train(net: nn.Module, trainloader: DataLoader, epochs: int, lr: float, device: str) -> float:
    """Train the model on the training set; the mean training loss."""
    net.to(device)
    criterion = torch.nn.CrossEntropyLoss().to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    net.train()
    running_loss = 0.0
    for _ in range(epochs):
        for batch in trainloader:
            images = batch["image"].to(device)
            labels = batch["label"].to(device)
            optimizer.zero_grad()
            loss = criterion(net(images), labels)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
    return running_loss / (epochs * len(trainloader))


def test(net: nn.Module, testloader: DataLoader, device: str) -> tuple[float, float]:
    """Validate the model on the test set: loss and accuracy."""
    net.to(device)
    criterion = torch.nn.CrossEntropyLoss()
    correct, loss = 0, 0.0
    with torch.no_grad():
        for batch in testloader:
            images = batch["image"].to(device)
            labels = batch["label"].to(device)
            outputs = net(images)
            loss += criterion(outputs, labels).item()
            correct += (torch.max(outputs.data, 1)[1] == labels).sum().item()
    accuracy = correct / len(testloader.dataset)
    loss = loss / len(testloader)
    return loss, accuracy

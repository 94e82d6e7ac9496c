"""Every YAML in every config group composes and builds its object."""

from __future__ import annotations

import pytest
from hydra.utils import get_method, instantiate

from fedlearn import checks
from fedlearn.data import DataSpec, load_dataset
from fedlearn.data.partition import partition_indices
from fedlearn.experiment import build_strategy, compose_config
from fedlearn.models import build_model


@pytest.mark.parametrize("name", checks.choices("strategy"))
def test_strategy_yaml_instantiates(name: str) -> None:
    cfg = compose_config([f"strategy={name}"])
    strategy = build_strategy(dict(cfg))
    assert hasattr(strategy, "configure_train")


@pytest.mark.parametrize("name", checks.choices("dp"))
def test_dp_wraps_a_strategy(name: str) -> None:
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(compose_config([f"dp={name}"]), resolve=True)
    strategy = build_strategy(cfg)
    assert type(strategy).__name__.startswith("DifferentialPrivacyServerSide")
    assert strategy.num_sampled_clients == checks.num_sampled(cfg["strategy"], cfg["num_clients"])


@pytest.mark.parametrize("name", checks.choices("model"))
def test_model_yaml_builds(name: str) -> None:
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(compose_config([f"model={name}"]).model, resolve=True)
    cls = get_method(cfg["_target_"])
    kind = cls.KINDS[0]
    spec = DataSpec((1, 8, 8), 10, "image") if kind == "image" else DataSpec((80,), 81, "text")
    model = build_model(cfg, spec)
    assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize("name", checks.choices("dataset"))
def test_dataset_yaml_names_a_loader(name: str) -> None:
    cfg = compose_config([f"dataset={name}"]).dataset
    assert callable(get_method(cfg["_target_"]))


def test_digits_loads() -> None:
    data = load_dataset({"_target_": "fedlearn.data.digits.load"})
    assert data.spec.input_shape == (1, 8, 8) and data.spec.num_classes == 10
    assert len(data.train_y) + len(data.test_y) == 1797


@pytest.mark.parametrize("name", [n for n in checks.choices("partitioner") if n != "natural"])
def test_partitioner_yaml_partitions_digits(name: str) -> None:
    from omegaconf import OmegaConf

    part = OmegaConf.to_container(compose_config([f"partitioner={name}"]).partitioner)
    data = load_dataset({"_target_": "fedlearn.data.digits.load"})
    parts = partition_indices(data, part, num_clients=5, seed=0)
    flat = [i for p in parts for i in p]
    assert len(flat) == len(set(flat))  # disjoint
    assert all(len(p) >= 2 for p in parts)


@pytest.mark.parametrize("name", checks.choices("runtime"))
def test_runtime_yaml_builds_a_runtime(name: str) -> None:
    from omegaconf import OmegaConf

    from fedlearn.experiment import build_runtime
    from fedlearn.runtime.base import Runtime

    cfg = OmegaConf.to_container(compose_config([f"runtime={name}"]), resolve=True)
    runtime = build_runtime(cfg)
    assert isinstance(runtime, Runtime)
    assert runtime.client_state in ("server", "clients", "none")


@pytest.mark.parametrize("name", checks.choices("experiment"))
def test_experiment_preset_composes(name: str) -> None:
    cfg = compose_config([f"experiment={name}"])
    assert cfg.num_rounds >= 1


def test_instantiate_partitioner_directly() -> None:
    part = instantiate(
        {"_target_": "flwr_datasets.partitioner.IidPartitioner", "num_partitions": 3}
    )
    assert part.num_partitions == 3

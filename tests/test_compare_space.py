"""Search spaces: every one loads, names real settings, and reads as Hydra sweeps."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from fedlearn import checks
from fedlearn.compare.space import SEARCH_DIR, Param, check_grid, load_space
from fedlearn.experiment import compose_config


def test_every_search_space_names_its_strategys_settings() -> None:
    names = {p.stem for p in SEARCH_DIR.glob("*.yaml")} - {"client"}
    assert names <= set(checks.choices("strategy"))  # no space for a strategy that is not
    parser = OverridesParser.create()
    for strategy in checks.choices("strategy"):
        space = load_space(strategy)
        assert space[0].key == "client.lr"  # every strategy tunes the client learning rate
        cfg = compose_config([f"strategy={strategy}"])
        for p in space:
            assert OmegaConf.select(cfg, p.key, default="\0") != "\0", (strategy, p.key)
            assert p.source, (strategy, p.key)
            for sampler in ("tpe", "grid"):
                (override,) = parser.parse_overrides([f"{p.key}={p.sweep(sampler)}"])
                assert override.is_sweep_override()
            low, high = p.low, p.high
            assert all(low <= v <= high for v in p.grid or ()), (strategy, p.key)
    assert [p.key for p in load_space("fedavgm")] == [
        "client.lr",
        "strategy.server_learning_rate",
        "strategy.server_momentum",
    ]


def test_sweep_strings() -> None:
    lr = Param("client.lr", 0.001, 1.0, log=True, grid=(0.01, 0.1))
    assert lr.sweep("tpe") == "tag(log, interval(0.001, 1.0))"
    assert lr.sweep("grid") == "choice(0.01,0.1)"
    assert Param("strategy.beta", 0.05, 0.45).sweep("random") == "interval(0.05, 0.45)"
    assert Param("x", choices=("a", "b")).sweep("tpe") == "choice('a','b')"
    assert lr.describe() == "[0.001, 1] log"
    with pytest.raises(ValueError, match="compare.sampler=grid: x of strategy=s has no grid"):
        check_grid([Param("x", 0.1, 1.0)], "s")


def test_bad_spaces_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "client.yaml").write_text("client.lr: {low: 0.1, high: 0.01}\n")
    with pytest.raises(ValueError, match="client.lr needs low < high"):
        load_space("fedavg", tmp_path)
    (tmp_path / "client.yaml").write_text("client.lr: {low: 0.0, high: 1.0, log: true}\n")
    with pytest.raises(ValueError, match="log-scaled and needs low > 0"):
        load_space("fedavg", tmp_path)
    (tmp_path / "client.yaml").write_text("client.lr: {grid: [0.1]}\n")
    with pytest.raises(ValueError, match="needs low and high, or choices"):
        load_space("fedavg", tmp_path)
    with pytest.raises(ValueError, match="compare.search=.*no such folder"):
        load_space("fedavg", tmp_path / "missing")
    # A strategy's own file may narrow the common client learning rate.
    (tmp_path / "client.yaml").write_text("client.lr: {low: 0.001, high: 1.0, log: true}\n")
    (tmp_path / "fedprox.yaml").write_text("client.lr: {low: 0.01, high: 0.1}\n")
    assert load_space("fedprox", tmp_path) == [Param("client.lr", 0.01, 0.1)]

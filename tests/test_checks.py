"""Bad input: one line naming the setting and what is allowed."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from fedlearn.checks import ConfigError
from fedlearn.experiment import simulate
from tests.conftest import SIMULATE, TINY

CASES = [
    (["strategy=fedfoo"], "unknown strategy 'fedfoo'; choose from: bulyan"),
    (["model=resnet"], "unknown model 'resnet'; choose from:"),
    (["dataset=imagenet"], "unknown dataset 'imagenet'; choose from:"),
    (["partitioner=zipf"], "unknown partitioner 'zipf'; choose from:"),
    (["num_clients=0"], "num_clients must be an integer >= 1, got 0"),
    (["num_rounds=0"], "num_rounds must be an integer >= 1"),
    (["strategy.fraction_train=1.5"], r"strategy.fraction_train must be in \(0, 1\], got 1.5"),
    (["strategy.fraction_train=0"], r"strategy.fraction_train must be in \(0, 1\]"),
    (["strategy.fraction_evaluate=-0.1"], r"strategy.fraction_evaluate must be in \[0, 1\]"),
    (["strategy.min_train_nodes=9"], "strategy.min_train_nodes=9 exceeds num_clients=4"),
    (["strategy.min_available_nodes=5"], "strategy.min_available_nodes=5 exceeds num_clients=4"),
    (
        ["strategy=krum", "strategy.num_malicious_nodes=1"],
        "strategy=krum with num_malicious_nodes=1 needs at least 5 clients per round,"
        " but samples 4",
    ),
    (
        ["strategy=bulyan", "strategy.num_malicious_nodes=1"],
        "strategy=bulyan with num_malicious_nodes=1 needs at least 7 clients per round",
    ),
    (
        ["strategy=multikrum", "strategy.num_nodes_to_select=6"],
        "strategy.num_nodes_to_select=6 exceeds the 4 clients sampled",
    ),
    (["client.lr=-1"], "client.lr must be > 0"),
    (["seed=-1"], "seed must be an integer >= 0, got -1"),
    (["server.max_update_norm=0"], "server.max_update_norm must be a number > 0 or null, got 0"),
    (["client.device=gpu"], "client.device=gpu is not a device; allowed: auto | cpu | cuda"),
    (
        ["num_clients=150", "dataset.max_samples=200", "dataset.val_fraction=0"],
        "partitioner=iid leaves client 10 with 1 sample.* each client needs at least 2",
    ),
    (
        [
            "partitioner=pathological",
            "num_clients=150",
            "dataset.max_samples=200",
            "dataset.val_fraction=0",
        ],
        "partitioner=pathological with num_clients=150: Label: 0 is needed",
    ),
    (
        [
            "partitioner=dirichlet",
            "partitioner.alpha=0.001",
            "num_clients=100",
            "dataset.max_samples=200",
        ],
        "partitioner=dirichlet with num_clients=100",
    ),
]


@pytest.mark.parametrize("overrides,message", CASES)
def test_bad_setting_is_one_clear_line(overrides: list[str], message: str, tmp_path) -> None:
    with pytest.raises(ValueError, match=message) as info:
        simulate([*TINY, *overrides], run_dir=tmp_path)
    assert "\n" not in str(info.value)


def test_model_that_does_not_fit_the_data(tmp_path) -> None:
    with pytest.raises(ValueError, match="model=LSTM does not fit image data"):
        simulate([*TINY, "model=lstm"], run_dir=tmp_path)


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


@pytest.mark.slow
def test_cli_prints_one_line_and_exits_2(tmp_path) -> None:
    proc = subprocess.run(
        [
            *SIMULATE,
            "num_clients=0",
            f"hydra.run.dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "fedlearn: error: num_clients must be an integer >= 1, got 0"
    proc = subprocess.run(
        [*SIMULATE, "strategy=nope"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_refused_where_it_would_run(tmp_path) -> None:
    with pytest.raises(ConfigError, match="client.device=cuda but CUDA is not available here"):
        simulate([*TINY, "client.device=cuda"], tmp_path / "a")
    with pytest.raises(ConfigError, match="server.device=cuda:1 but CUDA is not available"):
        simulate([*TINY, "server.device=cuda:1"], tmp_path / "b")
    # gRPC's remote clients may have a GPU the server lacks: only the spelling is checked
    # there; its local clients run here.
    from fedlearn.checks import check_experiment
    from fedlearn.experiment import _plain, build_runtime, compose_config

    grpc = [o for o in TINY if not o.startswith("runtime.")] + ["runtime=grpc"]
    for extra, here in (["runtime.local_clients=0"], False), ([], True):
        cfg = _plain(compose_config([*grpc, *extra, "client.device=cuda"]))
        assert build_runtime(cfg).clients_here is here
    check_experiment(_plain(compose_config([*grpc, "client.device=cuda"])), clients_here=False)
    with pytest.raises(ConfigError, match="client.device=cuda but CUDA"):
        check_experiment(_plain(compose_config([*grpc, "client.device=cuda"])), clients_here=True)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["foo=1"],
            r"foo: the config has no setting 'foo'; its settings: app, client, .*"
            r"\(\+foo=\.\.\. adds",
        ),
        (
            ["runtime=ray", "runtime.workers=2"],
            "runtime.workers: runtime has no setting 'workers'; its settings: client_resources,",
        ),
        (["-m", "dataset.max_samplez=3"], "its settings: max_samples, seed, test_fraction"),
        (["num_rounds=x"], "num_rounds must be an integer >= 1, got 'x'"),
    ],
)
def test_a_setting_that_does_not_compose_is_one_line(argv, expected, monkeypatch, capsys) -> None:
    from fedlearn import cli

    monkeypatch.setattr(sys, "argv", ["fedlearn-simulate", *argv])
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as exit_:
        cli.simulate()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1
    assert re.search(expected, err), err


@pytest.mark.slow
def test_cli_unknown_setting_exits_2_in_one_line(tmp_path) -> None:
    proc = subprocess.run(
        [*SIMULATE, "foo=1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "foo: the config has no setting 'foo'" in proc.stderr


@pytest.mark.parametrize("group", ["strategy", "dataset", "model"])
def test_a_config_that_does_not_instantiate_is_one_line(
    group, tmp_path, monkeypatch, capsys
) -> None:
    from fedlearn import cli

    argv = [f"+{group}.bogus=3", "num_rounds=1", f"hydra.run.dir={tmp_path}"]
    monkeypatch.setattr(sys, "argv", ["fedlearn-simulate", *argv])
    with pytest.raises(SystemExit) as exit_:
        cli.simulate()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1
    assert "unexpected keyword argument 'bogus'" in err

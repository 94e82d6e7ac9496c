"""Any Flower app on fedlearn's runtimes: loading, bad input, the run folder, whole runs.

The app under ``tests/flower_app`` is in the shape of Flower's quickstart-pytorch and
imports nothing of fedlearn; the small apps below exercise failures.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from fedlearn import flower_app, records
from fedlearn.checks import ConfigError
from fedlearn.experiment import Interrupted, simulate

APP = Path(__file__).parent / "flower_app"
# 4 nodes, 400 digits, 2 rounds: a few seconds in-process.
QUICK = [
    f"app={APP}",
    "num_clients=4",
    "app.config.num-server-rounds=2",
    "app.config.max-samples=400",
    "progress=false",
]

# -- small apps for the failure cases --------------------------------------------
echo = ClientApp()  # adds 1 to every array; partition 1 raises


@echo.train()
def echo_train(msg: Message, context: Context) -> Message:
    if context.node_config["partition-id"] == 1:
        raise RuntimeError("this client crashed")
    arrays = [a + 1 for a in msg.content["arrays"].to_numpy_ndarrays()]
    metrics = MetricRecord({"num-examples": 10, "seen": float(context.run_config["x"])})
    return Message(RecordDict({"arrays": ArrayRecord(arrays), "metrics": metrics}), reply_to=msg)


@echo.evaluate()
def echo_evaluate(msg: Message, context: Context) -> Message:
    metrics = MetricRecord({"num-examples": 5, "eval_acc": 0.5})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)


def _server(stop: type[BaseException] | None) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = FedAvg(min_available_nodes=3, min_train_nodes=2, min_evaluate_nodes=2)
        initial = ArrayRecord([np.zeros(3, np.float32)])
        result = strategy.start(grid=grid, initial_arrays=initial, num_rounds=2)
        if stop is not None:  # after two whole rounds
            raise stop("the ServerApp gave up")
        np.save(context.run_config["out"], result.arrays.to_numpy_ndarrays()[0])

    return app


good_server = _server(None)
failing_server = _server(ArithmeticError)
interrupted_server = _server(KeyboardInterrupt)
PAIR = [f"app.client={__name__}:echo", "num_clients=3", "+app.config.x=7", "progress=false"]


# -- loading ---------------------------------------------------------------------
def test_components_config_and_federation_come_from_pyproject() -> None:
    app = flower_app.load({"path": str(APP), "config": {"num-server-rounds": 5}})
    assert isinstance(app.server, ServerApp) and isinstance(app.client, ClientApp)
    assert app.name == "quickstart-app" and app.client_ref == "quickstart_app.client_app:app"
    assert app.run_config["num-server-rounds"] == 5 and app.run_config["batch-size"] == 32
    assert app.num_nodes == 10  # [tool.flwr.federations] local-simulation num-supernodes


def test_an_installed_package_is_found_by_name(monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(APP))
    assert flower_app.load({"path": "quickstart_app"}).folder == APP


def test_command_line_spellings() -> None:
    args = ["app=x/y", "app.config.lr=0.1", "+app.config.k=1", "num_clients=3"]
    assert flower_app.hydra_overrides(args) == [
        "app.path=x/y",
        "+app.config.lr=0.1",
        "+app.config.k=1",
        "num_clients=3",
    ]


def _pyproject(folder: Path, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "1"\n' + body)
    return folder


COMPONENTS = "[tool.flwr.app.components]\nserverapp = '{s}'\nclientapp = '{c}'\n"
BAD = [
    ("no-pyproject", None, "no pyproject.toml in"),
    ("not-an-app", "", "has no \\[tool.flwr.app\\] section; not a Flower app"),
    ("no-client", "[tool.flwr.app.components]\nserverapp = 'm:a'\n", "has no clientapp"),
    (
        "no-module",
        COMPONENTS.format(s="no_such_module_here:app", c="m:a"),
        "app.server=no_such_module_here:app does not import \\(ModuleNotFoundError",
    ),
    (
        "no-attr",
        COMPONENTS.format(s=f"{__name__}:nothing", c="m:a"),
        f"app.server={__name__}:nothing: Unable to load attribute nothing",
    ),
    (
        "swapped",
        COMPONENTS.format(s=f"{__name__}:echo", c=f"{__name__}:echo"),
        f"app.server={__name__}:echo is a ClientApp, not a flwr ServerApp",
    ),
]


@pytest.mark.parametrize(("name", "body", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_app_is_one_line_and_exit_2(name, body, message, tmp_path, monkeypatch, capsys):
    from fedlearn import cli

    folder = tmp_path / name
    if body is None:
        folder.mkdir()
    else:
        _pyproject(folder, body)
    argv = [f"app={folder}", "progress=false", f"hydra.run.dir={tmp_path / 'run'}"]
    monkeypatch.setattr(sys, "argv", ["fedlearn-simulate", *argv])
    with pytest.raises(SystemExit) as exit_:
        cli.simulate()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1, err
    assert __import__("re").search(message, err), err


def test_a_run_config_key_the_app_lacks_is_refused() -> None:
    with pytest.raises(ConfigError, match="app.config.bogus: the app has no run-config key") as e:
        flower_app.load({"path": str(APP), "config": {"bogus": 1}})
    assert "num-server-rounds" in str(e.value) and "\n" not in str(e.value)


def test_half_a_pair_and_no_such_folder_are_refused() -> None:
    with pytest.raises(ConfigError, match="app.client needs its pair"):
        flower_app.load({"client": f"{__name__}:echo"})
    with pytest.raises(ConfigError, match="app.path=nowhere/at/all: no such folder"):
        flower_app.load({"path": "nowhere/at/all"})


# -- the run folder --------------------------------------------------------------
def test_a_pair_run_writes_the_run_folder_and_counts_a_crashing_client(tmp_path) -> None:
    args = [*PAIR, f"app.server={__name__}:good_server", f"+app.config.out={tmp_path}/w.npy"]
    result = simulate(args, tmp_path / "run")
    assert result["status"] == "completed" and result["rounds_completed"] == 2
    lines = records.read_metrics(tmp_path / "run")
    assert [m["round"] for m in lines] == [1, 2]  # the rounds of Flower's FedAvg
    for line in lines:
        assert (line["sampled"], line["succeeded"], line["failed"]) == (3, 2, 1)
        assert line["train"] == {"num-examples": 20, "seen": 7.0}  # replies' metrics
        assert line["evaluate"]["eval_acc"] == 0.5 and line["bytes_sent"] > 0
        assert line["bytes_received"] > 0 and line["seconds"] >= 0
    np.testing.assert_array_equal(np.load(tmp_path / "w.npy"), np.full(3, 2.0))
    log = (tmp_path / "run" / records.LOG).read_text()
    assert "this client crashed" in log and "[ROUND 2/2]" in log  # fedlearn's and the app's
    saved = json.loads((tmp_path / "run" / records.RESULT).read_text())
    assert saved["run_config"] == {"x": 7, "out": f"{tmp_path}/w.npy"}


def test_a_serverapp_that_raises_ends_failed_with_its_folder(tmp_path) -> None:
    with pytest.raises(records.RunFailed, match="ArithmeticError: the ServerApp gave up"):
        simulate([*PAIR, f"app.server={__name__}:failing_server"], tmp_path)
    result = json.loads((tmp_path / records.RESULT).read_text())
    assert result["status"] == "failed" and result["rounds_completed"] == 2
    assert "Traceback" in (tmp_path / records.LOG).read_text()


def test_ctrl_c_keeps_the_finished_rounds(tmp_path) -> None:
    with pytest.raises(Interrupted) as stop:
        simulate([*PAIR, f"app.server={__name__}:interrupted_server"], tmp_path)
    assert not stop.value.resumable  # a Flower app keeps no checkpoints
    result = json.loads((tmp_path / records.RESULT).read_text())
    assert result["status"] == "interrupted" and result["rounds_completed"] == 2
    with pytest.raises(ConfigError, match="a Flower app's ServerApp runs its own rounds"):
        simulate([f"resume={tmp_path}"])


# -- whole runs ------------------------------------------------------------------
def _final(tmp_path: Path, name: str, extra: list[str]) -> tuple[dict, list[np.ndarray]]:
    out = tmp_path / f"{name}.npz"
    result = simulate([*QUICK, *extra, f"app.config.final-arrays={out}"], tmp_path / name)
    assert result["status"] == "completed", result["error"]
    with np.load(out) as npz:
        return result, [npz[k] for k in sorted(npz.files, key=lambda k: int(k.split("_")[1]))]


@pytest.mark.slow
def test_the_same_app_gives_the_same_arrays_on_every_runtime(tmp_path) -> None:
    runs = {
        "inprocess": ["runtime.workers=1"],
        "workers": ["runtime.workers=2"],
        "ray": ["runtime=ray"],
        "grpc": ["runtime=grpc"],  # local client processes, TLS and tokens
    }
    finals = {}
    for name, extra in runs.items():
        result, finals[name] = _final(tmp_path, name, extra)
        assert result["rounds_completed"] == 2 and result["run_config"]["num-server-rounds"] == 2
        assert [m["succeeded"] for m in records.read_metrics(tmp_path / name)] == [4, 4], name
    for name, arrays in finals.items():
        # Flower's FedAvg samples (and so sums) the nodes in an unseeded random order, and
        # node ids differ between runtimes: weights agree to float summation order.
        for a, b in zip(finals["inprocess"], arrays, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=name)


def test_a_tracked_app_run_logs_every_round_and_its_status(tmp_path) -> None:
    from tbparse import SummaryReader

    from tests.loggers.conftest import check_rounds

    out = f"+app.config.out={tmp_path}/w.npy"
    simulate([*PAIR, f"app.server={__name__}:good_server", out, "logger=tensorboard"], tmp_path)
    reader = SummaryReader(str(tmp_path / "tensorboard"))
    got: dict[int, dict[str, float]] = {}
    for row in reader.scalars.itertuples():
        got.setdefault(int(row.step), {})[row.tag] = float(row.value)
    lines = records.read_metrics(tmp_path)
    assert sorted(got) == [1, 2] == [m["round"] for m in lines]
    check_rounds(got, lines, rel=1e-6)  # what the Grid saw and the replies' metrics (float32)
    for line in lines:
        assert got[line["round"]]["train/seen"] == 7.0 and got[line["round"]]["failed"] == 1
    assert list(reader.text["value"]) == ["completed"]

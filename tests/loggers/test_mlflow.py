"""MLflow, read back through its client API: a local store, a real server, one that is down."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from fedlearn import records
from fedlearn.experiment import simulate
from tests.conftest import TINY
from tests.loggers.conftest import TrackedRun, check_rounds

pytestmark = pytest.mark.slow


def _read_back(uri: str, run_dir: Path):
    from mlflow import MlflowClient

    state = json.loads((run_dir / "loggers.json").read_text())["mlflow"]["run"]
    client = MlflowClient(uri)
    return client, client.get_run(state["run_id"])


def _history(client, run) -> dict[int, dict[str, float]]:
    got: dict[int, dict[str, float]] = {}
    for key in run.data.metrics:
        history = client.get_metric_history(run.info.run_id, key)
        steps = [m.step for m in history]
        assert len(steps) == len(set(steps)), f"{key}: a step logged twice: {steps}"
        for m in history:
            got.setdefault(m.step, {})[key] = m.value
    return got


def test_local_store_holds_rounds_params_status_and_artifacts(
    tracked_run: TrackedRun, tmp_path: Path
) -> None:
    client, run = _read_back(tracked_run.mlflow_uri, tracked_run.run_dir)
    check_rounds(_history(client, run), tracked_run.lines)
    assert run.info.status == "FINISHED" and run.data.tags["status"] == "completed"
    assert run.data.params["client.lr"] == "0.1" and run.data.params["num_rounds"] == "3"
    assert run.data.tags["resumed.num_rounds"] == "4"  # params cannot change: the resume's value
    assert run.data.tags["strategy"] == "FedAvg" and run.data.tags["seed"] == "0"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"model.pt", "result.json", "config.yaml"}
    got = client.download_artifacts(run.info.run_id, "result.json", str(tmp_path))
    result = (tracked_run.run_dir / "result.json").read_text()
    assert json.loads(Path(got).read_text()) == json.loads(result)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path: Path):
    """``mlflow server`` on a free loopback port; stopped (process group) after the test."""
    port = _free_port()
    cmd = [
        sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
        "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
        "--artifacts-destination", str(tmp_path / "server-artifacts"), "--workers", "1",
    ]  # fmt: skip
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2).close()
                break
            except OSError:
                assert proc.poll() is None, (tmp_path / "server.log").read_text()
                assert time.monotonic() < deadline, "mlflow server did not start"
                time.sleep(0.2)
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def test_a_real_mlflow_server_receives_the_run(mlflow_server: str, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = [*TINY, "logger=mlflow", f"logger.mlflow.tracking_uri={mlflow_server}"]
    result = simulate(args, run_dir=run_dir)
    assert result["status"] == "completed"
    client, run = _read_back(mlflow_server, run_dir)
    check_rounds(_history(client, run), records.read_metrics(run_dir))
    assert run.info.status == "FINISHED"
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {
        "model.pt", "result.json", "config.yaml",
    }  # fmt: skip


def test_a_server_that_is_down_costs_one_warning(tmp_path: Path, caplog) -> None:
    uri = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    with caplog.at_level(logging.WARNING, logger="fedlearn"):
        result = simulate([*TINY, "logger=mlflow", f"logger.mlflow.tracking_uri={uri}"], tmp_path)
    assert result["status"] == "completed" and result["rounds_completed"] == 2
    warnings = [r.getMessage() for r in caplog.records if "logger mlflow" in r.getMessage()]
    assert len(warnings) == 1 and f"{uri} does not answer" in warnings[0], warnings
    assert "metrics.jsonl has every round" in warnings[0]


def test_parallel_jobs_open_a_new_store_together(tmp_path: Path) -> None:
    # A sweep's parallel jobs (hydra/launcher=joblib) all create the store at once.
    code = (
        "import sys; from pathlib import Path; from fedlearn.loggers.base import RunInfo;"
        " from fedlearn.loggers.mlflow import MLflowLogger;"
        " MLflowLogger(sys.argv[1]).start(RunInfo(Path(sys.argv[2]), sys.argv[2], {}, {}))"
    )
    uri = f"sqlite:///{tmp_path / 'new.db'}"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, uri, f"job-{k}"], stderr=subprocess.PIPE)
        for k in range(3)
    ]
    errors = [p.communicate(timeout=300)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("fedlearn").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["job-0", "job-1", "job-2"]

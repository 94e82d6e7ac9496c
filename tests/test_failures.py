"""Client failures: a crash or a NaN update costs that client the round, not the run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Context, Message
from flwr.clientapp import ClientApp
from omegaconf import OmegaConf

from fedlearn import records
from fedlearn.app import client_app as fedlearn_client
from fedlearn.app.run_config import client_run_config
from fedlearn.app.server_app import run_rounds
from fedlearn.experiment import build_setup, compose_config, node_configs, simulate
from fedlearn.runtime.inprocess import InProcessGrid
from tests.conftest import SIMULATE, TINY


def _app(misbehave) -> ClientApp:
    """fedlearn's ClientApp, except where ``misbehave(partition, reply)`` steps in."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        reply = fedlearn_client.train(msg, context)
        return misbehave(int(context.node_config["partition-id"]), reply)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return fedlearn_client.evaluate(msg, context)

    return app


def _run(tmp_path, misbehave, extra=(), workers=1):
    cfg = OmegaConf.to_container(compose_config([*TINY, *extra]), resolve=True)
    setup = build_setup(cfg, tmp_path)
    grid = InProcessGrid(
        _app(misbehave), node_configs(cfg), client_run_config(cfg), workers=workers
    )
    try:
        return run_rounds(setup, grid)
    finally:
        grid.close()


def crash_partition_1(partition: int, reply: Message) -> Message:
    if partition == 1:
        raise RuntimeError("simulated client crash")
    return reply


def test_crashing_client_is_tolerated(tmp_path) -> None:
    result = _run(tmp_path, crash_partition_1)
    assert result["status"] == "completed"
    lines = records.read_metrics(tmp_path)[1:]
    assert [(m["succeeded"], m["failed"]) for m in lines] == [(3, 1), (3, 1)]


def test_crashing_client_in_a_worker_process(tmp_path) -> None:
    result = _run(tmp_path, crash_partition_1, workers=2)
    assert result["status"] == "completed"
    assert all(m["failed"] == 1 for m in records.read_metrics(tmp_path)[1:])


def _rewrite_partition_2(change):  # noqa: ANN001, ANN202 - change(dict of arrays) -> dict
    """A misbehaviour: partition 2 replies with ``change`` applied to its arrays."""

    def misbehave(partition: int, reply: Message) -> Message:
        if partition != 2:
            return reply
        record = reply.content["arrays"]
        arrays = change({k: record[k].numpy() for k in record.keys()})
        reply.content["arrays"] = ArrayRecord({k: Array(v) for k, v in arrays.items()})
        return reply

    return misbehave


def _first(arrays: dict, value) -> dict:  # noqa: ANN001
    key = next(iter(arrays))
    return {**arrays, key: value(arrays[key])}


nan_from_partition_2 = _rewrite_partition_2(lambda a: _first(a, lambda v: np.full_like(v, np.nan)))


def test_nan_update_is_rejected_and_counted(tmp_path) -> None:
    result = _run(tmp_path, nan_from_partition_2)
    assert result["status"] == "completed"
    assert np.isfinite(result["final"]["test"]["loss"])
    lines = records.read_metrics(tmp_path)[1:]
    assert all(m["failed"] == 1 and m["refused"] == {"non-finite": 1} for m in lines)


def garbled_from_partition_2(partition: int, reply: Message) -> Message:
    if partition != 2:
        return reply
    first = next(iter(reply.content["arrays"]))
    good = reply.content["arrays"][first]
    reply.content["arrays"][first] = Array(good.dtype, good.shape, good.stype, b"not npy bytes")
    return reply


def test_unreadable_update_is_rejected_not_fatal(tmp_path) -> None:
    # A payload np.load cannot read used to fail the whole run at the NaN screen.
    result = _run(tmp_path, garbled_from_partition_2)
    assert result["status"] == "completed"
    assert all(m["failed"] == 1 for m in records.read_metrics(tmp_path)[1:])


LIES = {
    "wrong shape": lambda a: _first(a, lambda v: np.zeros(v.size + 1, v.dtype)),
    "missing key": lambda a: dict(list(a.items())[1:]),
    "extra key": lambda a: {**a, "extra": np.zeros(3, np.float32)},
    "int8 dtype": lambda a: _first(a, lambda v: v.astype(np.int8)),
    "1e30 weights": lambda a: {k: np.full_like(v, 1e30) for k, v in a.items()},
}


@pytest.mark.parametrize("lie", LIES)
def test_a_reply_that_does_not_fit_the_model_is_that_clients_failure(lie, tmp_path) -> None:
    result = _run(tmp_path, _rewrite_partition_2(LIES[lie]))
    assert result["status"] == "completed", result["error"]
    assert np.isfinite(result["final"]["test"]["loss"])
    lines = records.read_metrics(tmp_path)[1:]
    assert [(m["succeeded"], m["failed"]) for m in lines] == [(3, 1), (3, 1)]
    reason = "norm" if lie == "1e30 weights" else "layout"
    assert all(m["refused"] == {reason: 1} for m in lines)


def test_a_non_finite_aggregate_is_not_applied_nor_blamed_on_the_next_round(tmp_path) -> None:
    # No norm bound: a 1e30 update reaches FedAdam, whose second moment overflows.
    def once(partition: int, reply: Message) -> Message:
        if partition == 2 and "scaffold" not in reply.content and not once.done:
            once.done = True
            return _rewrite_partition_2(LIES["1e30 weights"])(partition, reply)
        return reply

    once.done = False
    extra = ["strategy=fedadam", "server.max_update_norm=null", "num_rounds=3"]
    result = _run(tmp_path, once, extra)
    assert result["status"] == "completed", result["error"]
    lines = records.read_metrics(tmp_path)
    assert "aggregate not applied: non-finite values in strategy.v_t" in lines[1]["skipped"]
    assert lines[1]["test"]["loss"] == lines[0]["test"]["loss"]  # the model did not change
    assert [m["succeeded"] for m in lines[1:]] == [4, 4, 4]  # nobody blamed after it
    assert "skipped" not in lines[2] and lines[2]["test"]["loss"] != lines[0]["test"]["loss"]
    assert np.isfinite(result["final"]["test"]["loss"])


def _client_state(run_dir: Path, node: int) -> dict[str, np.ndarray]:
    """A node's SCAFFOLD control variate at the run's last checkpoint (all settled)."""
    state = records.load_checkpoint(run_dir)["clients"][str(node)]
    assert not [k for k in state.keys() if k.endswith(".pending")]
    return {k: a.numpy() for k, a in state["scaffold-ci"].items()}


def test_a_refused_update_leaves_the_clients_state_as_it_was(tmp_path) -> None:
    """Partition 2's round-2 update is refused (NaN) after its client computed its new
    control variate: the client keeps the one of round 1, which was aggregated."""
    calls = {"n": 0}

    def nan_in_round_2(partition: int, reply: Message) -> Message:
        if partition == 2:
            calls["n"] += 1
            if calls["n"] == 2:
                return nan_from_partition_2(partition, reply)
        return reply

    scaffold = ["strategy=scaffold"]
    _run(tmp_path / "one", lambda p, r: r, [*scaffold, "num_rounds=1"])
    result = _run(tmp_path / "two", nan_in_round_2, [*scaffold, "num_rounds=2"])
    assert result["status"] == "completed"
    assert records.read_metrics(tmp_path / "two")[2]["refused"] == {"non-finite": 1}
    kept, before = (_client_state(tmp_path / d, 1002) for d in ("two", "one"))
    assert kept.keys() == before.keys() and all(np.array_equal(kept[k], before[k]) for k in kept)
    moved, start = (_client_state(tmp_path / d, 1001) for d in ("two", "one"))
    assert not all(np.array_equal(moved[k], start[k]) for k in moved)  # it moved on


def test_too_few_successes_stop_cleanly(tmp_path) -> None:
    def crash_most(partition: int, reply: Message) -> Message:
        if partition > 0:
            raise RuntimeError("down")
        return reply

    result = _run(tmp_path, crash_most)  # FedAvg needs min_train_nodes=2
    assert result["status"] == "stopped"
    assert "1 of 4 clients succeeded" in result["error"]
    assert "(first failure: RuntimeError: down)" in result["error"]
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["status"] == "stopped" and (tmp_path / "model.pt").exists()
    assert [m["round"] for m in records.read_metrics(tmp_path)] == [0]


def _long_run(run_dir: Path, lines: int, **popen: Any) -> subprocess.Popen:
    """``fedlearn-simulate`` (2 workers, endless rounds) in its own process group, once
    its metrics.jsonl has more than ``lines`` lines."""
    args = [*TINY, "num_rounds=10000", "runtime.workers=2", f"hydra.run.dir={run_dir}"]
    # As from a terminal: a shell starts background jobs (`.ci/run &`) with SIGINT
    # ignored, and Python (fedlearn too) keeps an ignored SIGINT ignored.
    proc = subprocess.Popen(
        [*SIMULATE, *args],
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        **popen,
    )
    metrics = run_dir / records.METRICS
    deadline = time.monotonic() + 60
    while not (metrics.exists() and len(metrics.read_text().splitlines()) > lines):
        assert time.monotonic() < deadline and proc.poll() is None, "the run did not start"
        time.sleep(0.05)
    return proc


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_stops_cleanly_and_the_run_resumes(sig, tmp_path) -> None:
    # Ctrl-C reaches the whole process group (workers too); a scheduler sends SIGTERM.
    run_dir = tmp_path / "run"
    proc = _long_run(run_dir, 3, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    os.killpg(proc.pid, sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err.decode().strip().splitlines() == [
        f"fedlearn: interrupted; every finished round is in {run_dir}:"
        f" continue with resume={run_dir}"
    ]
    result = json.loads((run_dir / records.RESULT).read_text())
    done = result["rounds_completed"]
    assert result["status"] == "interrupted" and done >= 3
    # Stopped between a round's metrics line and its checkpoint, the resume redoes it.
    assert records.load_checkpoint(run_dir)["round"] in (done - 1, done)
    resumed = simulate([f"resume={run_dir}", f"num_rounds={done + 1}"])
    assert resumed["status"] == "completed" and resumed["rounds_completed"] == done + 1


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:  # the field after the state: the parent pid
            kids.append(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").exists(), reason="reads /proc")
def test_workers_do_not_outlive_a_killed_parent(tmp_path) -> None:
    proc = _long_run(tmp_path / "run", 2)
    workers = _children(proc.pid)
    assert len(workers) >= 2  # the pool (and whatever else the parent started)
    proc.kill()  # SIGKILL: no clean-up in the parent
    proc.wait()
    deadline = time.monotonic() + 15
    while any(_alive(w) for w in workers):
        if time.monotonic() > deadline:
            for w in workers:
                os.kill(w, signal.SIGKILL)
            raise AssertionError("workers outlived their parent")
        time.sleep(0.1)

"""A client's Context.state on disk (--state-file): kept across client restarts in one run."""

from __future__ import annotations

import numpy as np
from flwr.app import ConfigRecord, MetricRecord, RecordDict

from fedlearn.app.arrays import to_record
from fedlearn.runtime.grpc import client_state
from fedlearn.runtime.grpc.launch import client_args
from tests.test_grpc_helpers import ThreadClient, run_fedavg, start_server


def _state() -> RecordDict:
    return RecordDict(
        {
            "scaffold-ci": to_record({"w": np.arange(4, dtype=np.float32)}),
            "calls": MetricRecord({"n": 3}),
            "note": ConfigRecord({"who": "me"}),
        }
    )


def test_state_round_trips_for_its_run_and_node_only(tmp_path) -> None:
    path = tmp_path / "node.state"
    client_state.save(path, "run-a", "7", _state())
    back = client_state.load(path, "run-a", "7")
    assert back is not None and back["calls"]["n"] == 3 and back["note"]["who"] == "me"
    assert back["scaffold-ci"]["w"].numpy().tolist() == [0.0, 1.0, 2.0, 3.0]
    assert client_state.load(path, "run-b", "7") is None  # another run
    assert client_state.load(path, "run-a", "8") is None  # another node
    assert path.exists()  # left for its own run


def test_an_unchanged_state_is_not_written_again(tmp_path, monkeypatch) -> None:
    path, writes = tmp_path / "node.state", []
    write = client_state.atomic_write
    monkeypatch.setattr(client_state, "atomic_write", lambda *a: (writes.append(a), write(*a)))
    first = client_state.save(path, "run-a", "7", _state())
    again = client_state.save(path, "run-a", "7", _state(), first)
    assert again == first and len(writes) == 1
    changed = _state()
    changed["calls"] = MetricRecord({"n": 4})
    client_state.save(path, "run-a", "7", changed, again)
    assert len(writes) == 2 and client_state.load(path, "run-a", "7")["calls"]["n"] == 4


def test_an_unreadable_state_file_is_set_aside(tmp_path) -> None:
    path = tmp_path / "node.state"
    path.write_bytes(b"garbage")
    assert client_state.load(path, "run-a", "7") is None
    assert not path.exists() and (tmp_path / "node.state.unreadable").read_bytes() == b"garbage"


def test_run_key_is_made_once_per_run_folder(tmp_path) -> None:
    key = client_state.run_key(tmp_path)
    assert key == client_state.run_key(tmp_path) and key != client_state.run_key(tmp_path / "x")


def test_local_clients_get_a_state_file_in_the_run_folder(tmp_path) -> None:
    args = client_args(5000, 1, 2, None, tmp_path, {})
    assert args[args.index("--state-file") + 1] == str(tmp_path / "client-1.state")


def _one_run(port: int, key: str, state_file, rounds: int) -> int:
    """``rounds`` of FedAvg with one client; how many train calls its state counts."""
    grid, server, port = start_server({"seed": 0, client_state.RUN_KEY: key}, port=port)
    client = ThreadClient(port, "keeper", {"partition-id": 0}, state_file=str(state_file))
    try:
        run_fedavg(grid, 1, rounds=rounds)
        server.finish("run over")
        assert client.join() == 0
        return int(client.client.context.state["calls"]["n"])
    finally:
        server.stop()


def test_a_restarted_client_carries_on_with_its_state(tmp_path) -> None:
    state_file = tmp_path / "keeper.state"
    assert _one_run(0, "run-a", state_file, rounds=2) == 2
    # A new client process (a new GrpcClient, nothing in memory) in the same run ...
    assert _one_run(0, "run-a", state_file, rounds=1) == 3
    # ... and in another run, where it starts fresh.
    assert _one_run(0, "run-b", state_file, rounds=1) == 1


def _refusing_app(snapshots: dict):  # noqa: ANN202 - a ClientApp
    """fedlearn's ClientApp; partition 1 replies NaN in round 2 (its new state computed),
    and every node's committed SCAFFOLD state is kept in ``snapshots`` after each evaluate."""
    from flwr.app import Array, ArrayRecord
    from flwr.clientapp import ClientApp

    from fedlearn.app import client_app

    app = ClientApp()

    @app.train()
    def train(msg, context):  # noqa: ANN001, ANN202
        reply = client_app.train(msg, context)
        rnd = int(msg.content["config"]["server-round"])
        if context.node_config["partition-id"] == 1 and rnd == 2:
            record = reply.content["arrays"]
            arrays = {k: np.full_like(record[k].numpy(), np.nan) for k in record.keys()}
            reply.content["arrays"] = ArrayRecord({k: Array(v) for k, v in arrays.items()})
        return reply

    @app.evaluate()
    def evaluate(msg, context):  # noqa: ANN001, ANN202
        reply = client_app.evaluate(msg, context)
        rnd = int(msg.content["config"]["server-round"])
        if "scaffold-ci" in context.state:  # committed (a round's after the next one's train)
            state = context.state["scaffold-ci"]
            snapshots[(context.node_config["partition-id"], rnd)] = {
                k: state[k].numpy().copy() for k in state.keys()
            }
        return reply

    return app


def test_over_grpc_a_refused_update_leaves_the_clients_state_as_it_was(tmp_path) -> None:
    from omegaconf import OmegaConf

    from fedlearn.app.run_config import client_run_config
    from fedlearn.app.server_app import run_rounds
    from fedlearn.experiment import build_setup, compose_config
    from tests.conftest import TINY

    cfg = OmegaConf.to_container(
        compose_config([*TINY, "num_clients=3", "num_rounds=3", "strategy=scaffold"]),
        resolve=True,
    )
    setup = build_setup(cfg, tmp_path)
    grid, server, port = start_server(client_run_config(cfg))
    snapshots: dict = {}
    app = _refusing_app(snapshots)
    clients = [
        ThreadClient(port, f"c{k}", {"partition-id": k, "num-partitions": 3}, client_app=app)
        for k in range(3)
    ]
    try:
        assert grid.wait_for_nodes(3, 60) == 3
        assert run_rounds(setup, grid)["status"] == "completed"
        # After round 2 both hold round 1's state; after round 3 node 1 still does (its
        # round-2 update was refused), node 0 holds round 2's.
        before, kept = snapshots[(1, 2)], snapshots[(1, 3)]
        assert all(np.array_equal(kept[k], before[k]) for k in kept)
        moved = snapshots[(0, 3)]
        assert not all(np.array_equal(moved[k], snapshots[(0, 2)][k]) for k in moved)
        server.finish()
        assert [c.join() for c in clients] == [0, 0, 0]
    finally:
        server.stop()

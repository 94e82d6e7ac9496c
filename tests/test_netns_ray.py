"""A two-node Ray cluster on two hosts (network namespaces): `fedlearn-simulate runtime=ray`.

The head runs in one namespace, a worker in the other (``ray start``), each with
one CPU, so Flower's engine places one client actor on each. What Ray 2.60 needs
(found here, and what the README says): token authentication on every node and
driver, explicitly. A head started without ``RAY_AUTH_MODE`` turns it on by
itself when a token file exists (``~/.ray/auth_token``, written by any earlier
local ``ray.init()``), but a joining node or a driver given an address turns it
on only with ``RAY_AUTH_MODE=token``: without, they fail with
``InvalidAuthToken``. So every process here gets ``RAY_AUTH_MODE=token`` and
the test's own token (``RAY_AUTH_TOKEN_PATH``), and each node its own
``--temp-dir`` (one file system serves both hosts).

The cluster is stopped by ending every process in the two namespaces, not by
``ray stop``, which stops the Ray processes of the whole machine.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
from pathlib import Path

import pytest

from fedlearn.runtime.grpc.secret_files import private_dir, write_private
from fedlearn.runtime.ray_nodes import read_nodes
from tests import netns
from tests.conftest import SIMULATE, TINY, metrics_without_timings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

PORT = 6379
EXPERIMENT = [o for o in TINY if not o.startswith("runtime.")] + ["runtime=ray", "seed=2"]
CLIENTS, ROUNDS = 4, 2  # TINY's
NODE = ["--num-cpus=1", "--disable-usage-stats", "--object-store-memory=100000000"]
ALIVE = (
    "import sys, ray; ray.init(address=sys.argv[1], logging_level='ERROR');"
    " print(sum(n['Alive'] for n in ray.nodes()))"
)


def same_rounds(got: list[dict], expected: list[dict]) -> None:
    """Equal round by round: the model, so the central evaluations, exactly; the
    clients' aggregated metrics within float rounding (a client's own float results
    can differ in their last bits with the worker process that computes them)."""
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        a, b = dict(a), dict(b)
        for key in ("train", "evaluate"):
            assert a.pop(key, {}) == pytest.approx(b.pop(key, {}), rel=1e-6, abs=1e-9)
        assert a == b


@pytest.fixture
def cluster_env():
    """A folder for Ray's files (short: Ray's socket paths are limited) and the
    environment every Ray process of the test gets. (Set up before ``hosts``: the
    processes in the namespaces end before their folder goes.)"""
    root = Path(f"/tmp/flray-{os.getpid()}-{secrets.token_hex(3)}")
    private_dir(root)
    token = write_private(root / "token", secrets.token_hex(32).encode())
    env = {
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
        "RAY_TMPDIR": str(root / "driver"),  # ray.init's files, the address file
    }
    try:
        yield root, env
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def hosts():
    reason = netns.unavailable()
    if reason:
        pytest.skip(reason)
    with netns.two_hosts(("ray-head", "ray-worker")) as pair:
        yield pair


def _ray(host: netns.Host, env: dict[str, str], *args: str) -> None:
    done = host.run(["ray", "start", *args, *NODE], env=env, timeout=180)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def _wait_nodes(host: netns.Host, env: dict[str, str], address: str, count: int) -> None:
    for _ in range(30):
        done = host.run([sys.executable, "-c", ALIVE, address], env=env)
        if done.returncode == 0 and done.stdout.strip().splitlines()[-1:] == [str(count)]:
            return
    raise AssertionError(f"the cluster never had {count} nodes: {done.stderr[-2000:]}")


def test_ray_cluster_on_two_hosts_runs_clients_on_both_like_one_node(cluster_env, hosts, tmp_path):
    head, worker = hosts
    root, env = cluster_env
    address = f"{head.address}:{PORT}"
    (root / "driver").mkdir()

    # The reference, a single-node Ray (ray.init's own local cluster), runs on the
    # worker's host while the head starts on the other.
    single = worker.start(
        [*SIMULATE, *EXPERIMENT, f"hydra.run.dir={tmp_path / 'single'}"],
        tmp_path / "single.log",
        env=env,
    )
    _ray(head, env, "--head", f"--node-ip-address={head.address}", f"--port={PORT}",
         f"--temp-dir={root / 'head'}", "--include-dashboard=false")  # fmt: skip
    code = netns.wait_exit(single, 300, "the single-node Ray run")
    assert code == 0, netns.log_tail(tmp_path / "single.log")
    _ray(worker, env, f"--address={address}", f"--node-ip-address={worker.address}",
         f"--temp-dir={root / 'worker'}")  # fmt: skip
    _wait_nodes(head, env, address, 2)
    run = head.run(
        [*SIMULATE, *EXPERIMENT, f"+runtime.init_args.address={address}",
         f"hydra.run.dir={tmp_path / 'cluster'}"],
        env=env,
        timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]

    result = json.loads((tmp_path / "cluster" / "result.json").read_text())
    reference = json.loads((tmp_path / "single" / "result.json").read_text())
    assert result["status"] == reference["status"] == "completed"
    assert result["final"] == reference["final"]
    same_rounds(
        metrics_without_timings(tmp_path / "cluster"), metrics_without_timings(tmp_path / "single")
    )
    trained = [n for n in read_nodes(tmp_path / "cluster") if n["type"] == "train"]
    assert sorted((n["round"], n["partition"]) for n in trained) == [
        (r, p) for r in range(1, ROUNDS + 1) for p in range(CLIENTS)
    ]
    assert {n["ip"] for n in trained} == {head.address, worker.address}
    assert len({n["ray_node"] for n in trained}) == 2

    # Stop the cluster: SIGTERM to every process of the two hosts, then what is left.
    for host in hosts:
        host.stop_all(grace=20)
        assert host.pids() == []

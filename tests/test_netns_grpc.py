"""A gRPC deployment on two hosts (network namespaces), made only from fedlearn-provision's kits.

The server runs its kit's ``start.sh`` in one namespace, two clients run theirs in
the other and dial the server by the name its certificate carries, across the
veth pair. The run equals ``fedlearn-launch`` (one machine, loopback) for the same
seed; afterwards a revoked client's kit is refused.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from fedlearn.runtime.grpc import kits
from fedlearn.runtime.grpc.provision import main as provision
from tests import netns
from tests.conftest import metrics_without_timings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(480)]

SERVER_NAME = "fl-server.test"
EXPERIMENT = [
    "dataset.max_samples=400",
    "num_rounds=2",
    "client.max_steps=3",
    "seed=5",
    "progress=false",
    "runtime.wait_timeout=240",
]
LAUNCH = [sys.executable, "-c", "from fedlearn.cli import launch; launch()"]


@pytest.fixture
def hosts():
    reason = netns.unavailable()
    if reason:
        pytest.skip(reason)
    with netns.two_hosts((SERVER_NAME, "client-host")) as pair:
        yield pair


def comparable(run_dir) -> list[dict]:
    """metrics.jsonl without timings and byte counts (heartbeats that happen to
    arrive during a round are counted in it)."""
    lines = metrics_without_timings(run_dir)
    for line in lines:
        line.pop("bytes_sent", None)
        line.pop("bytes_received", None)
    return lines


def test_kits_deploy_on_two_hosts_like_fedlearn_launch_and_revoked_kit_is_refused(hosts, tmp_path):
    server_host, client_host = hosts
    out = tmp_path / "kits"
    names = ["client-0", "client-1"]  # fedlearn-launch's names: the same node ids
    provision(["--out", str(out), "--server", SERVER_NAME, server_host.address,
               "--clients", *names, "--partitions", "2"])  # fmt: skip
    # Each machine gets its kit, copied with its modes (scp -rp, tar).
    machines = tmp_path / "machines"
    server_kit = shutil.copytree(out / "server", machines / "server" / "kit")
    client_kits = [shutil.copytree(out / "clients" / n, machines / n / "kit") for n in names]

    launched = subprocess.Popen(
        [*LAUNCH, *EXPERIMENT, "num_clients=2", f"hydra.run.dir={tmp_path / 'launched'}"],
        env=netns.command_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    deployed = tmp_path / "deployed"
    server = server_host.start(
        [str(server_kit / kits.START), *EXPERIMENT, f"hydra.run.dir={deployed}"],
        logs / "server.log",
    )
    clients = [
        client_host.start([str(kit / kits.START), "--threads", "1"], logs / f"{name}.log")
        for kit, name in zip(client_kits, names, strict=True)
    ]
    try:
        code = netns.wait_exit(server, 300, "fedlearn-server")
        assert code == 0, netns.log_tail(logs / "server.log")
        for proc, name in zip(clients, names, strict=True):
            assert netns.wait_exit(proc, 60, name) == 0, netns.log_tail(logs / f"{name}.log")
        assert netns.wait_exit(launched, 300, "fedlearn-launch") == 0, launched.stderr.read()
    finally:
        if launched.poll() is None:
            launched.kill()
    result = json.loads((deployed / "result.json").read_text())
    assert result["status"] == "completed" and result["rounds_completed"] == 2
    assert comparable(deployed) == comparable(tmp_path / "launched")
    # The clients came across the veth pair, from the other namespace.
    server_log = (logs / "server.log").read_text()
    assert server_log.count(f"connected from ipv4:{client_host.address}:") == 2

    # Revoke client-1; its machine still has its kit. The restarted server refuses it.
    provision(["--out", str(out), "--revoke", "client-1"])
    shutil.copy2(out / "server" / kits.TOKENS, server_kit / kits.TOKENS)
    server = server_host.start(
        [str(server_kit / kits.START), *EXPERIMENT, f"hydra.run.dir={tmp_path / 'again'}"],
        logs / "server-again.log",
    )
    revoked = client_host.start([str(client_kits[1] / kits.START)], logs / "revoked.log")
    assert netns.wait_exit(revoked, 240, "the revoked client") == 1
    lines = (logs / "revoked.log").read_text().splitlines()
    assert any(
        "refused this client: UNAUTHENTICATED: missing or unknown client token" in x for x in lines
    ), netns.log_tail(logs / "revoked.log")
    assert server.poll() is None  # still waiting for its one client; killed on cleanup

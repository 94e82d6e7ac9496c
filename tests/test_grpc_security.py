"""TLS, mutual TLS and token authentication of the gRPC runtime (real gRPC on loopback)."""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest

from fedlearn.runtime.grpc import fedlearn_pb2 as pb
from fedlearn.runtime.grpc import fedlearn_pb2_grpc as pb_grpc
from fedlearn.runtime.grpc import security
from fedlearn.runtime.grpc.certs import make_pki
from fedlearn.runtime.grpc.settings import PROTOCOL_VERSION, TlsSettings
from tests.test_grpc_helpers import ThreadClient, run_fedavg, start_server, wait_for

pytestmark = pytest.mark.timeout(60)


def _raw_connect(port: int, creds: grpc.ChannelCredentials, token: str | None) -> grpc.RpcError:
    """Open a stream by hand; return the error the server ends it with."""
    hello = pb.ClientFrame(hello=pb.Hello(protocol_version=PROTOCOL_VERSION, node_name="eve"))
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    with grpc.secure_channel(f"127.0.0.1:{port}", creds) as channel:
        frames = pb_grpc.FleetStub(channel).Connect(iter([hello]), metadata=metadata, timeout=10)
        with pytest.raises(grpc.RpcError) as err:
            received = [f.WhichOneof("kind") for f in frames]
            raise AssertionError(f"server sent {received} to an unauthenticated client")
    return err.value


def test_tls_with_tokens_trains_and_refuses_unknown_clients(tmp_path):
    pki = make_pki(tmp_path, ["alice", "bob"])
    tls = TlsSettings(cert=str(pki.server_cert), key=str(pki.server_key))
    grid, server, port = start_server(tls=tls, auth_tokens=str(pki.tokens), insecure=False)
    try:
        creds = security.channel_credentials(str(pki.ca))
        for token in (None, "not-a-token-of-this-server"):
            err = _raw_connect(port, creds, token)
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED
        wrong = tmp_path / "wrong.token"
        wrong.write_text("x" * 32)
        wrong.chmod(0o600)
        bad = ThreadClient(
            port, "mallory", insecure=False, tls_ca=str(pki.ca), token_file=str(wrong)
        )
        assert bad.join() == 1 and bad.client.handled == 0  # refused, never got a model
        assert grid.get_node_ids() == []
        good = [
            ThreadClient(
                port,
                name,
                {"partition-id": k},
                insecure=False,
                tls_ca=str(pki.ca),
                token_file=str(pki.client_tokens[name]),
            )
            for k, name in enumerate(["alice", "bob"])
        ]
        final = run_fedavg(grid, 2)
        # Weighted by 10 and 11 examples: (10*1 + 11*2) / 21 added to zeros.
        np.testing.assert_allclose(final, np.full(4, 32 / 21), rtol=1e-6)
        assert sorted(grid.get_node_ids()) == sorted(
            security.node_id_for(n) for n in ["alice", "bob"]
        )
        server.finish()
        assert [c.join() for c in good] == [0, 0]
    finally:
        server.stop()


def test_mutual_tls_identifies_clients_by_certificate(tmp_path):
    pki = make_pki(tmp_path, ["carol"])
    tls = TlsSettings(cert=str(pki.server_cert), key=str(pki.server_key), ca=str(pki.ca))
    grid, server, port = start_server(tls=tls, require_client_cert=True, insecure=False)
    try:
        # Without a client certificate the TLS handshake itself fails.
        err = _raw_connect(port, security.channel_credentials(str(pki.ca)), None)
        assert err.code() == grpc.StatusCode.UNAVAILABLE
        cert, key = pki.client_certs["carol"]
        client = ThreadClient(
            port,
            "ignored",
            insecure=False,
            tls_ca=str(pki.ca),
            tls_cert=str(cert),
            tls_key=str(key),
        )
        run_fedavg(grid, 1)
        assert grid.get_node_ids() == [security.node_id_for("carol")]
        server.finish()
        assert client.join() == 0 and client.client.handled == 2
    finally:
        server.stop()


def test_plaintext_client_cannot_reach_a_tls_server_and_is_told_so(tmp_path, caplog):
    pki = make_pki(tmp_path, ["dave"])
    tls = TlsSettings(cert=str(pki.server_cert), key=str(pki.server_key))
    grid, server, port = start_server(tls=tls, auth_tokens=str(pki.tokens), insecure=False)
    try:
        client = ThreadClient(port, "dave", token_file=str(pki.client_tokens["dave"]))
        assert client.join(30) == 2 and grid.get_node_ids() == []  # at once, not retried
        (line,) = [r.getMessage() for r in caplog.records if "speaks TLS" in r.getMessage()]
        assert line.startswith(f"--server 127.0.0.1:{port} speaks TLS and this client does not")
    finally:
        server.stop()


def test_a_malicious_server_cannot_run_code_on_a_client(tmp_path, monkeypatch, caplog):
    """A server (or whoever holds its address and certificate) that names a callable
    of its choosing in the run config: the client refuses it before importing it, says
    which in one line, and exits non-zero; nothing of it runs."""
    from omegaconf import OmegaConf

    from fedlearn import targets
    from fedlearn.app.run_config import client_run_config
    from fedlearn.experiment import compose_config

    monkeypatch.setenv(targets.ENV, "")
    marker = tmp_path / "pwned"
    cfg = OmegaConf.to_container(compose_config(["dataset.max_samples=100"]), resolve=True)
    run_config = client_run_config(cfg)
    run_config = {k: v for k, v in run_config.items() if not k.startswith("dataset.")}
    run_config.update({"dataset._target_": "pathlib.Path.touch", "dataset.self": str(marker)})
    grid, server, port = start_server(run_config)
    try:
        from fedlearn.app.client_app import app as fedlearn_app

        client = ThreadClient(port, "victim", {"partition-id": 0}, client_app=fedlearn_app)
        assert client.join(30) == 2
        assert not marker.exists()
        refusals = [r.getMessage() for r in caplog.records if "is not allowed" in r.getMessage()]
        assert len(refusals) == 1 and "\n" not in refusals[0], refusals
        assert refusals[0].startswith("dataset._target_=pathlib.Path.touch is not allowed")
        assert grid.get_node_ids() == []  # it never said Ready
    finally:
        server.stop()


def test_a_second_connection_with_a_live_nodes_token_is_refused(tmp_path):
    """A leaked token: the newcomer is refused while the node's own stream is alive."""
    pki = make_pki(tmp_path, ["alice", "bob"])
    tls = TlsSettings(cert=str(pki.server_cert), key=str(pki.server_key))
    grid, server, port = start_server(tls=tls, auth_tokens=str(pki.tokens), insecure=False)
    kw = {"insecure": False, "tls_ca": str(pki.ca)}
    try:
        owners = [
            ThreadClient(port, n, {"partition-id": k}, token_file=str(pki.client_tokens[n]), **kw)
            for k, n in enumerate(["alice", "bob"])
        ]
        assert grid.wait_for_nodes(2, 30) == 2
        thief = ThreadClient(
            port,
            "thief",
            {"partition-id": 5},
            token_file=str(pki.client_tokens["alice"]),
            reconnect_timeout=2.0,
            **kw,
        )
        assert thief.join(30) == 1 and thief.client.handled == 0  # refused, never sampled
        final = run_fedavg(grid, 2, rounds=2)
        np.testing.assert_allclose(final, np.full(4, 2 * 32 / 21), rtol=1e-6)  # alice + bob
        assert [c.client.handled for c in owners] == [4, 4]
        server.finish()
        assert [c.join() for c in owners] == [0, 0]
    finally:
        server.stop()


def _held_stream(port: int, name: str, beating: threading.Event, out: list) -> threading.Thread:
    """A raw stream as node ``name``: Hello, Ready, heartbeats while ``beating`` is set,
    then silence with the connection kept open; ``out`` gets the error ending it."""

    def frames():
        yield pb.ClientFrame(hello=pb.Hello(protocol_version=PROTOCOL_VERSION, node_name=name))
        yield pb.ClientFrame(ready=pb.Ready())
        while beating.is_set():
            yield pb.ClientFrame(heartbeat=pb.Heartbeat())
            time.sleep(0.1)
        time.sleep(30)

    def run() -> None:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            try:
                for _ in pb_grpc.FleetStub(channel).Connect(frames(), timeout=40):
                    pass
                out.append(None)
            except grpc.RpcError as err:
                out.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_node_whose_old_stream_is_dead_takes_its_place_again():
    grid, server, port = start_server(heartbeat_interval=0.5, heartbeat_timeout=3.0)
    try:
        beating, first, second = threading.Event(), [], []
        beating.set()
        _held_stream(port, "x", beating, first)
        assert grid.wait_for_nodes(1, 20) == 1
        _held_stream(port, "x", beating, second).join(20)  # the same name while it lives
        assert second[0].code() == grpc.StatusCode.ALREADY_EXISTS
        assert "already connected" in second[0].details()
        beating.clear()  # the first stream goes silent (a client that died half-way) ...
        again = ThreadClient(port, "x", {"partition-id": 0})  # ... its restart gets in
        wait_for(lambda: first, 30, "the silent stream to be closed")
        assert first[0] is None or first[0].code() != grpc.StatusCode.ALREADY_EXISTS
        run_fedavg(grid, 1)
        assert again.client.handled == 2 and grid.get_node_ids() == [security.node_id_for("x")]
        server.finish()
        assert again.join() == 0
    finally:
        server.stop()

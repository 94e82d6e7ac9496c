"""The server's tokens file is read again when it changes: revoke or add clients live."""

from __future__ import annotations

import logging
import os

import grpc
import numpy as np
import pytest

from fedlearn.runtime.grpc import kits, security
from fedlearn.runtime.grpc.provision import main as provision
from fedlearn.runtime.grpc.secret_files import write_private
from fedlearn.runtime.grpc.settings import TlsSettings
from tests.test_grpc_helpers import ThreadClient, run_fedavg, start_server, wait_for
from tests.test_grpc_security import _raw_connect

A, B, C = ("a" * 20, "b" * 20, "c" * 24)


def test_token_file_follows_edits_and_keeps_its_tokens_when_an_edit_is_unusable(tmp_path, caplog):
    path = write_private(tmp_path / "tokens.txt", f"alice {A}\nbob {B}\n".encode())
    tokens = security.TokenFile(path)
    assert set(tokens.current().values()) == {"alice", "bob"}
    write_private(path, f"alice {A}\n".encode(), replace=True)  # a new file moved in place
    assert set(tokens.current().values()) == {"alice"}
    path.write_text(f"alice {A}\ncarol {C}\n")  # edited in place
    assert set(tokens.current().values()) == {"alice", "carol"}
    caplog.set_level(logging.WARNING, "fedlearn.grpc")
    assert "removed: bob" in caplog.text and "added: carol" in caplog.text
    for broken, why in [("alice\n", "line 1"), ("# nobody\n", "no tokens"), (None, "no such")]:
        caplog.clear()
        if broken is None:
            path.unlink()
        else:
            path.write_text(broken)
        assert set(tokens.current().values()) == {"alice", "carol"}
        assert why in caplog.text and "stay in force" in caplog.text
    write_private(path, f"alice {A}\n".encode())
    os.chmod(path, 0o644)
    caplog.clear()
    assert set(tokens.current().values()) == {"alice", "carol"} and "too open" in caplog.text
    os.chmod(path, 0o600)
    assert set(tokens.current().values()) == {"alice"}


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_revoked_client_is_refused_and_added_one_joins_without_a_restart(tmp_path):
    out = tmp_path / "kits"
    provision(["--out", str(out), "--server", "127.0.0.1", "--clients", "alice", "bob", "--mtls"])
    server_kit = out / "server"
    tls = TlsSettings(
        cert=str(server_kit / kits.SERVER_CERT),
        key=str(server_kit / kits.SERVER_KEY),
        ca=str(server_kit / kits.CA),
    )
    grid, server, port = start_server(
        tls=tls,
        auth_tokens=str(server_kit / kits.TOKENS),
        require_client_cert=True,
        insecure=False,
    )

    def client(name: str, k: int) -> ThreadClient:
        kit = out / "clients" / name
        return ThreadClient(
            port,
            name,
            {"partition-id": k},
            insecure=False,
            tls_ca=str(kit / kits.CA),
            tls_cert=str(kit / kits.CLIENT_CERT),
            tls_key=str(kit / kits.CLIENT_KEY),
            token_file=str(kit / kits.TOKEN),
        )

    try:
        alice, bob = client("alice", 0), client("bob", 1)
        np.testing.assert_allclose(run_fedavg(grid, 2), np.full(4, 32 / 21), rtol=1e-6)
        bob_token = (out / "clients" / "bob" / kits.TOKEN).read_text().strip()
        bob_creds = security.channel_credentials(
            str(out / "clients" / "bob" / kits.CA),
            str(out / "clients" / "bob" / kits.CLIENT_CERT),
            str(out / "clients" / "bob" / kits.CLIENT_KEY),
        )
        provision(["--out", str(out), "--revoke", "bob"])  # rewrites server/tokens.txt
        # The next connection with bob's token (and still valid certificate) is refused...
        err = _raw_connect(port, bob_creds, bob_token)
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
        # ... and bob's open stream is closed: the client stops for good.
        assert bob.join(30) == 1
        wait_for(lambda: len(grid.get_node_ids()) == 1, 10, "bob dropped")
        assert grid.get_node_ids() == [security.node_id_for("alice")]
        provision(["--out", str(out), "--add", "--clients", "carol"])
        carol = client("carol", 2)
        wait_for(lambda: len(grid.get_node_ids()) == 2, 20, "carol joined")
        ids = {security.node_id_for(n) for n in ("alice", "carol")}
        assert set(grid.get_node_ids()) == ids
        run_fedavg(grid, 2)
        assert carol.client.handled == alice.client.handled - 2 == 2  # alice: both runs
        # A new token for carol: the stream opened with the old one is closed too.
        tokens = server_kit / kits.TOKENS
        old = (out / "clients" / "carol" / kits.TOKEN).read_text().strip()
        write_private(tokens, tokens.read_text().replace(old, "n" * 32).encode(), replace=True)
        assert carol.join(30) == 1
        server.finish()
        assert alice.join() == 0
    finally:
        server.stop()

"""Start-up errors of fedlearn-server and fedlearn-client: one line naming the setting, at once."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from fedlearn.runtime.grpc import preflight
from fedlearn.runtime.grpc.certs import make_pki
from fedlearn.runtime.grpc.client import ClientSettings, GrpcClient
from fedlearn.runtime.grpc.grid import GrpcGrid
from fedlearn.runtime.grpc.server import GrpcServer
from fedlearn.runtime.grpc.settings import DeploySettings, TlsSettings
from tests.test_grpc_helpers import REPO, ThreadClient, free_port, start_server

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):  # noqa: ANN001, ANN201
    """Two unrelated PKIs (a key of the other one does not match), and a file that is not PEM."""
    root = tmp_path_factory.mktemp("pki")
    ours, theirs = make_pki(root / "a", ["alice"]), make_pki(root / "b", ["alice"])
    (root / "junk.pem").write_text("not a certificate\n")
    return ours, theirs, str(root / "junk.pem")


def _serve(address: str, **tls) -> None:
    settings = DeploySettings(address=address, insecure=not tls, **tls)
    settings.validate()
    server = GrpcServer(GrpcGrid({}), settings)
    try:
        server.start()
    finally:
        server.stop()


def _tls(cert, key, auth=None) -> dict:  # noqa: ANN001
    return {"tls": TlsSettings(cert=str(cert), key=str(key)), "auth_tokens": str(auth)}


def test_server_settings_that_cannot_work_are_one_line_errors(pki) -> None:
    ours, theirs, junk = pki
    cases = [
        ("127.0.0.1:99999", {}, "runtime.address=127.0.0.1:99999: the port must be a number"),
        ("no-such-host.invalid:0", {}, "cannot resolve host 'no-such-host.invalid'"),
        ("192.0.2.1:9092", {}, "192.0.2.1 is not an address of this machine"),
        (
            "127.0.0.1:0",
            _tls(ours.server_cert, theirs.server_key, ours.tokens),
            "runtime.tls.key=",  # ... is not the key of runtime.tls.cert=...
        ),
        ("127.0.0.1:0", _tls(junk, ours.server_key, ours.tokens), "not a PEM certificate"),
    ]
    for address, tls, words in cases:
        with pytest.raises(ValueError) as err:
            _serve(address, **tls)
        assert words in str(err.value) and "\n" not in str(err.value), str(err.value)
    with pytest.raises(ValueError, match="is not the key of runtime.tls.cert="):
        _serve("127.0.0.1:0", **_tls(ours.server_cert, theirs.server_key, ours.tokens))


def test_a_port_taken_by_a_running_server_is_refused(pki) -> None:
    grid, server, port = start_server()
    try:
        with pytest.raises(ValueError, match=f"port {port} is in use"):
            _serve(f"127.0.0.1:{port}")
    finally:
        server.stop()
    with socket.socket() as taken:  # and gRPC itself no longer shares a port
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(ValueError, match="is in use"):
            _serve(f"127.0.0.1:{taken.getsockname()[1]}")


def _client(**kw) -> GrpcClient:  # noqa: ANN003
    return GrpcClient(ClientSettings(**kw), app=object())  # type: ignore[arg-type]


def test_client_settings_that_cannot_work_are_one_line_errors(pki) -> None:
    ours, theirs, junk = pki
    cert, key = ours.client_certs["alice"]
    _, other_key = theirs.client_certs["alice"]
    cases = [
        ({"address": "coordinator", "insecure": True}, "--server=coordinator: expected host:port"),
        ({"address": "coordinator:http", "insecure": True}, "the port must be a number"),
        ({"address": "no-such-host.invalid:9092", "insecure": True}, "cannot resolve host"),
        ({"address": "127.0.0.1:9092", "tls_ca": junk}, "--tls-ca="),
        (
            {
                "address": "127.0.0.1:9092",
                "tls_ca": str(ours.ca),
                "tls_cert": str(cert),
                "tls_key": str(other_key),
            },
            "is not the key of --tls-cert=",
        ),
    ]
    for kw, words in cases:
        with pytest.raises(ValueError) as err:
            _client(**kw)
        assert words in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_a_certificate_for_another_address_or_ca_is_named(pki, caplog) -> None:
    """The server's certificate names localhost and 127.0.0.1; it listens on 127.0.0.2."""
    ours, theirs, _ = pki
    tls = TlsSettings(cert=str(ours.server_cert), key=str(ours.server_key))
    grid, server, port = start_server(
        tls=tls, auth_tokens=str(ours.tokens), insecure=False, host="127.0.0.2"
    )
    address = f"127.0.0.2:{port}"
    try:
        kw = {"address": address, "insecure": False, "token_file": str(ours.client_tokens["alice"])}
        assert ThreadClient(port, "alice", tls_ca=str(ours.ca), **kw).join(30) == 2
        assert ThreadClient(port, "alice", tls_ca=str(theirs.ca), **kw).join(30) == 2
        lines = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert (
            f"--server {address}: the server's certificate is for localhost, 127.0.0.1, not"
            " 127.0.0.2; dial one of those, or give the server a certificate for this address"
        ) in lines, lines
        assert any(
            f"--server {address}: its certificate is not signed by --tls-ca={theirs.ca}" in x
            for x in lines
        )
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("command", "words"),
    [
        (["server", "runtime.insecure=true", "runtime.address=127.0.0.1:99999"], "runtime.address"),
        (["client", "--insecure", "--server", "coordinator"], "--server=coordinator"),
    ],
)
def test_console_scripts_exit_2_with_one_line(command, words, tmp_path) -> None:
    args = [*command, f"hydra.run.dir={tmp_path}"] if command[0] == "server" else command
    proc = subprocess.run(
        [sys.executable, "-m", "fedlearn.runtime.grpc.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], proc.stderr


def test_a_second_server_on_a_running_ones_port_is_refused_by_grpc_too() -> None:
    # The check above can race with another server: gRPC must not share the port either.
    port = free_port()
    grid, server, _ = start_server(port=port)
    try:
        from unittest import mock

        with mock.patch.object(preflight, "check_bindable"):
            with pytest.raises(ValueError, match="cannot listen there"):
                _serve(f"127.0.0.1:{port}")
    finally:
        server.stop()

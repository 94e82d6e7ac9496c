"""fedlearn-provision: kits' contents and modes, --add, --revoke, one-line errors, start.sh."""

from __future__ import annotations

import ipaddress
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from fedlearn.runtime.grpc import kits
from fedlearn.runtime.grpc.provision import client_names, main, server_host

posix = pytest.mark.skipif(os.name != "posix", reason="file modes and sh are POSIX")


def provision(*argv: str) -> None:
    main([str(a) for a in argv])


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def out(tmp_path: Path) -> Path:
    out = tmp_path / "kits"
    provision("--out", out, "--server", "fl.example.org", "10.1.2.3", "fd00::7",
              "--clients", "alice", "bob", "--mtls")  # fmt: skip
    return out


@pytest.mark.parametrize(
    "text, host",
    [
        ("coordinator", "coordinator"),
        ("fl-1.example.org.", "fl-1.example.org"),
        ("10.0.0.5", "10.0.0.5"),
        ("[fd00::1]", "fd00::1"),
        ("FD00:0::1", "fd00::1"),
    ],
)
def test_server_names_accepted(text, host):
    assert server_host(text) == host


@pytest.mark.parametrize(
    "text", ["foo_bar", "-lead.org", "a..b", "10.0.0.256", "1.2.3", "x" * 64, "a b", "", "h:9092"]
)
def test_server_name_neither_host_nor_ip_is_refused(text):
    with pytest.raises(ValueError, match="neither a host name nor an IP address"):
        server_host(text)


def test_wildcard_address_is_refused():
    with pytest.raises(ValueError, match="wildcard"):
        server_host("0.0.0.0")


@pytest.mark.parametrize(
    "name", ["a/b", "../x", ".hidden", "a b", "nul", "com1.txt", "x" * 65, "é"]
)
def test_client_name_unsafe_for_a_file_is_refused(name):
    with pytest.raises(ValueError, match="not safe as a file name"):
        client_names([name], [])


def test_client_name_repeats_are_refused():
    assert client_names(["alice", "bob-2", "c.d_e"], []) == ["alice", "bob-2", "c.d_e"]
    with pytest.raises(ValueError, match="alice: repeats"):
        client_names(["alice", "bob", "alice"], [])
    with pytest.raises(ValueError, match="Alice: provisioned already"):
        client_names(["Alice"], ["alice"])


@posix
def test_kits_hold_what_each_machine_needs_and_are_private(out):
    assert sorted(os.listdir(out / "server")) == sorted(
        [kits.CA, kits.SERVER_CERT, kits.SERVER_KEY, kits.TOKENS, kits.START, kits.README]
    )
    for name in ("alice", "bob"):
        kit = out / "clients" / name
        assert sorted(os.listdir(kit)) == sorted(
            [kits.CA, kits.TOKEN, kits.CLIENT_CERT, kits.CLIENT_KEY, kits.START, kits.README]
        )
        client = cert(kit / kits.CLIENT_CERT)
        assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == name
        client.verify_directly_issued_by(cert(out / "ca" / "ca.pem"))
    folders = [out, out / "ca", out / "server", out / "clients", *(out / "clients").iterdir()]
    assert {mode(f) for f in folders} == {0o700}
    secrets = [*out.rglob("*.key"), *out.rglob("*.token"), *out.rglob(kits.TOKENS)]
    assert len(secrets) == 7 and {mode(p) for p in secrets} == {0o600}  # ca.key too
    # The CA key is in no kit, under no name.
    ca_key = (out / "ca" / "ca.key").read_bytes()
    for kit in [out / "server", *(out / "clients").iterdir()]:
        assert ca_key not in files(kit).values()


def test_server_certificate_names_the_server_and_tokens_match_kits(out):
    server = cert(out / "server" / kits.SERVER_CERT)
    server.verify_directly_issued_by(cert(out / "server" / kits.CA))
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["fl.example.org"]
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.1.2.3"),
        ipaddress.ip_address("fd00::7"),
    ]
    lines = [x for x in (out / "server" / kits.TOKENS).read_text().splitlines() if x[:1] != "#"]
    assert lines == [
        f"{n} {(out / 'clients' / n / kits.TOKEN).read_text().strip()}" for n in ("alice", "bob")
    ]


def test_add_keeps_every_existing_kit_valid(out):
    server_before = files(out / "server")
    alice_before = files(out / "clients" / "alice")
    ca_before = (out / "ca" / "ca.pem").read_bytes()
    provision("--out", out, "--add", "--clients", "carol")
    assert files(out / "clients" / "alice") == alice_before
    assert (out / "ca" / "ca.pem").read_bytes() == ca_before
    for name in (kits.CA, kits.SERVER_CERT, kits.SERVER_KEY):
        assert (out / "server" / name).read_bytes() == server_before[name]
    tokens = (out / "server" / kits.TOKENS).read_text()
    assert tokens.startswith(server_before[kits.TOKENS].decode())
    carol = (out / "clients" / "carol" / kits.TOKEN).read_text().strip()
    assert tokens.endswith(f"carol {carol}\n")
    cert(out / "clients" / "carol" / kits.CLIENT_CERT).verify_directly_issued_by(
        cert(out / "ca" / "ca.pem")
    )
    assert "num_clients=3" in (out / "server" / kits.START).read_text()
    assert "node-index=2" in (out / "clients" / "carol" / kits.START).read_text()


def test_revoke_removes_the_line_and_the_kit(out):
    provision("--out", out, "--revoke", "bob")
    tokens = (out / "server" / kits.TOKENS).read_text()
    assert "\nalice " in tokens and "bob" not in tokens.split("\n", 2)[2]
    assert not (out / "clients" / "bob").exists()
    assert "num_clients=1" in (out / "server" / kits.START).read_text()
    with pytest.raises(ValueError, match="provisioned already"):
        provision("--out", out, "--add", "--clients", "bob")


def test_partitions_are_given_out_in_order_and_not_beyond(tmp_path):
    out = tmp_path / "kits"
    provision("--out", out, "--server", "h", "--clients", "a", "b", "--partitions", "3")
    assert "--partition-id 1 --num-partitions 3" in (out / "clients" / "b" / kits.START).read_text()
    server = (out / "server" / kits.START).read_text()
    assert "num_clients=3" in server and "runtime.min_clients=2" in server
    provision("--out", out, "--add", "--clients", "c")
    with pytest.raises(ValueError, match="3 partitions"):
        provision("--out", out, "--add", "--clients", "d")


@pytest.mark.parametrize(
    "argv, error",
    [
        (["--server", "foo_bar", "--clients", "a"], "--server 'foo_bar': neither a host name"),
        (["--server", "h", "--clients", "a", "b", "a"], "--clients a: repeats"),
        (["--server", "h", "--clients", "a:b"], "--clients 'a:b': not safe as a file name"),
        (["--server", "h", "--clients", "x"], "--out {out}: holds a CA already"),
        (["--add", "--clients", "x", "--mtls"], "--mtls: set when the kits were made"),
        (["--server", "h"], "--server and --clients are required"),
    ],
)
def test_errors_are_one_line_exit_2(out, argv, error, monkeypatch, capsys):
    from fedlearn.cli import provision as command

    monkeypatch.setattr(sys, "argv", ["fedlearn-provision", "--out", str(out), *argv])
    with pytest.raises(SystemExit) as stop:
        command()
    assert stop.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    expected = f"fedlearn: error: {error.format(out=out)}"
    assert len(lines) == 1 and lines[0].startswith(expected), lines


@posix
def test_add_refuses_a_ca_key_others_may_read(out):
    os.chmod(out / "ca" / "ca.key", 0o644)
    with pytest.raises(ValueError, match="too open"):
        provision("--out", out, "--add", "--clients", "carol")


@posix
@pytest.mark.skipif(shutil.which("sh") is None, reason="no sh")
def test_start_scripts_run_the_command_from_wherever_the_kit_is(out, tmp_path):
    from fedlearn.experiment import compose_config

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for program in ("fedlearn-server", "fedlearn-client"):
        (bin_dir / program).write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
        (bin_dir / program).chmod(0o755)
    moved = tmp_path / "a folder, copied" / "server kit"
    shutil.copytree(out / "server", moved.parent / "server kit")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}

    def argv(script: Path, *extra: str) -> list[str]:
        run = subprocess.run(
            [str(script), *extra], env=env, cwd=tmp_path, capture_output=True, text=True
        )
        assert run.returncode == 0, run.stderr
        return run.stdout.splitlines()

    args = argv(moved / kits.START, "num_rounds=7")
    cfg = compose_config(["runtime=grpc", *args])
    assert cfg.runtime.tls.cert == str(moved / kits.SERVER_CERT)
    assert cfg.runtime.auth_tokens == str(moved / kits.TOKENS)
    assert cfg.runtime.require_client_cert and cfg.runtime.tls.ca == str(moved / kits.CA)
    assert cfg.runtime.address == "0.0.0.0:9092" and cfg.num_rounds == 7
    assert cfg.num_clients == cfg.runtime.min_clients == 2
    alice = out / "clients" / "alice"
    assert argv(alice / kits.START, "--device", "cpu") == [
        "--server", "fl.example.org:9092",
        "--tls-ca", str(alice / kits.CA),
        "--token-file", str(alice / kits.TOKEN),
        "--state-file", str(alice / kits.STATE),
        "--tls-cert", str(alice / kits.CLIENT_CERT),
        "--tls-key", str(alice / kits.CLIENT_KEY),
        "--node-config", "node-index=0",
        "--device", "cpu",
    ]  # fmt: skip


def test_add_after_a_hand_edit_without_a_final_newline(out):
    from fedlearn.runtime.grpc import security

    tokens = out / "server" / kits.TOKENS
    tokens.write_text(tokens.read_text().rstrip("\n"))
    provision("--out", out, "--add", "--clients", "carol")
    assert set(security.load_tokens(tokens).values()) == {"alice", "bob", "carol"}

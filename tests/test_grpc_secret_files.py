"""Keys and tokens on disk: created private, and refused when other users may read them."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from fedlearn.runtime.grpc import security
from fedlearn.runtime.grpc.certs import make_pki
from fedlearn.runtime.grpc.secret_files import check_private, private_dir, write_private
from tests.test_grpc_helpers import REPO

posix = pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def no_umask_no_chmod(monkeypatch):
    """umask 0 and every chmod refused: a mode seen afterwards was set at creation."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"chmod called: {args}")

    for name in ("chmod", "fchmod", "lchmod"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, refuse)
    monkeypatch.setattr(Path, "chmod", refuse)
    old = os.umask(0)
    yield
    os.umask(old)


@posix
def test_write_private_creates_with_the_mode_and_never_overwrites(tmp_path, no_umask_no_chmod):
    secret = write_private(tmp_path / "a.key", b"k")
    assert mode(secret) == 0o600 and secret.read_bytes() == b"k"
    assert mode(write_private(tmp_path / "a.pem", b"c", mode=0o644)) == 0o644
    with pytest.raises(FileExistsError):
        write_private(secret, b"other")
    # A symlink planted where a secret will go is not written through.
    victim = tmp_path / "victim"
    victim.write_bytes(b"v")
    (tmp_path / "planted.key").symlink_to(victim)
    with pytest.raises(FileExistsError):
        write_private(tmp_path / "planted.key", b"k")
    assert victim.read_bytes() == b"v"
    write_private(secret, b"new", replace=True)
    assert secret.read_bytes() == b"new" and mode(secret) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.key", "a.pem", "planted.key", "victim"]


@posix
def test_trial_pki_is_private_from_the_first_byte(tmp_path, no_umask_no_chmod):
    pki = make_pki(tmp_path / "certs", ["alice", "bob"])
    assert mode(tmp_path / "certs") == 0o700
    secrets_ = [pki.server_key, pki.tokens, *pki.client_tokens.values()]
    secrets_ += [key for _, key in pki.client_certs.values()]
    assert all(mode(p) == 0o600 for p in secrets_), {p.name: oct(mode(p)) for p in secrets_}
    assert mode(pki.ca) == mode(pki.server_cert) == 0o644
    assert not any("ca" in p.name and p.suffix == ".key" for p in (tmp_path / "certs").iterdir())


@posix
def test_trial_pki_again_in_the_same_folder_replaces_it(tmp_path):
    first = make_pki(tmp_path, ["alice"])  # a resumed fedlearn-launch run
    token = first.client_tokens["alice"].read_text()
    (tmp_path / "extra").mkdir()
    os.chmod(tmp_path, 0o755)
    second = make_pki(tmp_path, ["alice"])
    assert second.client_tokens["alice"].read_text() != token
    assert mode(tmp_path) == 0o700 and mode(second.tokens) == 0o600


@posix
def test_private_dir_is_0700(tmp_path):
    assert mode(private_dir(tmp_path / "a" / "b")) == 0o700


@posix
@pytest.mark.parametrize("bits", [0o644, 0o640, 0o604, 0o660, 0o700 | 0o020])
def test_exposed_secret_of_mine_is_refused_in_one_line(tmp_path, bits):
    path = tmp_path / "me.token"
    path.write_text("t" * 32)
    os.chmod(path, bits)
    with pytest.raises(ValueError) as err:
        check_private(path, "--token-file")
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"--token-file={path}: permissions 0")
    assert f"{bits:04o} are too open" in text and text.endswith(f"chmod 600 {path}")


@posix
@pytest.mark.parametrize("bits", [0o600, 0o400])
def test_private_secret_is_accepted(tmp_path, bits):
    path = tmp_path / "me.key"
    path.write_text("k")
    os.chmod(path, bits)
    check_private(path, "--tls-key")


@posix
@pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0, reason="chown needs root")
def test_secret_owned_by_another_user_may_be_shared_with_a_group_only(tmp_path):
    path = tmp_path / "server.key"  # e.g. root:ssl-cert 0640 for a service in that group
    path.write_text("k")
    os.chown(path, 65534, -1)
    os.chmod(path, 0o640)
    check_private(path, "runtime.tls.key")
    os.chmod(path, 0o644)
    with pytest.raises(ValueError, match="too open"):
        check_private(path, "runtime.tls.key")


@posix
def test_server_and_client_refuse_readable_keys_and_tokens(tmp_path):
    pki = make_pki(tmp_path, ["alice"])
    cert, key = pki.client_certs["alice"]
    for path in (pki.tokens, pki.server_key, pki.client_tokens["alice"], key):
        os.chmod(path, 0o644)
    with pytest.raises(ValueError, match="^runtime.auth_tokens=.*too open"):
        security.load_tokens(pki.tokens)
    with pytest.raises(ValueError, match="^runtime.tls.key=.*too open"):
        security.server_credentials(str(pki.server_cert), str(pki.server_key), None, False)
    with pytest.raises(ValueError, match="^--token-file=.*too open"):
        security.read_token(pki.client_tokens["alice"])
    with pytest.raises(ValueError, match="^--tls-key=.*too open"):
        security.channel_credentials(str(pki.ca), str(cert), str(key))
    with pytest.raises(ValueError, match="no such file"):  # still the first thing said
        security.read_token(tmp_path / "missing.token")


@posix
@pytest.mark.slow
def test_fedlearn_client_with_a_readable_token_exits_2_in_one_line(tmp_path):
    pki = make_pki(tmp_path, ["alice"])
    token = pki.client_tokens["alice"]
    os.chmod(token, 0o644)
    cmd = "from fedlearn.cli import client; client()"
    args = ["--server", "127.0.0.1:1", "--tls-ca", str(pki.ca), "--token-file", str(token)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", cmd, *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"fedlearn: error: --token-file={token}: permissions 0644 are too open (other users"
        f" may read this secret); chmod 600 {token}"
    ]

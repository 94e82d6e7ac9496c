"""TLS credentials, client tokens and node identities for the gRPC runtime.

- The server has a certificate and key (PEM files); with
  ``require_client_cert`` it also checks client certificates against a CA
  (mutual TLS) and the certificate's common name is the client's identity.
- Tokens: the server reads a file of ``<client-name> <token>`` lines
  (:class:`TokenFile`: read again when it changes, so removing a line revokes
  that client without a restart); a client reads its token from a file (never
  the command line) and sends it as ``authorization: Bearer <token>`` call
  metadata. The token's name is the client's identity.
- Key and token files that other users may read are refused
  (:func:`.secret_files.check_private`).
- A client's node id is derived from its identity, so a client that
  reconnects, or reconnects to a restarted server, keeps its node id.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

import grpc

from fedlearn.runtime.grpc.secret_files import check_private
from fedlearn.runtime.grpc.settings import log

AUTH_HEADER = "authorization"


def read_file(path: str | os.PathLike, setting: str) -> bytes:
    """Read a credentials file; a missing file is a one-line error naming the setting."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ValueError(f"{setting}={path}: no such file")
    return p.read_bytes()


def read_secret(path: str | os.PathLike, setting: str) -> bytes:
    """Read a key or token file; missing, or open to other users: a one-line error."""
    p = Path(path).expanduser()
    if p.is_file():
        check_private(p, setting)
    return read_file(path, setting)


def load_tokens(path: str | os.PathLike, setting: str = "runtime.auth_tokens") -> dict[str, str]:
    """Read a tokens file into ``{sha256(token): client-name}``.

    One ``<client-name> <token>`` per line; blank lines and ``#`` comments are
    skipped. Names and tokens must be unique; tokens must be at least 16
    characters.
    """
    out: dict[str, str] = {}
    names: set[str] = set()
    for num, line in enumerate(read_secret(path, setting).decode().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) != 2 or len(fields[1]) < 16:
            raise ValueError(
                f"{setting}={path} line {num}: expected '<client-name> <token>' with a token"
                " of at least 16 characters"
            )
        name, token = fields
        digest = _digest(token)
        if name in names or digest in out:
            raise ValueError(f"{setting}={path} line {num}: duplicate client name or token")
        names.add(name)
        out[digest] = name
    if not out:
        raise ValueError(f"{setting}={path}: no tokens in the file")
    return out


class TokenFile:
    """The server's tokens file, read again when it changes (no restart, no signal).

    :meth:`current` is called for every new connection and costs one ``stat``:
    when the file's inode, size, times or mode differ from the last read it is
    loaded again, so an edit (a line removed: that client is revoked) holds from
    the next connection on. A changed file that cannot be used (gone, malformed,
    empty, too open) is reported in one warning and the tokens read before stay
    in force, as a server keeps its old configuration when a reload fails.

    Parameters
    ----------
    path : path-like
        ``<client-name> <token>`` lines (see :func:`load_tokens`).
    setting : str
        The setting that names it, for messages.
    """

    def __init__(self, path: str | os.PathLike, setting: str = "runtime.auth_tokens") -> None:
        self.path = Path(path).expanduser()
        self.setting = setting
        self._stamp = self._stat()  # before reading: a write during the read shows next time
        self.tokens = load_tokens(path, setting)

    def _stat(self) -> tuple | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode

    def current(self) -> dict[str, str]:
        """``{sha256(token): client-name}`` as the file holds it now."""
        stamp = self._stat()
        if stamp == self._stamp:
            return self.tokens
        self._stamp = stamp
        try:
            tokens = load_tokens(self.path, self.setting)
        except (OSError, ValueError) as err:
            log.warning("%s; the %d client tokens read before stay in force", err, len(self.tokens))
            return self.tokens
        old = set(self.tokens.values())
        new = set(tokens.values())
        changed = {n for d, n in tokens.items() if d not in self.tokens} & old
        log.warning(
            "%s=%s reloaded: %d clients (added: %s; removed: %s; new token: %s)",
            self.setting,
            self.path,
            len(new),
            ", ".join(sorted(new - old)) or "none",
            ", ".join(sorted(old - new)) or "none",
            ", ".join(sorted(changed)) or "none",
        )
        self.tokens = tokens
        return tokens


def read_token(path: str | os.PathLike, setting: str = "--token-file") -> str:
    """A client's token: the file's first non-empty line."""
    for line in read_secret(path, setting).decode().splitlines():
        if line.strip():
            return line.strip()
    raise ValueError(f"{setting}={path}: the file is empty")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def bearer_digest(metadata: tuple) -> str | None:
    """sha256 of the bearer token in a call's metadata, or None."""
    for key, value in metadata or ():
        if key == AUTH_HEADER and isinstance(value, str) and value.startswith("Bearer "):
            return _digest(value[len("Bearer ") :].strip())
    return None


def identity_from_token(metadata: tuple, tokens: dict[str, str]) -> str | None:
    """The client name whose token the call metadata carries, or None."""
    digest = bearer_digest(metadata)
    if digest is not None:
        for known, name in tokens.items():  # constant-time per comparison
            if hmac.compare_digest(known, digest):
                return name
    return None


def identity_from_cert(auth_context: dict) -> str | None:
    """The common name of a verified client certificate (mutual TLS), or None."""
    names = auth_context.get("x509_common_name") or []
    return names[0].decode() if names else None


def node_id_for(identity: str) -> int:
    """A stable, positive 63-bit node id for an identity."""
    value = int.from_bytes(hashlib.sha256(identity.encode()).digest()[:8], "big") >> 1
    return value or 1


def server_credentials(
    cert: str, key: str, ca: str | None, require_client_cert: bool
) -> grpc.ServerCredentials:
    """TLS credentials of the server; with ``require_client_cert``, mutual TLS."""
    if require_client_cert and not ca:
        raise ValueError("runtime.require_client_cert=true needs runtime.tls.ca (the clients' CA)")
    pair = (read_secret(key, "runtime.tls.key"), read_file(cert, "runtime.tls.cert"))
    root = read_file(ca, "runtime.tls.ca") if ca else None
    return grpc.ssl_server_credentials(
        [pair], root_certificates=root, require_client_auth=require_client_cert
    )


def channel_credentials(
    ca: str | None, cert: str | None = None, key: str | None = None
) -> grpc.ChannelCredentials:
    """TLS credentials of a client: the CA that signed the server, and its own pair."""
    if bool(cert) != bool(key):
        raise ValueError("--tls-cert and --tls-key go together (mutual TLS)")
    return grpc.ssl_channel_credentials(
        root_certificates=read_file(ca, "--tls-ca") if ca else None,
        private_key=read_secret(key, "--tls-key") if key else None,
        certificate_chain=read_file(cert, "--tls-cert") if cert else None,
    )

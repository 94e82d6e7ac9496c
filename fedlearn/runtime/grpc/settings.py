"""The deployment settings of the gRPC runtime (``conf/runtime/grpc.yaml``)."""

from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

PROTOCOL_VERSION = 1
MIB = 1 << 20
log = logging.getLogger("fedlearn.grpc")

# Set once this process has created a gRPC server or channel. gRPC's threads do
# not survive fork(): a client forked after that point can hang before its
# first frame, so the launcher then starts clients as fresh processes instead.
GRPC_IN_USE = threading.Event()
LAUNCH_KEYS = ("name", "local_clients", "client_threads")


@dataclass
class TlsSettings:
    """PEM files: the server's certificate and key, and the CA of client certificates."""

    cert: str | None = None
    key: str | None = None
    ca: str | None = None


@dataclass
class DeploySettings:
    """Server side of a deployment; every field is a key of ``conf/runtime/grpc.yaml``.

    Attributes
    ----------
    address : str
        ``host:port`` to listen on (port 0 picks a free port).
    min_clients : int
        Clients that must be connected before the first round starts.
    wait_timeout : float
        Seconds to wait for ``min_clients``; then the server stops with an error.
    round_timeout : float or None
        Upper bound in seconds on waiting for the replies of one send (a client
        that has not answered by then counts as failed for that round).
    heartbeat_interval, heartbeat_timeout : float
        Heartbeats go both ways every ``heartbeat_interval`` seconds; a client
        silent for ``heartbeat_timeout`` seconds is dropped.
    chunk_mb : float
        Size of the chunks a message is cut into.
    max_message_mb : float or None
        Largest reply accepted; None: twice the largest message the server has sent
        (the model), plus 1 MiB.
    insecure : bool
        Plaintext (no TLS). Only when asked for; a warning is logged.
    tls : TlsSettings
        Server certificate and key (required unless insecure); ``ca`` for mutual TLS.
    require_client_cert : bool
        Mutual TLS: clients must present a certificate signed by ``tls.ca``.
    auth_tokens : str or None
        File of ``<client-name> <token>`` lines; clients without a known token are refused.
    finish_grace : float
        Seconds given to clients to receive the end-of-run notice.
    metrics_address : str or None
        ``host:port`` serving Prometheus metrics at ``/metrics`` (port 0: any);
        None: off. See :mod:`fedlearn.runtime.grpc.monitor`.
    """

    address: str = "127.0.0.1:9092"
    min_clients: int = 2
    wait_timeout: float = 300.0
    round_timeout: float | None = None
    heartbeat_interval: float = 5.0
    heartbeat_timeout: float = 30.0
    chunk_mb: float = 1.0
    max_message_mb: float | None = None
    insecure: bool = False
    tls: TlsSettings = field(default_factory=TlsSettings)
    require_client_cert: bool = False
    auth_tokens: str | None = None
    finish_grace: float = 5.0
    metrics_address: str | None = None

    @property
    def chunk_bytes(self) -> int:
        return int(self.chunk_mb * MIB)

    @property
    def max_message_bytes(self) -> int | None:
        return None if self.max_message_mb is None else int(self.max_message_mb * MIB)

    @classmethod
    def from_dict(
        cls, raw: dict[str, Any], prefix: str = "runtime", check: bool = True
    ) -> DeploySettings:
        """Build (and ``check``: validate) from a plain dict; unknown keys are refused."""
        raw = dict(raw)
        for key in LAUNCH_KEYS:  # the runtime group's selector and launcher keys
            raw.pop(key, None)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - names)
        if unknown:
            raise ValueError(f"{prefix}.{unknown[0]}: unknown setting; allowed: {sorted(names)}")
        tls = raw.pop("tls", None) or {}
        tls_names = {f.name for f in dataclasses.fields(TlsSettings)}
        if set(tls) - tls_names:
            bad = sorted(set(tls) - tls_names)[0]
            raise ValueError(f"{prefix}.tls.{bad}: unknown setting; allowed: {sorted(tls_names)}")
        out = cls(**raw, tls=TlsSettings(**tls))
        if check:
            out.validate(prefix)
        return out

    def validate(self, prefix: str = "runtime") -> None:
        """Raise a one-line ValueError for an unusable setting."""
        from fedlearn.runtime.grpc.preflight import split_address

        split_address(self.address, f"{prefix}.address", allow_zero=True)
        metrics = self.metrics_address
        if metrics is not None and not str(metrics).rpartition(":")[2].isdigit():
            raise ValueError(f"{prefix}.metrics_address={metrics!r}: expected host:port or null")
        if int(self.min_clients) < 1:
            raise ValueError(f"{prefix}.min_clients={self.min_clients}: must be at least 1")
        for name in ("wait_timeout", "heartbeat_interval", "heartbeat_timeout", "chunk_mb"):
            if float(getattr(self, name)) <= 0:
                raise ValueError(f"{prefix}.{name}={getattr(self, name)}: must be positive")
        if self.round_timeout is not None and float(self.round_timeout) <= 0:
            raise ValueError(f"{prefix}.round_timeout={self.round_timeout}: positive or null")
        if self.heartbeat_timeout <= self.heartbeat_interval:
            raise ValueError(
                f"{prefix}.heartbeat_timeout={self.heartbeat_timeout}: must exceed"
                f" heartbeat_interval={self.heartbeat_interval}"
            )
        if not 0 < self.chunk_mb <= 64:
            raise ValueError(f"{prefix}.chunk_mb={self.chunk_mb}: allowed 0 < chunk_mb <= 64")
        if self.max_message_mb is not None and not 0 < self.max_message_mb < 2048:
            raise ValueError(
                f"{prefix}.max_message_mb={self.max_message_mb}: allowed 0 < max_message_mb"
                " < 2048 (protobuf's limit)"
            )
        if not self.insecure and not (self.tls.cert and self.tls.key):
            raise ValueError(
                f"{prefix}.tls.cert and {prefix}.tls.key are required (TLS is on by default);"
                f" set {prefix}.insecure=true for plaintext on a trusted network"
            )
        if self.require_client_cert and (self.insecure or not self.tls.ca):
            raise ValueError(
                f"{prefix}.require_client_cert=true needs TLS and {prefix}.tls.ca (the clients' CA)"
            )
        if not self.insecure and not (self.auth_tokens or self.require_client_cert):
            raise ValueError(
                f"{prefix}: with TLS, clients must authenticate: set {prefix}.auth_tokens (a tokens"
                f" file) or {prefix}.require_client_cert=true"
            )

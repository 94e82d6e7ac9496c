"""Serve a run over gRPC, optionally with client processes on this machine.

:class:`GrpcRuntime` (``conf/runtime/grpc.yaml``) runs any ServerApp unchanged
against a :class:`GrpcGrid`. With local clients (``fedlearn-launch``,
``fedlearn-simulate runtime=grpc``: one per node unless ``runtime.local_clients``
says otherwise) it also starts that many ``fedlearn-client`` processes running
the ClientApp, one partition each, with a CA, certificates and tokens generated
into the run folder's ``certs/`` (or plaintext on loopback with
``runtime.insecure=true``). ``fedlearn-server`` sets ``local_clients=0`` and
only serves. Local clients are forked from this process where the platform
allows it (they share its loaded libraries and data), before any gRPC object
exists.
"""

from __future__ import annotations

import copy
import logging
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from flwr.app import Context, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

from fedlearn.runtime.base import FEDLEARN_CLIENT_APP, Runtime, server_context
from fedlearn.runtime.grpc.certs import make_pki
from fedlearn.runtime.grpc.client_state import RUN_KEY, run_key
from fedlearn.runtime.grpc.grid import GrpcGrid
from fedlearn.runtime.grpc.server import GrpcServer
from fedlearn.runtime.grpc.settings import GRPC_IN_USE, DeploySettings, log


def _local_settings(settings: DeploySettings, run_dir: Path, n: int) -> tuple[DeploySettings, Any]:
    """Loopback on a free port; self-signed TLS and tokens unless insecure or given."""
    host = settings.address.rsplit(":", 1)[0]
    if host not in ("127.0.0.1", "localhost"):
        raise ValueError(
            f"runtime.address={settings.address}: local clients need a loopback address"
            " (127.0.0.1:PORT)"
        )
    # A fixed free port: local clients are forked before the server starts (see _fork_client).
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        settings.address = f"127.0.0.1:{sock.getsockname()[1]}"
    if settings.tls.cert or settings.auth_tokens or settings.require_client_cert:
        raise ValueError(
            "runtime.tls / runtime.auth_tokens / runtime.require_client_cert: local clients use"
            " certificates and tokens generated into the run folder; for your own, run"
            " fedlearn-server and fedlearn-client"
        )
    pki = None
    if not settings.insecure:
        pki = make_pki(run_dir / "certs", [f"client-{k}" for k in range(n)])
        settings.tls.cert, settings.tls.key = str(pki.server_cert), str(pki.server_key)
        settings.tls.ca = str(pki.ca)
        settings.auth_tokens = str(pki.tokens)
    return settings, pki


def client_args(
    port: int, k: int, n: int, pki: Any, folder: Path, options: dict[str, Any]
) -> list[str]:
    """The ``fedlearn-client`` arguments of local client ``k`` of ``n``; its state file
    in ``folder``, so a resumed run's clients carry on with their state. ``options``:
    ``app`` (module:attr), ``threads``, ``reconnect_timeout``."""
    cmd = [
        "--server",
        f"127.0.0.1:{port}",
        "--app",
        str(options.get("app", FEDLEARN_CLIENT_APP)),
        "--node-name",
        f"client-{k}",
        "--partition-id",
        str(k),
        "--num-partitions",
        str(n),
        "--threads",
        str(int(options.get("threads") or 1)),
        "--reconnect-timeout",
        str(float(options.get("reconnect_timeout", 300))),
        "--state-file",
        str(folder / f"client-{k}.state"),
    ]
    if pki is None:
        cmd.append("--insecure")
    else:
        name = f"client-{k}"
        cmd += ["--tls-ca", str(pki.ca), "--token-file", str(pki.client_tokens[name])]
    return cmd


def _client_child(argv: list[str], log_file: str) -> None:
    """A forked local client: its own log file and logging, then ``fedlearn-client``."""
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    root = logging.getLogger()
    for handler in list(root.handlers):  # the server's Hydra handlers are not ours
        root.removeHandler(handler)
    from fedlearn.runtime.grpc.cli import client_main

    try:
        client_main(argv)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM to the launcher's process group
        log.info("client stopped by a signal")
        sys.exit(130)


def _can_fork() -> bool:
    """Fork local clients unless CUDA is around (a CUDA context cannot cross a fork) or
    this process has used gRPC already (its threads cannot either, e.g. a second run in
    one notebook or test session)."""
    import torch

    return (
        "fork" in mp.get_all_start_methods()
        and not torch.cuda.is_available()
        and not GRPC_IN_USE.is_set()
    )


def _start_client(argv: list[str], log_file: Path) -> Any:
    """Fork where possible: the child shares the loaded libraries, data and partitions
    (seconds per client on a small machine); otherwise a fresh ``fedlearn-client``."""
    if _can_fork():
        proc = mp.get_context("fork").Process(
            target=_client_child,
            args=(argv, str(log_file)),
            name=argv[argv.index("--node-name") + 1],
        )
        proc.start()
        return proc
    with open(log_file, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "fedlearn.runtime.grpc.cli", "client", *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _prepare_fork(run_config: dict[str, Any], n: int) -> None:
    """Load in this process what every forked client needs: the ClientApp's modules, the
    partitions, and torch's lazily imported training code (hundreds of modules)."""
    if not _can_fork():
        return
    from fedlearn.runtime.grpc.client import ClientSettings, GrpcClient

    client = GrpcClient(ClientSettings(address="127.0.0.1:1", insecure=True))
    client.context = Context(
        run_id=0,
        node_id=0,
        node_config={"partition-id": 0, "num-partitions": n},
        state=RecordDict(),
        run_config=run_config,
    )
    client._warm_up()


class GrpcRuntime(Runtime):
    """fedlearn's gRPC coordinator, with or without client processes on this machine.

    Settings are those of ``conf/runtime/grpc.yaml``: every key of
    :class:`~fedlearn.runtime.grpc.settings.DeploySettings`, plus ``local_clients``
    (client processes to start here; None: one per node, 0: serve remote clients
    only) and ``client_threads`` (torch threads per local client).

    Client state stays with the clients (``client_state = "clients"``): a client
    keeps its Context across reconnects, and with ``--state-file`` across a restart
    of its process; local clients get ``clients/client-k.state`` in the run folder,
    so a resumed run continues with every client's state.
    """

    client_state = "clients"

    def __init__(
        self, local_clients: int | None = None, client_threads: int = 1, **settings: Any
    ) -> None:
        if local_clients is not None and int(local_clients) < 0:
            raise ValueError(f"runtime.local_clients={local_clients}: must be >= 0 (null: all)")
        self.local_clients = None if local_clients is None else int(local_clients)
        self.client_threads = int(client_threads or 1)
        self.min_clients = settings.pop("min_clients", None)
        self.settings = DeploySettings.from_dict({"min_clients": 1, **settings}, check=False)
        # Remote clients may have devices this machine has not.
        self.clients_here = self.local_clients is None

    def run(
        self,
        server_app: ServerApp,
        client_app: ClientApp,
        nodes: list[dict[str, Any]],
        run_config: dict[str, Any],
        run_dir: Path,
        *,
        client_ref: str = FEDLEARN_CLIENT_APP,
    ) -> None:
        """Serve ``server_app`` over gRPC; with local clients, start and reap them too."""
        settings = copy.deepcopy(self.settings)
        settings.min_clients = int(self.min_clients or len(nodes))
        n_local = len(nodes) if self.local_clients is None else self.local_clients
        pki = None
        if n_local:
            settings, pki = _local_settings(settings, run_dir, n_local)
        settings.validate()
        procs: list[Any] = []
        logs = run_dir / "clients"
        level = log.level
        if n_local:
            log.setLevel(logging.WARNING)  # who joined is in clients/client-k.log
        # The run's key lets a restarted client (--state-file) know it rejoins the same run.
        run_config = {**run_config, RUN_KEY: run_key(run_dir)}
        grid = GrpcGrid(run_config, round_timeout=settings.round_timeout)
        server = GrpcServer(grid, settings)  # (no gRPC object exists before start())
        reason = "run failed"
        try:
            if n_local:
                # Clients first, forked before any gRPC object exists; they retry until we listen.
                if client_ref == FEDLEARN_CLIENT_APP:
                    _prepare_fork(run_config, n_local)
                logs.mkdir(exist_ok=True)
                port = int(settings.address.rsplit(":", 1)[1])
                options = {
                    "app": client_ref,
                    "threads": self.client_threads,
                    "reconnect_timeout": settings.wait_timeout,
                }
                for k in range(n_local):
                    argv = client_args(port, k, n_local, pki, logs, options)
                    procs.append(_start_client(argv, logs / f"client-{k}.log"))
            port = server.start()
            log.info("fedlearn server listening on %s:%d", settings.address.rsplit(":", 1)[0], port)
            wanted = int(settings.min_clients)
            got = grid.wait_for_nodes(wanted, settings.wait_timeout)
            if got < wanted:
                raise ValueError(
                    f"runtime.min_clients={wanted}: only {got} client(s) connected within"
                    f" runtime.wait_timeout={settings.wait_timeout} s"
                )
            server_app(grid, server_context(run_config, grid.run.run_id))
            reason = "run over"
        except KeyboardInterrupt:
            # Ctrl-C or SIGTERM on a server of remote clients is most often a restart: they
            # are not told the run is over, they retry (--reconnect-timeout) and rejoin the
            # server resumed with resume=<run folder>. Local clients are ours to end.
            reason = "" if not n_local else "run interrupted"
            raise
        finally:
            if reason:
                server.finish(reason)  # clients exit instead of retrying a server that is gone
            server.stop()
            _reap(procs)
            log.setLevel(level)


def _reap(procs: list[Any], timeout: float = 10.0) -> None:
    """Wait for local clients to exit; kill those that do not (never leave orphans)."""
    deadline = time.monotonic() + timeout
    for proc in procs:
        left = max(0.1, deadline - time.monotonic())
        if isinstance(proc, subprocess.Popen):
            try:
                proc.wait(left)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        else:
            proc.join(left)
            if proc.exitcode is None:
                proc.kill()
                proc.join()

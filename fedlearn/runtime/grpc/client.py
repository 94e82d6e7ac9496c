"""The client process: connect, run a Flower ClientApp on each message, reply.

A client keeps one Flower :class:`~flwr.app.Context` for the whole run (node
id, node_config, ``state`` RecordDict, the run_config the server sends at
registration), across reconnects. When the stream breaks it reconnects with
exponential backoff; the server gives it the same node id (derived from its
identity), so it rejoins later rounds. It exits when the server says the run
is over, when the server refuses it (authentication, protocol version), or
after ``reconnect_timeout`` seconds without a connection.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import random
import socket
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp

from fedlearn.runtime.grpc import client_state, frames, preflight, security, warmup
from fedlearn.runtime.grpc import fedlearn_pb2 as pb
from fedlearn.runtime.grpc.serde import (
    Assembler,
    FrameError,
    config_from_proto,
    config_to_proto,
    message_from_bytes,
    message_parts,
)
from fedlearn.runtime.grpc.settings import GRPC_IN_USE, MIB, PROTOCOL_VERSION, log
from fedlearn.targets import NotAllowed

FATAL = {
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.UNIMPLEMENTED,
}


class Refused(RuntimeError):
    """The server refused this client for good (no point in reconnecting)."""


class Misconfigured(ValueError):
    """A client setting that cannot reach this server (one line naming the setting)."""


@dataclass
class ClientSettings:
    """How a client reaches the server and who it is.

    ``node_name`` names the node when the server has no authentication (with
    tokens or certificates the server names it); by default a name unique to
    this process, kept across reconnects.
    """

    address: str
    node_config: dict[str, Any] = field(default_factory=dict)
    app: str = "fedlearn.app.client_app:app"
    insecure: bool = False
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    token_file: str | None = None
    node_name: str | None = None
    reconnect_timeout: float = 300.0
    max_backoff: float = 5.0
    max_message_mb: float = 1024.0
    state_file: str | None = None  # keep Context.state here across client restarts


def load_app(spec: str) -> ClientApp:
    """Import a ClientApp named ``module:attr`` (``--app``)."""
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise ValueError(f"--app={spec!r}: expected 'package.module:attribute'")
    try:
        app = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"--app={spec!r}: cannot import ({err})") from None
    if not isinstance(app, ClientApp):
        raise ValueError(f"--app={spec!r} is a {type(app).__name__}, not a flwr ClientApp")
    return app


class GrpcClient:
    """One node: its connection, its Context, its ClientApp."""

    def __init__(self, settings: ClientSettings, app: ClientApp | None = None) -> None:
        self.s = settings
        self.app = app or load_app(settings.app)
        self.context: Context | None = None
        self.name = settings.node_name or f"{socket.gethostname()}-{uuid.uuid4().hex[:12]}"
        self._check(settings)
        self.token = security.read_token(settings.token_file) if settings.token_file else None
        if not settings.insecure:
            self.creds = security.channel_credentials(
                settings.tls_ca, settings.tls_cert, settings.tls_key
            )
        self.handled = 0  # messages answered, for tests and logs
        self.warm = False
        self._app_lock = threading.Lock()
        self._saved = b""  # the state file's bytes as this client last wrote them
        self._fatal: BaseException | None = None  # what ended the worker: this client stops

    @staticmethod
    def _check(settings: ClientSettings) -> None:
        """One-line ValueErrors, before any connection, for settings that cannot work:
        an address without a port or whose host does not exist, TLS files that are not
        PEM, a key that is not its certificate's."""
        host, port = preflight.split_address(settings.address, "--server")
        preflight.resolve(host, port, "--server", settings.address)  # (no DNS answer: retried)
        if settings.insecure:
            return
        if settings.tls_ca:
            preflight.check_ca(settings.tls_ca, "--tls-ca")
        if settings.tls_cert and settings.tls_key:
            preflight.check_pair(settings.tls_cert, settings.tls_key, "--tls-cert", "--tls-key")

    def _channel(self) -> grpc.aio.Channel:
        GRPC_IN_USE.set()
        options = [
            ("grpc.max_receive_message_length", 64 * MIB + MIB),
            ("grpc.max_send_message_length", 64 * MIB + MIB),
            ("grpc.keepalive_time_ms", 20_000),
            ("grpc.keepalive_timeout_ms", 10_000),
        ]
        if self.s.insecure:
            return grpc.aio.insecure_channel(self.s.address, options=options)
        return grpc.aio.secure_channel(self.s.address, self.creds, options=options)

    async def run(self) -> int:
        """Serve until the run is over (0) or the server is gone or refuses us (1)."""
        backoff = 0.2
        last_ok = time.monotonic()
        while True:
            try:
                connected = await self._session()
                if connected is None:
                    return 0
                if connected:
                    last_ok, backoff = time.monotonic(), 0.2
            except Refused as err:
                log.error("server %s refused this client: %s", self.s.address, err)
                return 1
            except (NotAllowed, Misconfigured) as err:  # code it does not run; a bad setting
                log.error("%s", err)
                return 2
            if time.monotonic() - last_ok > self.s.reconnect_timeout:
                log.error(
                    "server %s unreachable for %.0f s; giving up",
                    self.s.address,
                    self.s.reconnect_timeout,
                )
                return 1
            await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
            backoff = min(backoff * 2, self.s.max_backoff)

    async def _session(self) -> bool | None:
        """One connection: None when the run finished, else whether it got welcomed."""
        welcomed = False
        metadata = (("authorization", f"Bearer {self.token}"),) if self.token else None
        async with self._channel() as channel:
            call = frames.connect(channel)(metadata=metadata)
            outbox: asyncio.Queue = asyncio.Queue()
            tasks: list[asyncio.Task] = []
            try:
                hello = pb.Hello(
                    protocol_version=PROTOCOL_VERSION,
                    node_name=self.name,
                    node_config=config_to_proto(self.s.node_config),
                )
                await call.write(pb.ClientFrame(hello=hello))
                first = await call.read()
                if first is grpc.aio.EOF or first.WhichOneof("kind") != "welcome":
                    raise FrameError("the server did not answer Hello with Welcome")
                welcome = first.welcome
                welcomed = True
                self._join(welcome)
                inbox: asyncio.Queue = asyncio.Queue()
                tasks = [
                    asyncio.create_task(self._writer(call, outbox)),
                    asyncio.create_task(self._heartbeats(outbox, welcome.heartbeat_interval)),
                    asyncio.create_task(self._worker(inbox, outbox, welcome.max_chunk_bytes)),
                ]
                tasks[-1].add_done_callback(lambda task: self._worker_done(task, call))
                assembler = Assembler(int(self.s.max_message_mb * MIB))
                # The server writes at least a heartbeat every interval: silence means a
                # server (or network) that is gone without closing the connection.
                silence = max(10.0, 4 * welcome.heartbeat_interval)
                while True:
                    try:
                        frame = await asyncio.wait_for(call.read(), silence)
                    except asyncio.TimeoutError:
                        log.warning("server silent for %.0f s; reconnecting", silence)
                        return welcomed
                    if frame is grpc.aio.EOF:
                        log.warning("server closed the stream; reconnecting")
                        return welcomed
                    kind = frame.WhichOneof("kind")
                    if kind == "chunk":
                        data = assembler.add(frame.chunk)
                        if data is not None:
                            inbox.put_nowait(data)
                    elif kind == "finished":
                        log.info("run over: %s", frame.finished.reason)
                        return None
                    elif kind == "notice":
                        log.warning("server: %s", frame.notice.text)
            except grpc.aio.AioRpcError as err:
                if err.code() in FATAL:
                    raise Refused(f"{err.code().name}: {err.details()}") from None
                if self.context is None and err.code() == grpc.StatusCode.UNAVAILABLE:
                    await self._diagnose()
                # Before the first connection the server may simply not be up yet.
                level = logging.WARNING if self.context is not None else logging.INFO
                log.log(
                    level,
                    "no connection to %s (%s: %s); retrying",
                    self.s.address,
                    err.code().name,
                    err.details(),
                )
                return welcomed
            except FrameError as err:
                log.warning("bad frame from server (%s); reconnecting", err)
                return welcomed
            except asyncio.CancelledError:
                if self._fatal is not None:  # the worker failed for good: so does the client
                    raise self._fatal from None
                raise
            finally:
                for task in tasks:
                    task.cancel()
                call.cancel()

    async def _diagnose(self) -> None:
        """Before the first connection: raise :class:`Misconfigured` when the failure is
        one that retrying cannot mend (TLS against plaintext, the wrong certificate)."""
        s = self.s
        why = await asyncio.to_thread(
            preflight.diagnose, s.address, s.insecure, s.tls_ca, s.tls_cert, s.tls_key
        )
        if why is not None:
            raise Misconfigured(why)

    def _worker_done(self, task: asyncio.Task, call: Any) -> None:
        """A worker that ends on its own failed for good (e.g. a target not allowed):
        keep why and end the connection, whose reader then raises it."""
        if not task.cancelled() and task.exception() is not None:
            self._fatal = task.exception()
            call.cancel()

    def _join(self, welcome: pb.Welcome) -> None:
        run_config = config_from_proto(welcome.run_config)
        if self.context is None:
            self.context = Context(
                run_id=welcome.run_id,
                node_id=welcome.node_id,
                node_config=dict(self.s.node_config),
                state=self._saved_state(run_config, welcome.node_id) or RecordDict(),
                run_config=run_config,
            )
        else:  # a reconnect: same state, the server's current run
            self.context.run_id, self.context.node_id = welcome.run_id, welcome.node_id
            self.context.run_config = run_config
        log.info("joined as node %d (%s)", welcome.node_id, self.name)

    def _state_key(self, run_config: dict[str, Any], node_id: int) -> tuple[str, str] | None:
        key = run_config.get(client_state.RUN_KEY)
        if not self.s.state_file or not key:
            return None
        return str(key), str(node_id)  # the server derives node ids from identities

    def _saved_state(self, run_config: dict[str, Any], node_id: int) -> RecordDict | None:
        if self.s.state_file and not run_config.get(client_state.RUN_KEY):
            log.warning("the server names no run: --state-file %s is not used", self.s.state_file)
        key = self._state_key(run_config, node_id)
        if key is None:
            return None
        state = client_state.load(Path(self.s.state_file), *key)
        if state is not None:
            log.info("restored client state (%d records) from %s", len(state), self.s.state_file)
        return state

    def _save_state(self) -> None:
        assert self.context is not None
        key = self._state_key(self.context.run_config, self.context.node_id)
        if key is not None:
            self._saved = client_state.save(
                Path(self.s.state_file), *key, self.context.state, self._saved
            )

    async def _writer(self, call: Any, outbox: asyncio.Queue) -> None:
        while True:
            frame = await outbox.get()
            try:
                await call.write(frame)
            finally:
                outbox.task_done()

    async def _heartbeats(self, outbox: asyncio.Queue, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            outbox.put_nowait(pb.ClientFrame(heartbeat=pb.Heartbeat()))

    def _warm_up(self) -> None:
        """Prepare fedlearn's ClientApp, once, before saying Ready (:mod:`.warmup`)."""
        if not self.warm and warmup.is_fedlearn_app(self.app):
            self.warm = True
            warmup.warm_up(self.app, self.context)

    async def _worker(self, inbox: asyncio.Queue, outbox: asyncio.Queue, chunk: int) -> None:
        await asyncio.to_thread(self._warm_up)
        outbox.put_nowait(pb.ClientFrame(ready=pb.Ready()))
        seq = 0
        while True:
            data = await inbox.get()
            try:
                reply = await asyncio.to_thread(self._handle, data, chunk, seq + 1)
                if reply:
                    seq += 1
                    for frame in reply:
                        outbox.put_nowait(frame)
            finally:
                inbox.task_done()

    def _handle(self, data: bytes, chunk: int, seq: int) -> list[bytes]:
        """Run the ClientApp on one message (in a worker thread); the reply's frames."""
        try:
            msg = message_from_bytes(data)
        except FrameError as err:
            log.warning("dropped a message from the server: %s", err)
            return []
        # One app call at a time: a call abandoned by a broken stream may still be
        # running when the next connection's first message arrives (same Context).
        with self._app_lock:
            try:
                reply = self.app(msg, self.context)
                parts = message_parts(reply)
                self._save_state()
            except NotAllowed:
                raise
            except Exception as err:  # the strategy sees a failed node, the run goes on
                from fedlearn.runtime.inprocess import CLIENT_EXCEPTION  # (imports torch)

                log.error(
                    "ClientApp failed on %s: %s",
                    msg.metadata.message_type,
                    traceback.format_exc(limit=3),
                )
                error = Error(CLIENT_EXCEPTION, f"{type(err).__name__}: {err}")
                parts = message_parts(Message(error, reply_to=msg))
            self.handled += 1
        return list(frames.chunk_frame_bytes(seq, parts, chunk))


def run_client(settings: ClientSettings, app: ClientApp | None = None) -> int:
    """Run one client to the end of the run; return the process exit code."""
    return asyncio.run(GrpcClient(settings, app).run())


def run_clients(settings: list[ClientSettings], app: ClientApp | None = None) -> list[int]:
    """Many nodes in one process (load tests): one event loop, one connection each."""

    async def all_of_them() -> list[int]:
        return list(await asyncio.gather(*(GrpcClient(s, app).run() for s in settings)))

    return asyncio.run(all_of_them())

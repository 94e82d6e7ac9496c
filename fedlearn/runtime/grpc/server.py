"""fedlearn's gRPC coordinator: an asyncio gRPC server feeding a :class:`GrpcGrid`.

One ``Connect`` stream per client. The handler authenticates the call, reads
Hello, registers the node with the grid and then writes whatever the grid
queues for it (messages as chunks, heartbeats, the end-of-run notice); a
reader task reassembles the client's replies and delivers them. Every refusal
ends only the offending stream, with a status code and a one-line reason.
The event loop runs in its own thread, so the ServerApp runs unchanged in the
caller's thread.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator

import grpc
from google.protobuf.message import DecodeError

from fedlearn.runtime.grpc import fedlearn_pb2 as pb
from fedlearn.runtime.grpc import fedlearn_pb2_grpc as pb_grpc
from fedlearn.runtime.grpc import monitor, preflight, security
from fedlearn.runtime.grpc.frames import add_servicer, chunk_frame_bytes, frame_size
from fedlearn.runtime.grpc.grid import GrpcGrid, Session
from fedlearn.runtime.grpc.serde import (
    Assembler,
    FrameError,
    TooLarge,
    config_from_proto,
    config_to_proto,
    message_from_bytes,
)
from fedlearn.runtime.grpc.settings import GRPC_IN_USE, PROTOCOL_VERSION, DeploySettings, log

HELLO_TIMEOUT = 30.0
TOKENS_CHECK = 1.0  # seconds between looks at the tokens file for revoked open streams
INLINE_BYTES = 1 << 20  # replies larger than this are parsed off the event loop


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, text: str) -> None:
        super().__init__(text)
        self.code, self.text = code, text


class FleetServicer(pb_grpc.FleetServicer):
    """The ``Connect`` handler."""

    def __init__(self, grid: GrpcGrid, settings: DeploySettings) -> None:
        self.grid = grid
        self.s = settings
        self.tokens = security.TokenFile(settings.auth_tokens) if settings.auth_tokens else None
        self.sessions: dict[Session, str | None] = {}  # open streams -> their token's digest

    def _identity(self, context: grpc.aio.ServicerContext, hello: pb.Hello) -> str:
        name = None
        if self.tokens is not None:
            name = security.identity_from_token(
                context.invocation_metadata(), self.tokens.current()
            )
            if name is None:
                raise _Abort(grpc.StatusCode.UNAUTHENTICATED, "missing or unknown client token")
        if self.s.require_client_cert:
            cn = security.identity_from_cert(context.auth_context())
            if cn is None:
                raise _Abort(grpc.StatusCode.UNAUTHENTICATED, "no verified client certificate")
            name = name or cn
        if name is None:  # open (insecure, no tokens) server: the client names itself
            name = hello.node_name or context.peer()
        return name

    async def _hello(self, requests: AsyncIterator[pb.ClientFrame]) -> pb.Hello:
        try:
            first = await asyncio.wait_for(requests.__anext__(), HELLO_TIMEOUT)
        except (StopAsyncIteration, asyncio.TimeoutError):
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "expected a Hello frame first") from None
        except DecodeError as err:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed frame: {err}") from None
        kind = first.WhichOneof("kind")
        if kind != "hello":
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"expected Hello first, got {kind}")
        if first.hello.protocol_version != PROTOCOL_VERSION:
            raise _Abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"protocol version {first.hello.protocol_version} is not supported; the server"
                f" speaks version {PROTOCOL_VERSION}",
            )
        return first.hello

    async def Connect(  # noqa: N802 (gRPC's method name)
        self, request_iterator: AsyncIterator[pb.ClientFrame], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ServerFrame]:
        """One client's stream, from Hello to the end of the run."""
        loop = asyncio.get_running_loop()
        session = None
        reason = "stream closed"
        try:
            if self.tokens is not None or self.s.require_client_cert:
                self._identity(context, pb.Hello())  # refuse before reading anything
            hello = await self._hello(request_iterator)
            identity = self._identity(context, hello)
            try:
                node_config = config_from_proto(hello.node_config)
            except FrameError as err:
                raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad node_config: {err}") from None
            session = Session(
                security.node_id_for(identity),
                identity,
                node_config,
                asyncio.Queue(),
                loop,
                peer=context.peer(),
            )
            taken = self.grid.claim(session, stale_after=self._stale_after())
            if taken is not None:
                session = None  # (nothing of it to unregister)
                raise _Abort(grpc.StatusCode.ALREADY_EXISTS, taken)
            self.sessions[session] = security.bearer_digest(context.invocation_metadata())
            yield pb.ServerFrame(welcome=self._welcome(session))
            log.info("node %d (%s) connected from %s", session.node_id, identity, context.peer())
            reader = asyncio.create_task(self._read(session, request_iterator))
            try:
                async for frame in self._frames(session):
                    self.grid.bytes_sent += frame_size(frame)
                    yield frame
            finally:
                reader.cancel()
        except _Abort as err:
            reason = err.text
            self.grid.monitor.refused(err.code)
            log.warning("refused %s: %s", context.peer(), err.text)
            await context.abort(err.code, err.text)
        except asyncio.CancelledError:
            reason = "connection lost"
            raise
        finally:
            if session is not None:
                self.sessions.pop(session, None)
                self.grid.unregister(session, reason)

    async def watch_tokens(self) -> None:
        """End the open streams whose token left the tokens file (a line removed or given
        a new token)."""
        while True:
            await asyncio.sleep(TOKENS_CHECK)
            valid = self.tokens.current()
            for session in [s for s, d in self.sessions.items() if d not in valid]:
                del self.sessions[session]
                log.warning("node %d (%s): token revoked", session.node_id, session.identity)
                session.outq.put_nowait(
                    ("abort", grpc.StatusCode.UNAUTHENTICATED, "client token revoked")
                )

    def _stale_after(self) -> float:
        """Seconds of silence after which a node's stream no longer holds its place: the
        heartbeat timeout, after which the server drops such a stream anyway (a client
        busy training may miss a few heartbeats; it must not lose its place for that)."""
        return self.s.heartbeat_timeout

    def _welcome(self, session: Session) -> pb.Welcome:
        return pb.Welcome(
            protocol_version=PROTOCOL_VERSION,
            node_id=session.node_id,
            run_id=self.grid.run.run_id,
            run_config=config_to_proto(self.grid.run_config),
            max_chunk_bytes=self.s.chunk_bytes,
            max_message_bytes=self.s.max_message_bytes or 0,  # 0: derived from the model
            heartbeat_interval=self.s.heartbeat_interval,
        )

    async def _frames(self, session: Session) -> AsyncIterator[pb.ServerFrame | bytes]:
        """What the grid queued for this node, plus heartbeats; ends with the stream."""
        seq = 0
        while True:
            if time.monotonic() - session.last_seen > self.s.heartbeat_timeout:
                log.warning(
                    "node %d: no heartbeat for %.0f s", session.node_id, self.s.heartbeat_timeout
                )
                raise _Abort(grpc.StatusCode.DEADLINE_EXCEEDED, "heartbeat timeout")
            try:
                item = await asyncio.wait_for(session.outq.get(), self.s.heartbeat_interval)
            except asyncio.TimeoutError:
                yield pb.ServerFrame(heartbeat=pb.Heartbeat())
                continue
            kind = item[0]
            if kind == "msg":
                seq += 1
                for frame in chunk_frame_bytes(seq, item[1], self.s.chunk_bytes):
                    yield frame
            elif kind == "notice":
                yield pb.ServerFrame(notice=pb.Notice(text=item[1]))
            elif kind == "finish":
                yield pb.ServerFrame(finished=pb.Finished(reason=item[1]))
                return
            elif kind == "close":
                return
            elif kind == "abort":
                raise _Abort(item[1], item[2])

    async def _read(self, session: Session, requests: AsyncIterator[pb.ClientFrame]) -> None:
        """Reassemble and deliver the client's replies; refuse bad frames.

        Bytes of a reply are held only while a message awaits the node's reply, up to
        the grid's message limit: at most one such reply per stream, all streams
        together at most (messages awaiting a reply) x limit. What a node sends when
        nothing awaits it (a message that timed out) is checked and skipped.
        """
        assembler = Assembler(self.grid.message_limit)
        ready = False
        try:
            async for frame in requests:
                session.last_seen = time.monotonic()
                self.grid.bytes_received += frame.ByteSize()
                awaited = session.outstanding > 0
                if assembler.held and not awaited:  # its message timed out: free the bytes
                    freed = assembler.drop()
                    self.grid.held_bytes -= freed
                    log.warning("node %d: dropped %d bytes of a late reply", session.node_id, freed)
                kind = frame.WhichOneof("kind")
                if kind == "heartbeat":
                    continue
                if kind == "ready" and not ready:
                    ready = True
                    self.grid.register(session)
                    continue
                if kind != "chunk":
                    raise FrameError(f"unexpected {kind} frame after Hello")
                before = assembler.held
                data = assembler.add(frame.chunk, keep=awaited)
                self.grid.held_bytes += assembler.held - before
                if data is not None:
                    await self._deliver(session, data)
                elif assembler.skipped:
                    assembler.skipped = False
                    self.grid.note_refused()
                    text = "a reply to no message awaiting one (timed out?) was dropped"
                    session.outq.put_nowait(("notice", text))
            session.outq.put_nowait(("close", "client closed its stream"))
        except (FrameError, DecodeError) as err:
            text = str(err) if isinstance(err, FrameError) else f"malformed frame: {err}"
            log.warning("node %d (%s): %s", session.node_id, session.identity, text)
            code = grpc.StatusCode.INVALID_ARGUMENT
            if isinstance(err, TooLarge):
                code = grpc.StatusCode.RESOURCE_EXHAUSTED
            session.outq.put_nowait(("abort", code, text))
        except (asyncio.CancelledError, grpc.aio.AioRpcError):
            return
        finally:
            self.grid.held_bytes -= assembler.drop()

    async def _deliver(self, session: Session, data: bytes) -> None:
        small = len(data) <= INLINE_BYTES
        reply = (
            message_from_bytes(data) if small else await asyncio.to_thread(message_from_bytes, data)
        )
        refused = self.grid.deliver(session, reply)
        if refused is not None:
            log.warning("node %d (%s): %s", session.node_id, session.identity, refused)
            session.outq.put_nowait(("notice", refused))


class GrpcServer:
    """The gRPC server in a background event loop.

    Parameters
    ----------
    grid : GrpcGrid
        The grid the clients join.
    settings : DeploySettings
        Address, TLS, authentication, limits.
    """

    def __init__(self, grid: GrpcGrid, settings: DeploySettings) -> None:
        self.grid = grid
        self.settings = settings
        grid.max_message_bytes = settings.max_message_bytes  # None: derived from the model
        self.port: int | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, daemon=True, name="fedlearn-grpc"
        )
        self._server: grpc.aio.Server | None = None
        self._watch: asyncio.Task | None = None

    def start(self) -> int:
        """Start serving; return the bound port.

        Raises
        ------
        ValueError
            In one line naming the setting, before anything starts, for an address
            that cannot be served (port out of range or taken, unknown host) or TLS
            files that cannot work (not PEM, a key that is not the certificate's).
        """
        s = self.settings
        preflight.check_bindable(s.address)
        if not s.insecure:
            preflight.check_pair(s.tls.cert, s.tls.key, "runtime.tls.cert", "runtime.tls.key")
            if s.tls.ca:
                preflight.check_ca(s.tls.ca, "runtime.tls.ca")
        self.grid.monitor = monitor.serve(self.grid, self.settings.metrics_address)
        GRPC_IN_USE.set()
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        self.port = future.result(timeout=30)
        return self.port

    async def _start(self) -> int:
        s = self.settings
        frame_limit = s.chunk_bytes + (1 << 20)
        options = [
            ("grpc.max_receive_message_length", frame_limit),
            ("grpc.max_send_message_length", frame_limit),
            ("grpc.keepalive_time_ms", 20_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
            ("grpc.keepalive_permit_without_calls", 1),
            # A second server on a running one's port would share its clients: refuse it.
            ("grpc.so_reuseport", 0),
        ]
        self._server = grpc.aio.server(options=options)
        servicer = FleetServicer(self.grid, s)
        add_servicer(servicer, self._server)
        if servicer.tokens is not None:
            self._watch = asyncio.get_running_loop().create_task(servicer.watch_tokens())
        if s.insecure:
            log.warning(
                "runtime.insecure=true: plaintext gRPC on %s; anyone on the network can"
                " read and alter the model",
                s.address,
            )
        creds = None
        if not s.insecure:
            creds = security.server_credentials(
                s.tls.cert, s.tls.key, s.tls.ca, s.require_client_cert
            )
        try:
            if creds is None:
                port = self._server.add_insecure_port(s.address)
            else:
                port = self._server.add_secure_port(s.address, creds)
        except RuntimeError:  # gRPC's "Failed to bind": taken since the check above
            port = 0
        if port == 0:
            raise ValueError(f"runtime.address={s.address}: cannot listen there (port in use?)")
        await self._server.start()
        return port

    def finish(self, reason: str = "run finished") -> None:
        """Tell the clients the run is over and give them ``finish_grace`` seconds."""
        self.grid.finish(reason)
        self.grid.monitor.finished()
        deadline = time.monotonic() + self.settings.finish_grace
        while self.grid.get_node_ids() and time.monotonic() < deadline:
            time.sleep(0.02)  # shutdown only: wait for the streams to close

    def stop(self, grace: float = 1.0) -> None:
        """Stop the server, its event loop and its metrics endpoint."""
        self.grid.monitor.close()
        if not self._thread.is_alive():  # never started
            return
        if self._watch is not None:
            self._loop.call_soon_threadsafe(self._watch.cancel)
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.stop(grace), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

"""Bad input, NaN updates, slow clients and a 100 MB model on the gRPC runtime."""

from __future__ import annotations

import threading
import time
from typing import Any

import grpc
import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from fedlearn.runtime import set_server_identity
from fedlearn.runtime.grpc import fedlearn_pb2 as pb
from fedlearn.runtime.grpc import security
from fedlearn.runtime.grpc.frames import chunk_frame_bytes
from fedlearn.runtime.grpc.serde import message_parts
from fedlearn.runtime.grpc.settings import PROTOCOL_VERSION
from tests.test_grpc_helpers import (
    ThreadClient,
    raw_connect,
    run_fedavg,
    start_server,
    wait_for,
)

pytestmark = pytest.mark.timeout(90)


def _hello(version: int = PROTOCOL_VERSION) -> bytes:
    hello = pb.Hello(protocol_version=version, node_name="x")
    return pb.ClientFrame(hello=hello).SerializeToString()


def _chunk(seq: int, data: bytes, total: int | None = None) -> bytes:
    chunk = pb.Chunk(seq=seq, total_bytes=len(data) if total is None else total, data=data)
    return pb.ClientFrame(chunk=chunk).SerializeToString()


def _stray_reply() -> bytes:
    """A well-formed Flower reply to a message the server never sent."""
    set_server_identity(1)
    sent = Message(RecordDict(), 5, "train", group_id="1")
    sent.metadata.__dict__["_message_id"] = "never-sent"
    reply = Message(RecordDict({"metrics": MetricRecord({"num-examples": 1})}), reply_to=sent)
    (frame,) = chunk_frame_bytes(1, message_parts(reply), 1 << 20)
    return frame


def _attack(port: int, frames: list[bytes], hold: float = 0.0) -> tuple[list[str], Any]:
    """Send raw frames; return the kinds of frames received and the error ending the stream."""

    def requests():
        yield from frames
        time.sleep(hold)  # keep the stream open to see how the server answers

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        connect = raw_connect(channel)
        kinds: list[str] = []
        try:
            for frame in connect(requests(), timeout=10):
                kinds.append(frame.WhichOneof("kind"))
        except grpc.RpcError as err:
            return kinds, err
    return kinds, None


def test_bad_frames_and_bad_updates_are_refused_while_serving_others():
    grid, server, port = start_server(chunk_mb=0.25, max_message_mb=2)
    try:
        good = [ThreadClient(port, f"good-{k}", {"partition-id": k}) for k in range(2)]
        nan = ThreadClient(port, "nan", {"partition-id": 5, "nan": True})
        odd = ThreadClient(port, "odd", {"partition-id": 6, "wrong-shape": True})
        grid.wait_for_nodes(4, 20)
        cases = [  # (frames, expected code, words in the reason)
            ([b"\xff\x01garbage"], grpc.StatusCode.INVALID_ARGUMENT, "malformed frame"),
            ([_hello(), b"\xff\x01garbage"], grpc.StatusCode.INVALID_ARGUMENT, "malformed"),
            ([_chunk(1, b"abc")], grpc.StatusCode.INVALID_ARGUMENT, "expected Hello first"),
            ([_hello(99)], grpc.StatusCode.FAILED_PRECONDITION, "protocol version 99"),
            ([_hello(), _hello()], grpc.StatusCode.INVALID_ARGUMENT, "unexpected hello frame"),
            ([_hello(), _chunk(1, b"x" * (2 << 20))], grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
            (
                [_hello(), _chunk(1, b"x", total=3 << 20)],
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "exceeds max_message_bytes",
            ),
        ]
        for frames, code, words in cases:
            _, err = _attack(port, frames, hold=2.0)
            assert err.code() == code, (frames[:1], err)
            assert words in (err.details() or "")
        # A reply to a message never sent, well-formed or not: skipped unread (nothing held),
        # a notice; the stream stays up until we leave.
        for stray in (_stray_reply(), _chunk(1, b"\xff\xffnot-flower")):
            kinds, err = _attack(port, [_hello(), stray], hold=1.0)
            assert kinds[0] == "welcome" and "notice" in kinds and err is None
        assert grid.refused == 2
        grid.wait_for_nodes(4, 5)
        assert len(grid.get_node_ids()) == 4  # only the real clients remain
        final = run_fedavg(grid, 4, rounds=2, screened=True)
        # The NaN and the misshapen replies fail every round; the good ones
        # (10 x +1, 11 x +2) are averaged.
        np.testing.assert_allclose(final, np.full(4, 2 * 32 / 21), rtol=1e-6)
        server.finish()
        assert [c.join() for c in (*good, nan, odd)] == [0, 0, 0, 0]
    finally:
        server.stop()


def test_a_crashing_clientapp_is_a_failed_node_and_keeps_serving():
    grid, server, port = start_server()
    try:
        ok = ThreadClient(port, "ok", {"partition-id": 0})
        bad = ThreadClient(port, "bad", {"partition-id": 1, "raise": True})
        final = run_fedavg(grid, 2, rounds=2)
        np.testing.assert_allclose(final, np.full(4, 2.0))  # only the good client's +1, twice
        assert bad.client.handled == 4  # 2 failed trains, 2 evaluations: still serving
        server.finish()
        assert [ok.join(), bad.join()] == [0, 0]
    finally:
        server.stop()


def test_client_reconnects_to_a_restarted_server_keeping_its_node_and_state():
    grid, server, port = start_server()
    client = ThreadClient(port, "keeper", {"partition-id": 0}, reconnect_timeout=30.0)
    try:
        run_fedavg(grid, 1)
        first_ids = grid.get_node_ids()
    finally:
        server.stop()  # the server goes away without saying the run is over
    grid, server, _ = start_server(port=port)  # ... and comes back on the same address
    try:
        from flwr.serverapp.strategy import FedAvg

        assert grid.wait_for_nodes(1, 30) == 1 and grid.get_node_ids() == first_ids
        result = FedAvg(min_available_nodes=1, min_train_nodes=1, min_evaluate_nodes=1).start(
            grid=grid, initial_arrays=ArrayRecord([np.zeros(2, np.float32)]), num_rounds=1
        )
        assert result.train_metrics_clientapp[1]["calls"] == 2  # the Context state survived
        server.finish()
        assert client.join() == 0
    finally:
        server.stop()


def test_round_timeout_drops_a_silent_client():
    grid, server, port = start_server(round_timeout=1.0, finish_grace=0.5)
    try:
        fast = ThreadClient(port, "fast", {"partition-id": 0})
        ThreadClient(port, "slow", {"partition-id": 1, "train-sleep": 8.0})
        t0 = time.monotonic()
        final = run_fedavg(grid, 2)
        assert time.monotonic() - t0 < 6.0  # did not wait for the slow client (8 s)
        np.testing.assert_allclose(final, np.ones(4))  # only the fast client's +1
        server.finish()
        assert fast.join() == 0  # (slow ends on its own once its sleep is over)
    finally:
        server.stop()


@pytest.mark.slow
def test_100mb_model_round_trip():
    grid, server, port = start_server()
    try:
        client = ThreadClient(port, "big", {"partition-id": 0})
        size = 25 * (1 << 20)  # float32: 100 MiB
        t0 = time.monotonic()
        final = run_fedavg(grid, 1, size=size)
        seconds = time.monotonic() - t0
        assert final.shape == (size,) and final[0] == 1.0 and final[-1] == 1.0
        assert grid.bytes_sent > 2 * size * 4  # train + evaluate messages, in 1 MiB chunks
        print(f"100 MiB model: train + evaluate round trip in {seconds:.1f} s")
        server.finish()
        assert client.join() == 0
    finally:
        server.stop()


def test_silent_client_is_dropped_at_heartbeat_timeout():
    """A client whose connection stays open but says nothing (a hung host) is dropped."""
    grid, server, port = start_server(
        heartbeat_interval=0.5, heartbeat_timeout=1.5, round_timeout=30.0
    )
    try:
        ready = pb.ClientFrame(ready=pb.Ready()).SerializeToString()
        holder = threading.Thread(
            target=lambda: out.append(_attack(port, [_hello(), ready], hold=6.0))
        )
        out: list = []
        holder.start()
        assert grid.wait_for_nodes(1, 10) == 1
        t0 = time.monotonic()
        set_server_identity(1)
        msg = Message(RecordDict(), grid.get_node_ids()[0], "train", group_id="1")
        (reply,) = grid.send_and_receive([msg], timeout=30)
        assert reply.has_error() and "heartbeat timeout" in reply.error.reason
        assert time.monotonic() - t0 < 5  # not the 30 s round timeout
        holder.join(10)
        kinds, err = out[0]
        assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED and "chunk" in kinds
    finally:
        server.stop()


def _rss() -> int:
    """This process's resident memory in bytes (the server runs in it)."""
    for line in open("/proc/self/status"):  # noqa: SIM115 - read once
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class _Peer:
    """A raw stream as node ``name``: Hello and Ready, then each frame ``send`` is given,
    and heartbeats every 0.1 s while ``beat`` is set; ``chunks`` counts the chunk frames
    the server sends it, ``error`` is how the stream ended."""

    def __init__(self, port: int, name: str) -> None:
        import queue

        self.outbox: queue.Queue = queue.Queue()
        self.beat = threading.Event()
        self.chunks = 0
        self.error: Any = "open"
        hello = pb.ClientFrame(hello=pb.Hello(protocol_version=PROTOCOL_VERSION, node_name=name))
        self.outbox.put(hello.SerializeToString())
        self.outbox.put(pb.ClientFrame(ready=pb.Ready()).SerializeToString())
        self.thread = threading.Thread(target=self._run, args=(port,), daemon=True)
        self.thread.start()

    def send(self, frame: bytes) -> None:
        self.outbox.put(frame)

    def _frames(self):  # noqa: ANN202
        import queue

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                frame = self.outbox.get(timeout=0.1)
            except queue.Empty:
                if self.beat.is_set():
                    yield pb.ClientFrame(heartbeat=pb.Heartbeat()).SerializeToString()
                continue
            if frame is None:
                return
            yield frame

    def _run(self, port: int) -> None:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            connect = raw_connect(channel)
            try:
                for frame in connect(self._frames(), timeout=60):
                    self.chunks += frame.WhichOneof("kind") == "chunk"
                self.error = None
            except grpc.RpcError as err:
                self.error = err

    def close(self) -> None:
        self.outbox.put(None)
        self.thread.join(10)


def _train_message(node: int) -> Message:
    set_server_identity(1)
    arrays = ArrayRecord([np.zeros(4, np.float32)])
    content = RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": 1})})
    return Message(content, node, "train", group_id="1")


def test_a_chunk_declaring_1gib_holds_only_its_own_bytes():
    """Memory is taken as bytes arrive: a 1 GiB header with 100 bytes costs 100 bytes."""
    grid, server, port = start_server(max_message_mb=2047)  # the header is within the limit
    peer = _Peer(port, "liar")
    try:
        assert grid.wait_for_nodes(1, 20) == 1
        grid.push_messages([_train_message(grid.get_node_ids()[0])])  # it may reply now
        wait_for(lambda: peer.chunks > 0, 20, "the message to reach the node")
        before = _rss()
        peer.send(_chunk(1, b"x" * 100, total=1 << 30))
        wait_for(lambda: grid.held_bytes == 100, 20, "the chunk to be held")
        grown = _rss() - before
        print(f"server RSS grew by {grown / 2**20:.1f} MiB for a 1 GiB header")
        assert grown < 64 << 20
    finally:
        peer.close()
        server.stop()


def test_the_default_message_limit_follows_the_model_sent():
    grid, server, port = start_server()
    peer = _Peer(port, "liar")
    try:
        assert grid.wait_for_nodes(1, 20) == 1
        grid.push_messages([_train_message(grid.get_node_ids()[0])])
        wait_for(lambda: peer.chunks > 0, 20, "the message to reach the node")
        limit = grid.message_limit()
        assert grid.largest_sent < 1000 and limit == 2 * grid.largest_sent + (1 << 20)
        peer.send(_chunk(1, b"x" * 100, total=limit + 1))
        wait_for(lambda: peer.error != "open", 20, "the stream to be refused")
        assert peer.error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"exceeds max_message_bytes={limit}" in peer.error.details()
    finally:
        peer.close()
        server.stop()


def test_a_node_that_stalls_mid_reply_is_freed_at_the_timeout_and_left_out():
    """100 bytes of a reply, then only heartbeats: its buffer is freed once the message
    times out, and it is not sampled again for a while."""
    grid, server, port = start_server(heartbeat_interval=0.5, heartbeat_timeout=30.0)
    peer = _Peer(port, "staller")
    peer.beat.set()
    good = ThreadClient(port, "good", {"partition-id": 0})
    try:
        assert grid.wait_for_nodes(2, 20) == 2
        staller = security.node_id_for("staller")
        nodes = grid.get_node_ids()
        for node in nodes:  # the staller's 100 bytes go out as soon as it has its message
            if node == staller:
                peer.send(_chunk(1, b"x" * 100, total=10_000))
        replies = grid.send_and_receive([_train_message(n) for n in nodes], timeout=4.0)
        errors = {r.metadata.src_node_id: r.has_error() for r in replies}
        assert errors == {staller: True, security.node_id_for("good"): False}
        assert grid.get_node_ids() == [security.node_id_for("good")]  # benched
        wait_for(lambda: grid.held_bytes == 0, 10, "the partial reply to be freed")
        server.finish()
        assert good.join() == 0
    finally:
        peer.close()
        server.stop()

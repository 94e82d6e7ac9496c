"""Unit tests of the gRPC runtime's pieces: serde, chunking, settings, credentials."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.proto.message_pb2 import Message as ProtoMessage

from fedlearn.runtime import set_server_identity
from fedlearn.runtime.grpc import fedlearn_pb2 as pb
from fedlearn.runtime.grpc import security
from fedlearn.runtime.grpc.frames import ChunkFrame, chunk_frame_bytes, decoder
from fedlearn.runtime.grpc.serde import (
    Assembler,
    FrameError,
    config_from_proto,
    config_to_proto,
    message_from_bytes,
    message_parts,
)
from fedlearn.runtime.grpc.settings import DeploySettings


def _message(values: np.ndarray) -> Message:
    set_server_identity(1)
    content = RecordDict({"arrays": ArrayRecord([values]), "config": ConfigRecord({"lr": 0.1})})
    msg = Message(content, 7, "train", group_id="1")
    msg.metadata.__dict__["_message_id"] = "m1"
    return msg


def test_message_round_trips_through_chunks_and_shares_content():
    msg = _message(np.arange(10_000, dtype=np.float32))
    cache: dict[tuple[str, int], list[bytes]] = {}
    parts = message_parts(msg, cache)
    # Another message whose content shares the model (and adds a record): the model's
    # encoding is the same objects, serialized once.
    other = Message(RecordDict({**dict(msg.content), "note": ConfigRecord({"n": 1})}), 7, "train")
    assert all(any(p is q for q in message_parts(other, cache)) for p in parts[2:-1])
    asm = Assembler(max_message_bytes=1 << 20)
    decode = decoder(pb.ServerFrame)
    frames = [decode(f) for f in chunk_frame_bytes(1, parts, chunk_bytes=4096)]
    assert len(frames) > 5 and all(isinstance(f, ChunkFrame) for f in frames)
    assert all(len(f.chunk.data) <= 4096 for f in frames)
    out = [asm.add(f.chunk) for f in frames]
    assert all(o is None for o in out[:-1])
    back = message_from_bytes(out[-1])
    assert back.metadata.message_id == "m1" and back.metadata.dst_node_id == 7
    np.testing.assert_array_equal(
        back.content["arrays"].to_numpy_ndarrays()[0], np.arange(10_000, dtype=np.float32)
    )
    assert back.content["config"]["lr"] == 0.1


def _mixed_arrays() -> ArrayRecord:
    """float64 2-d, empty float32 and 0-d int64 arrays."""
    arrays = [np.arange(6, dtype=np.float64).reshape(2, 3), np.zeros(0, np.float32)]
    return ArrayRecord([*arrays, np.array(3, np.int64)])


def test_encoding_is_flowers_own_byte_for_byte():
    set_server_identity(1)
    content = RecordDict(
        {
            "arrays": _mixed_arrays(),
            "empty": ArrayRecord(),
            "metrics": MetricRecord({"loss": 0.25, "n": 3}),
            "config": ConfigRecord({"lr": 0.1, "name": "x", "flag": True}),
        }
    )
    msg = Message(content, 3, "evaluate", group_id="2")
    msg.metadata.__dict__["_message_id"] = "abc"
    expected = message_to_proto(msg).SerializeToString(deterministic=True)
    assert b"".join(message_parts(msg)) == expected
    back = message_from_bytes(expected)
    assert back.content["config"]["name"] == "x" and list(back.content["empty"].keys()) == []


def test_chunk_frames_are_the_generated_encoding():
    parts = [b"ab", b"", b"cdefgh", b"ij"]
    ours = list(chunk_frame_bytes(7, parts, chunk_bytes=4))
    data = b"".join(parts)
    for k, frame in enumerate(ours):
        chunk = pb.Chunk(seq=7, total_bytes=10, offset=4 * k, data=data[4 * k : 4 * k + 4])
        assert frame == pb.ClientFrame(chunk=chunk).SerializeToString()
        assert frame == pb.ServerFrame(chunk=chunk).SerializeToString()
    empty = pb.ClientFrame(chunk=pb.Chunk()).SerializeToString()
    assert list(chunk_frame_bytes(0, [], 4)) == [empty]
    # Anything but a plain chunk goes through protobuf: other frames, other field orders.
    decode = decoder(pb.ClientFrame)
    hello = pb.ClientFrame(hello=pb.Hello(protocol_version=1)).SerializeToString()
    assert decode(hello).WhichOneof("kind") == "hello"
    odd = pb.ClientFrame(chunk=pb.Chunk(data=b"xy")).SerializeToString() + (
        pb.ClientFrame(chunk=pb.Chunk(seq=3)).SerializeToString()
    )  # a merged encoding
    frame = decode(odd)
    assert (frame.chunk.seq, bytes(frame.chunk.data)) == (3, b"xy")


def test_fast_decoder_reads_what_flower_reads():
    from flwr.app import Error

    from fedlearn.runtime.grpc.decode import decode_message

    set_server_identity(1)
    content = RecordDict(
        {
            "arrays": _mixed_arrays(),
            "": ArrayRecord(),
            "metrics": MetricRecord({"loss": 0.25, "n": 3, "hist": [1.0, 2.0]}),
            "config": ConfigRecord({"lr": 0.1, "name": "x", "flag": True, "raw": b"\x00\x01"}),
        }
    )
    sent = Message(content, 3, "train", group_id="2")
    sent.metadata.__dict__["_message_id"] = "abc"
    for msg in (sent, Message(Error(7, "boom"), reply_to=sent), Message(RecordDict(), 4, "query")):
        data = b"".join(message_parts(msg))
        fast = decode_message(bytearray(data))
        assert fast is not None
        expected = message_to_proto(message_from_proto(ProtoMessage.FromString(data)))
        got = message_to_proto(fast)
        assert got.SerializeToString(deterministic=True) == expected.SerializeToString(
            deterministic=True
        )
    assert decode_message(b"") is None  # no metadata: the caller refuses it


def test_assembler_refuses_bad_frames():
    asm = Assembler(max_message_bytes=100)
    with pytest.raises(FrameError, match="exceeds max_message_bytes=100"):
        asm.add(pb.Chunk(seq=1, total_bytes=101, offset=0, data=b"x"))
    asm.add(pb.Chunk(seq=2, total_bytes=10, offset=0, data=b"12345"))
    with pytest.raises(FrameError, match="does not continue"):
        asm.add(pb.Chunk(seq=2, total_bytes=10, offset=7, data=b"x"))
    asm = Assembler(max_message_bytes=100)
    asm.add(pb.Chunk(seq=1, total_bytes=10, offset=0, data=b"12345"))
    with pytest.raises(FrameError, match="interleaves"):
        asm.add(pb.Chunk(seq=3, total_bytes=10, offset=5, data=b"12345"))
    with pytest.raises(FrameError, match="not a Flower message"):
        message_from_bytes(b"\xff\xff\xff garbage")


def test_assembler_holds_what_arrived_and_skips_what_nobody_awaits():
    asm = Assembler(max_message_bytes=lambda: 1 << 30)
    assert asm.add(pb.Chunk(seq=1, total_bytes=1 << 30, offset=0, data=b"abc")) is None
    assert asm.held == 3  # not the 1 GiB declared
    assert asm.drop() == 3 and asm.held == 0  # its message timed out: freed
    assert asm.add(pb.Chunk(seq=1, total_bytes=1 << 30, offset=3, data=b"d")) is None
    assert asm.held == 0  # the rest of it is skipped, still checked in order
    asm = Assembler(max_message_bytes=100)
    assert asm.add(pb.Chunk(seq=1, total_bytes=4, offset=0, data=b"ab"), keep=False) is None
    assert asm.add(pb.Chunk(seq=1, total_bytes=4, offset=2, data=b"cd"), keep=False) is None
    assert asm.skipped and asm.held == 0
    assert asm.add(pb.Chunk(seq=2, total_bytes=2, offset=0, data=b"ef")) == b"ef"


def test_a_node_that_let_a_message_time_out_is_left_out_for_a_while(monkeypatch):
    import asyncio
    import time

    from fedlearn.runtime.grpc.grid import GrpcGrid, Session

    loop = asyncio.new_event_loop()  # never run: the node never answers
    try:
        grid = GrpcGrid({"seed": 0})
        session = Session(5, "n5", {"partition-id": 0}, asyncio.Queue(), loop)
        grid.claim(session, stale_after=10.0)
        grid.register(session)
        for pause in (1.0, 2.0):  # as long as it was waited for, doubling
            msg = Message(RecordDict(), 5, "train", group_id="1")
            (reply,) = grid.send_and_receive([msg], timeout=1.0)
            now = time.monotonic()
            assert "no reply within 1.0 s" in reply.error.reason
            with monkeypatch.context() as clock:
                clock.setattr(time, "monotonic", lambda t=now + pause / 2: t)
                assert grid.get_node_ids() == []  # left out ...
                clock.setattr(time, "monotonic", lambda t=now + pause + 0.01: t)
                assert grid.get_node_ids() == [5]  # ... until its pause is over
        assert session.outstanding == 0
    finally:
        loop.close()


def test_nonfinite_arrays_and_config_values():
    from fedlearn.app.tracking import non_finite_key

    assert non_finite_key(_message(np.ones(4, dtype=np.float32)).content) is None
    bad = np.ones(4, dtype=np.float32)
    bad[2] = np.inf
    assert non_finite_key(_message(bad).content) == "arrays/0"
    garbled = _message(np.ones(4, dtype=np.float32))
    array = garbled.content["arrays"]["0"]
    garbled.content["arrays"]["0"] = Array(array.dtype, array.shape, array.stype, b"junk")
    assert non_finite_key(garbled.content) == "arrays/0"  # refused, not raised
    config = {"a": 1, "b": 0.5, "c": "x", "d": True}
    assert config_from_proto(config_to_proto(config)) == config
    with pytest.raises(ValueError, match="not a scalar"):
        config_to_proto({"l": [1]})


def test_settings_refuse_unsafe_or_unknown(tmp_path):
    with pytest.raises(ValueError, match="tls.cert and runtime.tls.key are required"):
        DeploySettings.from_dict({"address": "127.0.0.1:1"})
    with pytest.raises(ValueError, match="runtime.bogus: unknown setting"):
        DeploySettings.from_dict({"bogus": 1, "insecure": True})
    with pytest.raises(ValueError, match="clients must authenticate"):
        DeploySettings.from_dict({"tls": {"cert": "c", "key": "k"}})
    ok = DeploySettings.from_dict({"insecure": True, "chunk_mb": 0.5, "name": "grpc"})
    assert ok.chunk_bytes == 512 * 1024


def test_tokens_file_and_identities(tmp_path):
    path = tmp_path / "tokens.txt"
    path.write_text("# clients\nalice aaaaaaaaaaaaaaaaaaaa\nbob bbbbbbbbbbbbbbbbbbbbbbbb\n")
    path.chmod(0o600)  # a tokens file others may read is refused
    tokens = security.load_tokens(path)
    md = (("authorization", "Bearer bbbbbbbbbbbbbbbbbbbbbbbb"),)
    assert security.identity_from_token(md, tokens) == "bob"
    assert security.identity_from_token((("authorization", "Bearer nope"),), tokens) is None
    assert security.node_id_for("bob") == security.node_id_for("bob") != security.node_id_for("al")
    assert 0 < security.node_id_for("bob") < 2**63
    path.write_text("alice short\n")
    with pytest.raises(ValueError, match="line 1"):
        security.load_tokens(path)
    with pytest.raises(ValueError, match="no such file"):
        security.read_token(tmp_path / "missing")


def test_client_flags_become_node_config_or_one_line_errors(tmp_path):
    from fedlearn.runtime.grpc.cli import client_parser, client_settings

    def settings(*argv: str):
        return client_settings(client_parser().parse_args(["--server", "h:1", *argv]))

    s = settings(
        "--insecure",
        "--partition-id",
        "2",
        "--num-partitions",
        "4",
        "--data",
        "root=/data/me",
        "--node-config",
        "k=0.5",
        "--device",
        "cpu",
    )
    assert s.node_config == {
        "partition-id": 2,
        "num-partitions": 4,
        "dataset.root": "/data/me",
        "k": 0.5,
        "device": "cpu",
    }
    with pytest.raises(ValueError, match="--tls-ca is required"):
        settings()
    with pytest.raises(ValueError, match="--partition-id needs --num-partitions"):
        settings("--insecure", "--partition-id", "3")
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        settings("--insecure", "--data", "nokey")
    from fedlearn.runtime.grpc.cli import allowed_targets

    flags = tmp_path / "client.args"  # the owner's own config file: flags, one a line
    flags.write_text("--allow-target\nmy_pkg.data:load\n--data\n_target_=my_pkg.other.load\n")
    args = client_parser().parse_args(["--server", "h:1", "--insecure", f"@{flags}"])
    assert allowed_targets(args) == ["my_pkg.data:load", "my_pkg.other.load"]
    id_file = tmp_path / "node-id"
    first = settings("--insecure", "--id-file", str(id_file)).node_name
    assert first and settings("--insecure", "--id-file", str(id_file)).node_name == first


def test_grid_turns_wrong_type_replies_and_disconnects_into_error_replies():
    import asyncio

    from fedlearn.runtime.grpc.grid import GrpcGrid, Session

    loop = asyncio.new_event_loop()  # never run: queued frames just stay queued
    try:
        grid = GrpcGrid({"seed": 0})
        session = Session(5, "n5", {"partition-id": 0}, asyncio.Queue(), loop)
        assert grid.claim(session, stale_after=10.0) is None
        grid.register(session)
        assert grid.get_node_ids() == [5]
        sent = [Message(RecordDict(), 5, "train", group_id="1") for _ in range(2)]
        ids = grid.push_messages(sent)
        wrong = Message(RecordDict({"m": MetricRecord({"x": 1})}), reply_to=sent[0])
        wrong.metadata.__dict__["_message_type"] = "evaluate"
        assert "reply of type 'evaluate'" in grid.deliver(session, wrong)
        assert "unknown or expired" in grid.deliver(session, wrong)  # already answered
        grid.unregister(session, "connection lost")
        replies = grid.pull_messages(ids)
        assert [r.has_error() for r in replies] == [True, True]
        assert "connection lost" in replies[1].error.reason
        assert grid.get_node_ids() == [] and grid.refused == 2
    finally:
        loop.close()

"""Chunk frames on the wire without protobuf's copies.

A ``Chunk`` frame is almost all payload. Building it with the generated
classes copies the payload twice on the way out (into the message, then into
its encoding) and twice on the way in (parsing, then reading ``.data``). Here
a chunk frame is encoded straight from slices of the serialized message, and
decoded as a view into the received buffer. The encoding is exactly the
generated classes' (a unit test checks it); any frame that is not a plain
chunk, or that this reader does not recognise, goes through the generated
``FromString``, so the protocol is still the one in ``fedlearn.proto``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc

from fedlearn.runtime.grpc import fedlearn_pb2 as pb
from fedlearn.runtime.grpc.decode import Unusual, read_varint
from fedlearn.runtime.grpc.serde import varint

SERVICE = "fedlearn.grpc.v1.Fleet"
CONNECT = f"/{SERVICE}/Connect"
_CHUNK = pb.ClientFrame.DESCRIPTOR.fields_by_name["chunk"].number
assert _CHUNK == pb.ServerFrame.DESCRIPTOR.fields_by_name["chunk"].number
_CHUNK_TAG = _CHUNK << 3 | 2


class RawChunk:
    """A decoded chunk: the fields of ``pb.Chunk``, ``data`` a view of the frame."""

    __slots__ = ("seq", "total_bytes", "offset", "data")

    def __init__(self) -> None:
        self.seq = self.total_bytes = self.offset = 0
        self.data: memoryview = memoryview(b"")


class ChunkFrame:
    """A received frame holding a chunk; answers like a generated frame does."""

    __slots__ = ("chunk", "size")

    def __init__(self, chunk: RawChunk, size: int) -> None:
        self.chunk, self.size = chunk, size

    def WhichOneof(self, _: str) -> str:  # noqa: N802 (protobuf's name)
        return "chunk"

    def ByteSize(self) -> int:  # noqa: N802 (protobuf's name)
        return self.size


def _fast_chunk(data: bytes) -> ChunkFrame | None:
    """Decode ``data`` if it is exactly one chunk field; None means 'use protobuf'."""
    buf = memoryview(data)
    if len(buf) < 2 or buf[0] != _CHUNK_TAG:
        return None
    size, pos = read_varint(buf, 1)
    if pos + size != len(buf):
        return None
    chunk = RawChunk()
    while pos < len(buf):
        tag, pos = read_varint(buf, pos)
        field, wire = tag >> 3, tag & 7
        if wire == 0 and field in (1, 2, 3):
            value, pos = read_varint(buf, pos)
            setattr(chunk, ("seq", "total_bytes", "offset")[field - 1], value)
        elif wire == 2 and field == 4:
            length, pos = read_varint(buf, pos)
            if pos + length > len(buf):
                return None
            chunk.data, pos = buf[pos : pos + length], pos + length
        else:
            return None
    return ChunkFrame(chunk, len(buf))


def decoder(frame_cls: type) -> Callable[[bytes], Any]:
    """gRPC deserializer: chunks as views, everything else by ``frame_cls.FromString``."""

    def decode(data: bytes) -> Any:
        try:
            fast = _fast_chunk(data)
        except (Unusual, IndexError):
            fast = None
        return fast if fast is not None else frame_cls.FromString(data)

    return decode


def serialize(frame: Any) -> bytes:
    """gRPC serializer: encoded chunk frames as they are, generated frames encoded."""
    return frame if isinstance(frame, bytes) else frame.SerializeToString()


def frame_size(frame: Any) -> int:
    """Bytes of a frame on the wire (before gRPC's own 5-byte prefix)."""
    return len(frame) if isinstance(frame, bytes) else frame.ByteSize()


def _scalar(field: int, value: int) -> bytes:
    return varint(field << 3) + varint(value) if value else b""  # proto3 omits zeros


def chunk_frame_bytes(seq: int, parts: list[bytes], chunk_bytes: int) -> Iterator[bytes]:
    """Encoded ``{Client,Server}Frame(chunk=Chunk(...))`` frames for the concatenation of
    ``parts``, each payload at most ``chunk_bytes``; one copy of the payload."""
    total = sum(len(p) for p in parts)

    def frame(offset: int, pieces: list[memoryview], size: int) -> bytes:
        head = _scalar(1, seq) + _scalar(2, total) + _scalar(3, offset)
        if size:
            head += varint(4 << 3 | 2) + varint(size)
        return b"".join([varint(_CHUNK_TAG) + varint(len(head) + size) + head, *pieces])

    offset, pieces, filled = 0, [], 0
    for part in parts:
        view = memoryview(part)
        while len(view):
            take = view[: chunk_bytes - filled]
            pieces.append(take)
            filled += len(take)
            view = view[len(take) :]
            if filled == chunk_bytes:
                yield frame(offset, pieces, filled)
                offset, pieces, filled = offset + filled, [], 0
    if filled or total == 0:
        yield frame(offset, pieces, filled)


def add_servicer(servicer: Any, server: grpc.aio.Server) -> None:
    """Register ``servicer.Connect`` with the fast chunk (de)serializers."""
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.Connect,
        request_deserializer=decoder(pb.ClientFrame),
        response_serializer=serialize,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {"Connect": handler}),)
    )


def connect(channel: grpc.aio.Channel) -> Any:
    """The ``Connect`` stream-stream callable of a client channel, with the fast path."""
    return channel.stream_stream(
        CONNECT, request_serializer=serialize, response_deserializer=decoder(pb.ServerFrame)
    )

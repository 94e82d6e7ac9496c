"""The one adapter between Flower Messages and fedlearn's wire frames.

A Flower :class:`~flwr.app.Message` travels as flwr's own protobuf
serialization (``flwr.common.serde.message_to_proto``), cut into
:class:`Chunk` frames. The serialized message is built from two parts, the
metadata and the content, because protobuf parses concatenated encodings of
one message type as their merge: the server serializes a round's model content
once and reuses it for every client that receives the same RecordDict.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Message
from flwr.common.serde import (
    error_to_proto,
    message_from_proto,
    metadata_to_proto,
    recorddict_to_proto,
)
from flwr.proto.message_pb2 import Message as ProtoMessage  # pylint: disable=E0611

from fedlearn.runtime.grpc import fedlearn_pb2 as pb

Scalar = bool | int | float | str


class FrameError(ValueError):
    """A frame the receiver cannot accept (malformed, oversized, out of order)."""


def message_parts(message: Message, content_cache: dict[int, bytes] | None = None) -> list[bytes]:
    """Serialize ``message`` as [metadata bytes, content-or-error bytes].

    ``content_cache`` maps ``id(RecordDict)`` to its serialized bytes, so one
    model sent to many clients is serialized once (the caller keeps the
    RecordDicts alive while the cache lives).
    """
    head = ProtoMessage(metadata=metadata_to_proto(message.metadata)).SerializeToString()
    if message.has_error():
        return [head, ProtoMessage(error=error_to_proto(message.error)).SerializeToString()]
    if not message.has_content():
        return [head]
    key = id(message.content)
    body = content_cache.get(key) if content_cache is not None else None
    if body is None:
        body = ProtoMessage(content=recorddict_to_proto(message.content)).SerializeToString()
        if content_cache is not None:
            content_cache[key] = body
    return [head, body]


def message_from_bytes(data: bytes) -> Message:
    """Parse a Flower Message; raise :class:`FrameError` when it is not one."""
    try:
        proto = ProtoMessage.FromString(data)
        if not proto.HasField("metadata"):
            raise FrameError("message without metadata")
        return message_from_proto(proto)
    except FrameError:
        raise
    except Exception as err:  # protobuf DecodeError, bad records: all are bad input
        raise FrameError(f"not a Flower message ({type(err).__name__}: {err})") from None


def chunk_frames(seq: int, parts: list[bytes], chunk_bytes: int) -> Iterator[pb.Chunk]:
    """Cut the concatenation of ``parts`` into chunks of at most ``chunk_bytes``."""
    total = sum(len(p) for p in parts)
    offset = 0
    if total == 0:
        yield pb.Chunk(seq=seq, total_bytes=0, offset=0, data=b"")
        return
    for part in parts:
        view = memoryview(part)
        for start in range(0, len(part), chunk_bytes):
            piece = view[start : start + chunk_bytes]
            yield pb.Chunk(seq=seq, total_bytes=total, offset=offset, data=bytes(piece))
            offset += len(piece)


class Assembler:
    """Reassemble the chunks of one stream's messages, checking every frame.

    Parameters
    ----------
    max_message_bytes : int
        Largest whole message accepted; a larger declared size is refused
        before any of it is buffered.
    """

    def __init__(self, max_message_bytes: int) -> None:
        self.max_message_bytes = max_message_bytes
        self._seq: int | None = None
        self._buf: bytearray | None = None
        self._filled = 0
        self._last_seq = -1

    def add(self, chunk: pb.Chunk) -> bytes | None:
        """Add one chunk; return the whole message when it is complete."""
        if self._buf is None:
            if chunk.seq <= self._last_seq:
                raise FrameError(f"chunk seq {chunk.seq} repeats an earlier message")
            if chunk.total_bytes > self.max_message_bytes:
                raise FrameError(
                    f"message of {chunk.total_bytes} bytes exceeds max_message_bytes="
                    f"{self.max_message_bytes}"
                )
            self._seq, self._buf, self._filled = chunk.seq, bytearray(chunk.total_bytes), 0
        if chunk.seq != self._seq or chunk.total_bytes != len(self._buf):
            raise FrameError(f"chunk of message {chunk.seq} interleaves message {self._seq}")
        if chunk.offset != self._filled or self._filled + len(chunk.data) > len(self._buf):
            raise FrameError(
                f"chunk at offset {chunk.offset} (+{len(chunk.data)}) does not continue "
                f"message {self._seq} at {self._filled} of {len(self._buf)} bytes"
            )
        self._buf[self._filled : self._filled + len(chunk.data)] = chunk.data
        self._filled += len(chunk.data)
        if self._filled < len(self._buf):
            return None
        data, self._buf, self._last_seq = bytes(self._buf), None, chunk.seq
        return data


def config_to_proto(config: dict[str, Any]) -> dict[str, pb.Value]:
    """Flat scalars (Flower's run_config / node_config) to wire values."""
    out: dict[str, pb.Value] = {}
    for key, value in config.items():
        if isinstance(value, bool):
            out[key] = pb.Value(bool=value)
        elif isinstance(value, int):
            out[key] = pb.Value(int=value)
        elif isinstance(value, float):
            out[key] = pb.Value(double=value)
        elif isinstance(value, str):
            out[key] = pb.Value(string=value)
        else:
            raise ValueError(f"config key {key!r}: {type(value).__name__} is not a scalar")
    return out


def config_from_proto(values: Any) -> dict[str, Scalar]:
    """Wire values back to a flat dict of scalars."""
    out: dict[str, Scalar] = {}
    for key, value in values.items():
        kind = value.WhichOneof("kind")
        if kind is None:
            raise FrameError(f"config key {key!r} has no value")
        out[key] = getattr(value, kind)
    return out


def nonfinite_arrays(message: Message) -> list[str]:
    """Names (``record.array``) of floating-point arrays holding NaN or Inf."""
    if not message.has_content():
        return []
    bad = []
    for rname, record in message.content.items():
        if not isinstance(record, ArrayRecord):
            continue
        for aname, array in record.items():
            if "float" not in array.dtype and "complex" not in array.dtype:
                continue
            try:
                values = array.numpy()
            except Exception:  # a non-numpy stype: nothing we can check cheaply
                continue
            if not np.isfinite(values).all():
                bad.append(f"{rname}.{aname}")
    return bad

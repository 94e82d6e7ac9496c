"""The one adapter between Flower Messages and fedlearn's wire frames.

A Flower :class:`~flwr.app.Message` travels as flwr's own protobuf
serialization (``flwr.common.serde.message_to_proto``), cut into ``Chunk``
frames (:mod:`.frames`). The serialized message is built from two parts, the
metadata and the content, because protobuf parses concatenated encodings of
one message type as their merge: the server serializes a round's model content
once and reuses it for every client that receives the same RecordDict. The
content's encoding is assembled from parts so that array data is never copied
on the way out (:func:`content_parts`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flwr.app import Array, ArrayRecord, Message, RecordDict
from flwr.common.serde import (
    error_to_proto,
    message_from_proto,
    metadata_to_proto,
    recorddict_to_proto,
)
from flwr.proto.message_pb2 import Message as ProtoMessage  # pylint: disable=E0611
from flwr.proto.recorddict_pb2 import Array as ProtoArray  # pylint: disable=E0611

from fedlearn.runtime.grpc import fedlearn_pb2 as pb
from fedlearn.runtime.grpc.decode import decode_message

Scalar = bool | int | float | str


class FrameError(ValueError):
    """A frame the receiver cannot accept (malformed, oversized, out of order)."""


class TooLarge(FrameError):
    """A message larger than the limit (a size refusal, RESOURCE_EXHAUSTED)."""


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, parts: list[bytes]) -> list[bytes]:
    """A length-delimited protobuf field holding the concatenation of ``parts``."""
    size = sum(len(p) for p in parts)
    return [varint(number << 3 | 2) + varint(size), *parts]


def _array_parts(array: Array) -> list[bytes]:
    """flwr's Array encoding, its data left in place (no copy of the bytes)."""
    head = ProtoArray(dtype=array.dtype, shape=array.shape, stype=array.stype)
    parts = [head.SerializeToString()]
    return parts + _field(4, [array.data]) if array.data else parts


def content_parts(
    content: RecordDict, cache: dict[tuple[str, int], list[bytes]] | None = None
) -> list[bytes]:
    """``ProtoMessage(content=recorddict_to_proto(content))``'s bytes, as a list of parts.

    Byte for byte what flwr's serialization gives (a unit test checks it), built
    without copying array data: protobuf's nested-message constructors copy every
    array once per nesting level, which costs seconds for a 100 MB model. ``cache``
    maps ``(key, id(record))`` to that record's encoded item, so a record shared by
    many messages (a round's model) is encoded once; the caller keeps the records
    alive while the cache lives.
    """
    items: list[bytes] = []
    for key, record in content.items():
        item = cache.get((key, id(record))) if cache is not None else None
        if item is None:
            item = _item(key, record)
            if cache is not None:
                cache[(key, id(record))] = item
        items += item
    return _field(2, items)


def _item(key: str, record: Any) -> list[bytes]:
    """One ``RecordDict`` item: ``key`` and its record, encoded."""
    if isinstance(record, ArrayRecord):
        entries: list[bytes] = []
        for name, array in record.items():
            entries += _field(1, _field(1, [name.encode()]) + _field(2, _array_parts(array)))
        return _field(1, _field(1, [key.encode()]) + _field(2, entries))
    proto = recorddict_to_proto(RecordDict({key: record}))  # metrics, configs: small
    return _field(1, [proto.items[0].SerializeToString()])


def message_parts(
    message: Message, content_cache: dict[tuple[str, int], list[bytes]] | None = None
) -> list[bytes]:
    """Serialize ``message`` (flwr's ``message_to_proto`` encoding) as a list of byte parts.

    Metadata comes first, then the content or error. ``content_cache``: see
    :func:`content_parts` (one model sent to many clients is serialized once).
    """
    head = ProtoMessage(metadata=metadata_to_proto(message.metadata)).SerializeToString()
    if message.has_error():
        return [head, ProtoMessage(error=error_to_proto(message.error)).SerializeToString()]
    if not message.has_content():
        return [head]
    return [head, *content_parts(message.content, content_cache)]


def message_from_bytes(data: bytes | bytearray) -> Message:
    """Parse a Flower Message; raise :class:`FrameError` when it is not one.

    :func:`.decode.decode_message` copies array data once; anything it does not
    expect goes through flwr's ``message_from_proto`` (two more copies per array).
    """
    try:
        message = decode_message(data)
    except Exception:  # noqa: BLE001 - Unusual or malformed: protobuf decides below
        message = None
    if message is not None:
        return message
    try:
        proto = ProtoMessage.FromString(data)
        if not proto.HasField("metadata"):
            raise FrameError("message without metadata")
        return message_from_proto(proto)
    except FrameError:
        raise
    except Exception as err:  # protobuf DecodeError, bad records: all are bad input
        raise FrameError(f"not a Flower message ({type(err).__name__}: {err})") from None


class Assembler:
    """Reassemble the chunks of one stream's messages, checking every frame.

    Memory is taken as bytes arrive, never on a peer's word: a chunk that declares a
    1 GiB message holds only its own bytes. A message the receiver does not want
    (``keep=False``: a reply nobody waits for) is checked and skipped, holding nothing.

    Parameters
    ----------
    max_message_bytes : int or callable
        Largest whole message accepted (or a function giving it when a message
        begins); a larger declared size is refused before any of it is held.
    """

    def __init__(self, max_message_bytes: int | Callable[[], int]) -> None:
        self._limit = (
            max_message_bytes if callable(max_message_bytes) else lambda: max_message_bytes
        )
        self._seq: int | None = None
        self._total = 0
        self._buf: bytearray | None = None
        self._filled = 0
        self._last_seq = -1
        self.skipped = False  # the message that just ended was skipped (not held)

    @property
    def held(self) -> int:
        """Bytes held for the message being received."""
        return len(self._buf) if self._buf is not None else 0

    def drop(self) -> int:
        """Free what is held of the message being received (its rest is skipped); the
        number of bytes freed."""
        freed, self._buf = self.held, None
        return freed

    def add(self, chunk: Any, keep: bool = True) -> bytearray | None:
        """Add one chunk (``pb.Chunk`` or a decoded view); return the message when whole
        (None until then, and at the end of a skipped one: see :attr:`skipped`)."""
        if self._seq is None:
            if chunk.seq <= self._last_seq:
                raise FrameError(f"chunk seq {chunk.seq} repeats an earlier message")
            limit = self._limit()
            if chunk.total_bytes > limit:
                raise TooLarge(
                    f"message of {chunk.total_bytes} bytes exceeds max_message_bytes={limit}"
                )
            self._seq, self._total, self._filled = chunk.seq, chunk.total_bytes, 0
            self._buf = bytearray() if keep else None
        if chunk.seq != self._seq or chunk.total_bytes != self._total:
            raise FrameError(f"chunk of message {chunk.seq} interleaves message {self._seq}")
        data = chunk.data  # (each attribute access copies the bytes)
        if chunk.offset != self._filled or self._filled + len(data) > self._total:
            raise FrameError(
                f"chunk at offset {chunk.offset} (+{len(data)}) does not continue "
                f"message {self._seq} at {self._filled} of {self._total} bytes"
            )
        if self._buf is not None:
            self._buf += data
        self._filled += len(data)
        if self._filled < self._total:
            return None
        whole, self._buf, self._seq, self._last_seq = self._buf, None, None, chunk.seq
        self.skipped = whole is None
        return whole


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

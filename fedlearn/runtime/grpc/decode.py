"""Read a serialized Flower Message with one copy of its array data.

``message_from_proto(ProtoMessage.FromString(data))`` copies every array twice
(into protobuf's message, then out of it into :class:`~flwr.app.Array`). Here
the length-delimited structure of flwr's ``Message`` -> ``RecordDict`` ->
``ArrayRecord`` -> ``Array`` is walked by hand and each array's data is copied
once out of the received buffer; everything small (metadata, errors, metric
and config records, array headers) is still parsed by flwr's generated classes
and converted by ``flwr.common.serde``. Anything this reader does not expect
raises :class:`Unusual`, and the caller falls back to flwr's own path.
"""

from __future__ import annotations

from collections.abc import Iterator

from flwr.app import Array, ArrayRecord, Message, RecordDict
from flwr.app.message.message import make_message
from flwr.common.serde import (
    config_record_from_proto,
    error_from_proto,
    metadata_from_proto,
    metric_record_from_proto,
)
from flwr.proto.error_pb2 import Error as ProtoError  # pylint: disable=E0611
from flwr.proto.message_pb2 import Metadata as ProtoMetadata  # pylint: disable=E0611
from flwr.proto.recorddict_pb2 import Array as ProtoArray  # pylint: disable=E0611
from flwr.proto.recorddict_pb2 import ConfigRecord as ProtoConfigRecord  # pylint: disable=E0611
from flwr.proto.recorddict_pb2 import MetricRecord as ProtoMetricRecord  # pylint: disable=E0611


class Unusual(ValueError):
    """An encoding this reader leaves to protobuf (valid or not)."""


def read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    """A protobuf varint at ``pos``: (value, next position)."""
    value, shift = 0, 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise Unusual("varint too long")


def _fields(buf: memoryview, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, tag position, value start, value end) of length-delimited fields."""
    pos = start
    while pos < end:
        tag_at = pos
        tag, pos = read_varint(buf, pos)
        if tag & 7 != 2:
            raise Unusual(f"field {tag >> 3} is not length-delimited")
        size, pos = read_varint(buf, pos)
        if pos + size > end:
            raise Unusual("field runs past its message")
        yield tag >> 3, tag_at, pos, pos + size
        pos += size


def _array(buf: memoryview, start: int, end: int) -> Array:
    header, data = [], b""
    pos = start
    while pos < end:  # dtype, shape (packed varints), stype, data: all length-delimited
        field, tag_at, a, b = next(_fields(buf, pos, end))
        if field == 4:
            data = bytes(buf[a:b])  # the one copy of the array
        else:
            header.append(buf[tag_at:b])
        pos = b
    proto = ProtoArray.FromString(b"".join(header))
    return Array(dtype=proto.dtype, shape=tuple(proto.shape), stype=proto.stype, data=data)


def _array_record(buf: memoryview, start: int, end: int) -> ArrayRecord:
    arrays = {}
    for field, _, a, b in _fields(buf, start, end):
        if field != 1:
            raise Unusual(f"ArrayRecord field {field}")
        key, value = "", None
        for f, _, s, e in _fields(buf, a, b):
            if f == 1:
                key = bytes(buf[s:e]).decode()
            elif f == 2:
                value = _array(buf, s, e)
            else:
                raise Unusual(f"ArrayRecord.Item field {f}")
        arrays[key] = value if value is not None else _array(buf, 0, 0)
    return ArrayRecord(array_dict=arrays, keep_input=False)


def _record_dict(buf: memoryview, start: int, end: int) -> RecordDict:
    out = RecordDict()
    for field, _, a, b in _fields(buf, start, end):
        if field != 1:
            raise Unusual(f"RecordDict field {field}")
        key, record = "", None
        for f, _, s, e in _fields(buf, a, b):
            if f == 1:
                key = bytes(buf[s:e]).decode()
            elif f == 2:
                record = _array_record(buf, s, e)
            elif f == 3:
                record = metric_record_from_proto(ProtoMetricRecord.FromString(buf[s:e]))
            elif f == 4:
                record = config_record_from_proto(ProtoConfigRecord.FromString(buf[s:e]))
            else:
                raise Unusual(f"RecordDict.Item field {f}")
        if record is None or key in out:
            raise Unusual("record without a value, or a repeated key")
        out[key] = record
    return out


def decode_message(data: bytes | bytearray) -> Message | None:
    """The Message in ``data``, or None when it has no metadata."""
    buf = memoryview(data)
    seen: set[int] = set()
    metadata = content = error = None
    for field, _, a, b in _fields(buf, 0, len(buf)):
        if field in seen:  # protobuf would merge repeated message fields: leave it to it
            raise Unusual(f"Message field {field} repeated")
        seen.add(field)
        if field == 1:
            metadata = metadata_from_proto(ProtoMetadata.FromString(buf[a:b]))
        elif field == 2:
            content = _record_dict(buf, a, b)
        elif field == 3:
            error = error_from_proto(ProtoError.FromString(buf[a:b]))
        else:
            raise Unusual(f"Message field {field}")
    if metadata is None:
        return None
    return make_message(metadata=metadata, content=content, error=error)

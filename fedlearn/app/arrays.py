"""Fast, exact conversions between torch/numpy arrays and Flower's ArrayRecord.

Flower's ``Array`` holds an array as ``.npy`` bytes. Its ``numpy()`` runs
``np.load`` on every call, which parses the header with ``ast.literal_eval``,
and ``Array(ndarray)`` runs ``np.save``: about 25 us and 20 us an array. On a
small model that is most of what a round costs beyond training. These
functions write and read the same bytes directly: the header of a (dtype,
shape) is made once by ``np.save`` and reused, and the payload is read in
place. The bytes equal ``np.save``'s and the values ``Array.numpy()``'s (a
test checks both); anything unusual (Fortran order, object dtype, another
``stype``, a payload whose size does not match) takes Flower's own path.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from functools import lru_cache

import numpy as np
import torch
from flwr.app import Array, ArrayRecord

NUMPY = "numpy.ndarray"  # Flower's SType.NUMPY


@lru_cache(maxsize=4096)
def _header(descr: str, shape: tuple[int, ...]) -> bytes:
    """The ``.npy`` header that ``np.save`` writes for a C-ordered array (format 1.0,
    or 2.0 when the header does not fit, as ``np.save`` chooses)."""
    fields = {"descr": descr, "fortran_order": False, "shape": shape}
    buf = io.BytesIO()
    try:
        np.lib.format.write_array_header_1_0(buf, fields)
    except ValueError:
        buf = io.BytesIO()
        np.lib.format.write_array_header_2_0(buf, fields)
    return buf.getvalue()


def _plain(dtype: np.dtype) -> bool:
    # Structured and object dtypes take Flower's path.
    return dtype.fields is None and not dtype.hasobject


def to_array(values: np.ndarray | torch.Tensor) -> Array:
    """One Flower ``Array``, byte for byte what ``Array(values)`` makes."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    if (values.flags.f_contiguous and not values.flags.c_contiguous) or not _plain(values.dtype):
        return Array(values)
    shape = tuple(int(d) for d in values.shape)
    header = _header(np.lib.format.dtype_to_descr(values.dtype), shape)
    return Array(dtype=str(values.dtype), shape=shape, stype=NUMPY, data=header + values.tobytes())


def to_record(arrays: Mapping[str, np.ndarray | torch.Tensor]) -> ArrayRecord:
    """An ArrayRecord of a state dict or a dict of numpy arrays, keys in order."""
    return ArrayRecord({key: to_array(value) for key, value in arrays.items()})


@lru_cache(maxsize=4096)
def _layout(dtype: str, shape: tuple[int, ...]) -> tuple[np.dtype, bytes, int] | None:
    """(numpy dtype, ``np.save`` header, payload bytes) of an Array's dtype and shape;
    None for what takes Flower's path."""
    try:
        kind = np.dtype(dtype)
    except TypeError:
        return None
    if not _plain(kind):
        return None
    count = int(np.prod(shape, dtype=np.int64))
    return kind, _header(np.lib.format.dtype_to_descr(kind), shape), count * kind.itemsize


def view(array: Array) -> np.ndarray:
    """A read-only numpy view of an Array's payload: no copy, no header parse.

    Taken only when the bytes start with exactly the header ``np.save`` writes for
    the Array's dtype and shape and the payload has exactly their size, so the
    values are those of ``array.numpy()``; anything else goes through it.
    """
    layout = _layout(array.dtype, tuple(array.shape)) if array.stype == NUMPY else None
    if layout is not None:
        dtype, header, size = layout
        data = array.data
        if len(data) == len(header) + size and data.startswith(header):
            return np.frombuffer(data, dtype=dtype, offset=len(header)).reshape(array.shape)
    return array.numpy()


def to_numpy(record: ArrayRecord) -> dict[str, np.ndarray]:
    """Writable numpy copies of a record's arrays, keys in order."""
    return {key: np.array(view(array)) for key, array in record.items()}


def to_state_dict(record: ArrayRecord) -> dict[str, torch.Tensor]:
    """What ``record.to_torch_state_dict()`` gives, without its per-array ``np.load``."""
    return {key: torch.from_numpy(values) for key, values in to_numpy(record).items()}


def cast_like(record: ArrayRecord, reference: ArrayRecord) -> ArrayRecord:
    """``record`` with every array in its dtype in ``reference``; unchanged when they agree.

    Undoes an aggregation's upcast: Flower's FedAdam multiplies by a NumPy float64
    step size, which under NumPy 2's promotion rules turns a float32 model into
    float64 from round 2 on and doubles every message it sends.
    """
    changed = {
        key
        for key, array in record.items()
        if key in reference and array.dtype != reference[key].dtype
    }
    if not changed:
        return record
    return ArrayRecord(
        {
            key: to_array(view(array).astype(np.dtype(reference[key].dtype)))
            if key in changed
            else array
            for key, array in record.items()
        }
    )

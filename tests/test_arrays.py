"""Fast ArrayRecord conversions: the same bytes as np.save, the same values as np.load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord

from fedlearn.app import arrays

CASES = [
    np.arange(12, dtype=np.float32).reshape(3, 4),
    np.float64(2.5) * np.ones((2, 1, 3)),
    np.array(7, dtype=np.int64),  # 0-d, like BatchNorm's num_batches_tracked
    np.zeros((0, 5), dtype=np.float16),
    np.array([True, False]),
    np.arange(6, dtype=">i4"),  # big-endian
    np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2],  # not contiguous
    np.zeros((1,) * 40, dtype=np.uint8),  # long header: still format 1.0
]


@pytest.mark.parametrize("values", CASES, ids=lambda v: f"{v.dtype}{v.shape}")
def test_same_bytes_as_flower_and_same_values(values: np.ndarray) -> None:
    ours, theirs = arrays.to_array(values), Array(values)
    assert (ours.dtype, ours.shape, ours.stype, ours.data) == (
        theirs.dtype,
        theirs.shape,
        theirs.stype,
        theirs.data,
    )
    view = arrays.view(theirs)
    expected = theirs.numpy()
    assert view.dtype == expected.dtype and view.shape == expected.shape
    assert np.array_equal(view, expected)


def test_unusual_arrays_take_flowers_path() -> None:
    fortran = np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3))
    structured = np.zeros(3, dtype=[("a", "<f4"), ("b", "<i2")])
    for values in (fortran, structured):
        ours = arrays.to_array(values)
        assert ours.data == Array(values).data
        assert np.array_equal(arrays.view(ours), values)


def test_a_payload_that_does_not_match_its_header_is_read_by_flower() -> None:
    # Claims float32 (2,) but holds a float64 (1,): np.load's reading wins.
    lying = Array(dtype="float32", shape=(2,), stype="numpy.ndarray", data=Array(np.ones(1)).data)
    out = arrays.view(lying)
    assert out.dtype == np.float64 and out.tolist() == [1.0]


def test_state_dict_round_trip_matches_flower() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4))
    state = model.state_dict()
    record = arrays.to_record(state)
    assert list(record) == list(state)
    assert all(record[k].data == a.data for k, a in ArrayRecord(state).items())
    ours, theirs = arrays.to_state_dict(record), record.to_torch_state_dict()
    for key in state:
        assert ours[key].dtype == theirs[key].dtype and torch.equal(ours[key], theirs[key])
    ours[next(iter(ours))].add_(1.0)  # writable copies, not views of the record's bytes
    assert torch.equal(arrays.to_state_dict(record)[next(iter(ours))], theirs[next(iter(ours))])


def test_cast_like_restores_the_reference_dtypes() -> None:
    reference = arrays.to_record({"w": np.zeros(3, np.float32), "n": np.array(2, np.int64)})
    same = arrays.to_record({"w": np.ones(3, np.float32), "n": np.array(5, np.int64)})
    assert arrays.cast_like(same, reference) is same
    upcast = arrays.to_record({"w": np.full(3, 0.1, np.float64), "n": np.array(5, np.int64)})
    out = arrays.cast_like(upcast, reference)
    assert out["w"].dtype == "float32" and out["w"].data == Array(np.full(3, 0.1, np.float32)).data
    assert out["n"].data == upcast["n"].data

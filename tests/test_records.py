"""The run folder: atomic checkpoints, torn metrics lines, resume rewind."""

from __future__ import annotations

import os

import pytest

from fedlearn import records


def test_checkpoint_roundtrip(tmp_path) -> None:
    records.save_checkpoint(tmp_path, 3, {"arrays": [1, 2], "strategy": {"m": 1}})
    ckpt = records.load_checkpoint(tmp_path)
    assert ckpt["round"] == 3 and ckpt["arrays"] == [1, 2]


def test_crash_while_writing_keeps_previous_checkpoint(tmp_path, monkeypatch) -> None:
    records.save_checkpoint(tmp_path, 1, {"arrays": "one"})

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        records.save_checkpoint(tmp_path, 2, {"arrays": "two"})
    monkeypatch.undo()
    assert records.load_checkpoint(tmp_path)["arrays"] == "one"
    leftovers = [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_no_checkpoint_is_none(tmp_path) -> None:
    assert records.load_checkpoint(tmp_path) is None


def test_torn_metrics_line_is_skipped_and_truncate_rewinds(tmp_path) -> None:
    for r in range(4):
        records.append_metrics(tmp_path, {"round": r, "x": float("nan")})
    with open(tmp_path / records.METRICS, "a") as f:
        f.write('{"round": 4, "x"')  # a crash mid-line
    lines = records.read_metrics(tmp_path)
    assert [m["round"] for m in lines] == [0, 1, 2, 3]
    assert lines[0]["x"] is None  # NaN is not JSON: stored as null
    records.truncate_metrics(tmp_path, 1)
    assert [m["round"] for m in records.read_metrics(tmp_path)] == [0, 1]

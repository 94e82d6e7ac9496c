"""TensorBoard event files hold every metric of every round once, the config, the status."""

from __future__ import annotations

import pytest

from tests.loggers.conftest import TrackedRun, check_rounds

pytestmark = pytest.mark.slow


def test_event_files_hold_every_round_once(tracked_run: TrackedRun) -> None:
    from tbparse import SummaryReader

    reader = SummaryReader(str(tracked_run.run_dir / "tensorboard"))
    scalars = reader.scalars
    assert not scalars.duplicated(["tag", "step"]).any()  # the redone round 3 is not twice
    got: dict[int, dict[str, float]] = {}
    for row in scalars.itertuples():
        got.setdefault(int(row.step), {})[row.tag] = float(row.value)
    check_rounds(got, tracked_run.lines, rel=1e-6)  # event files store float32
    hparams = dict(zip(reader.hparams["tag"], reader.hparams["value"], strict=True))
    assert hparams["strategy._target_"] == "flwr.serverapp.strategy.FedAvg"
    assert hparams["num_clients"] == 4
    assert list(reader.text["value"]) == ["completed", "completed"]  # the run, then its resume

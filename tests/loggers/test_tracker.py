"""The tracker: flattening, config spelling and errors, statuses, and trackers that fail."""

from __future__ import annotations

import logging
import math
import threading
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from fedlearn import checks, records
from fedlearn.experiment import compose_config, simulate
from fedlearn.loggers.base import Logger, RunInfo, flatten_metrics
from fedlearn.loggers.tracker import build_loggers, track
from tests.conftest import TINY


def test_every_nested_number_of_a_line_is_a_metric() -> None:
    line = {
        "round": 3,
        "seconds": 0.5,
        "sampled": 4,
        "train": {"train_loss": 1.25, "note": "text", "per_class": [1, 2]},
        "test": {"accuracy": 0.75, "per_set": {"digits": 0.5}},
        "validation": {"accuracy": None},
        "flag": True,
    }
    got = flatten_metrics(line)
    assert set(got) == {
        "seconds", "sampled", "train/train_loss", "test/accuracy",
        "test/per_set/digits", "validation/accuracy",
    }  # fmt: skip
    assert got["test/per_set/digits"] == 0.5 and got["sampled"] == 4.0
    assert math.isnan(got["validation/accuracy"])  # metrics.jsonl's null: NaN or Inf


def test_logger_group_composes_one_or_several() -> None:
    one = compose_config(["logger=mlflow", "logger.mlflow.tracking_uri=http://host:5000"])
    assert set(one.logger) == {"mlflow"} and one.logger.mlflow.tracking_uri == "http://host:5000"
    several = compose_config(["logger=[tensorboard,mlflow,wandb]"])
    assert set(several.logger) == {"tensorboard", "mlflow", "wandb"}
    assert "logger" not in compose_config([])
    built = build_loggers(OmegaConf.to_container(several.logger, resolve=True))
    assert {k: type(v).__name__ for k, v in built.items()} == {
        "tensorboard": "TensorBoardLogger",
        "mlflow": "MLflowLogger",
        "wandb": "WandbLogger",
    }


def test_logger_errors_are_one_line() -> None:
    with pytest.raises(checks.ConfigError, match="unknown logger 'neptune'; choose from: mlflow"):
        checks.check_choices(["logger=[tensorboard,neptune]"])
    with pytest.raises(checks.ConfigError, match="logger.wandb: mode='live'; allowed: offline"):
        build_loggers({"wandb": {"_target_": "fedlearn.loggers.wandb.WandbLogger", "mode": "live"}})
    bad = {"_target_": "fedlearn.loggers.mlflow.MLflowLogger", "trackin_uri": "x"}
    with pytest.raises(checks.ConfigError, match="logger.mlflow: TypeError: .*trackin_uri"):
        build_loggers({"mlflow": bad})


def test_a_logger_that_cannot_work_stops_the_command_before_the_run(tmp_path) -> None:
    with pytest.raises(checks.ConfigError, match="logger.wandb: mode='live'"):
        simulate([*TINY, "logger=wandb", "logger.wandb.mode=live"], tmp_path)
    assert not (tmp_path / records.CONFIG).exists()


class Recording(Logger):
    """Records what it is told, in memory (class-level: Hydra builds the instance)."""

    calls: list[tuple[str, Any]] = []

    def start(self, run: RunInfo) -> dict[str, Any]:
        Recording.calls.append(("start", run.resumed))
        return {"id": "r1"}

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        Recording.calls.append(("log", step))

    def finish(self, status: str, files: list[Path]) -> None:
        Recording.calls.append(("finish", (status, sorted(p.name for p in files))))


class Raising(Logger):
    """Starts, then raises at every call, as a tracker whose disk is full would."""

    def start(self, run: RunInfo) -> dict[str, Any]:
        return {}

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        raise OSError(28, "No space left on device")

    def finish(self, status: str, files: list[Path]) -> None:
        raise OSError(28, "No space left on device")


class Hanging(Logger):
    """Blocks in its first metrics call until the test lets it go."""

    release = threading.Event()

    def start(self, run: RunInfo) -> dict[str, Any]:
        return {}

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        Hanging.release.wait()

    def finish(self, status: str, files: list[Path]) -> None:
        pass


def _spec(name: str, cls: type, **kw: Any) -> list[str]:
    target = f"{cls.__module__}.{cls.__qualname__}"
    return [
        f"+logger.{name}._target_={target}",
        *(f"+logger.{name}.{k}={v}" for k, v in kw.items()),
    ]


@pytest.mark.parametrize(
    ("exc", "status"),
    [(None, "completed"), (KeyboardInterrupt(), "interrupted"), (RuntimeError("x"), "failed")],
)
def test_the_status_without_a_result_comes_from_how_the_run_ended(exc, status, tmp_path) -> None:
    Recording.calls = []
    cfg = {"seed": 0, "logger": {"rec": {"_target_": f"{__name__}.Recording"}}}
    records.append_metrics(tmp_path, {"round": 0, "test": {"accuracy": 0.1}})
    try:
        with track(cfg, tmp_path):
            if exc is not None:
                raise exc
    except (KeyboardInterrupt, RuntimeError) as raised:
        assert raised is exc  # the tracker lets it through
    assert Recording.calls == [("start", {}), ("log", 0), ("finish", (status, []))]


@pytest.mark.slow
def test_a_resumed_run_continues_the_tracker_run_without_repeating_steps(tmp_path) -> None:
    Recording.calls = []
    simulate([*TINY, *_spec("rec", Recording)], tmp_path)
    assert Recording.calls[-1] == (
        "finish",
        ("completed", ["config.yaml", "model.pt", "result.json"]),
    )
    Recording.calls = []
    simulate([f"resume={tmp_path}", "num_rounds=3"])
    assert Recording.calls[0] == ("start", {"id": "r1"})
    assert [c[1] for c in Recording.calls if c[0] == "log"] == [3]  # rounds 0-2 were logged


@pytest.mark.slow
def test_a_tracker_that_raises_leaves_the_run_completed(tmp_path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="fedlearn"):
        result = simulate([*TINY, *_spec("full", Raising)], tmp_path)
    assert result["status"] == "completed" and result["rounds_completed"] == 2
    warnings = [r.getMessage() for r in caplog.records if "logger full" in r.getMessage()]
    assert warnings == [
        "logger full failed (OSError: [Errno 28] No space left on device); it logs nothing"
        " more in this run, metrics.jsonl has every round"
    ]
    assert [m["round"] for m in records.read_metrics(tmp_path)] == [0, 1, 2]


@pytest.mark.slow
def test_a_tracker_that_hangs_is_left_behind_after_its_timeout(tmp_path, caplog) -> None:
    Hanging.release.clear()
    try:
        with caplog.at_level(logging.WARNING, logger="fedlearn"):
            result = simulate([*TINY, *_spec("slow", Hanging, timeout=0.2)], tmp_path)
    finally:
        Hanging.release.set()
    assert result["status"] == "completed"
    assert any("logger slow still busy after 0.2 s" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_each_compare_run_is_a_tracker_run_of_its_sweep(tmp_path, monkeypatch) -> None:
    import sys

    from mlflow import MlflowClient

    from fedlearn.compare import cli

    sweep, uri = tmp_path / "sweep", f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # logger.mlflow's default reads it
    monkeypatch.setattr(sys, "argv", ["fedlearn-compare"])
    args = ["strategy=fedavg,fedprox", "seed=0", "logger=[tensorboard,mlflow]"]
    cli.main([*args, *TINY, f"hydra.sweep.dir={sweep}"])
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("fedlearn").experiment_id])
    folders = {str(p.parent.resolve()) for p in sweep.rglob(records.RESULT)}
    assert len(folders) >= 2 and {r.data.tags["run_dir"] for r in runs} == folders
    assert {r.data.tags["sweep"] for r in runs} == {str(sweep)}  # the comparison, not a step
    assert {("FedAvg", "0"), ("FedProx", "0")} <= {
        (r.data.tags["strategy"], r.data.tags["seed"]) for r in runs
    }
    assert all(r.info.status == "FINISHED" for r in runs)
    assert all(len(list(Path(f, "tensorboard").glob("events.*"))) == 1 for f in folders)
    assert "logger" not in (sweep / "report.md").read_text()  # not an axis of the comparison

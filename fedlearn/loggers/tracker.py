"""Feed a run's records to its experiment trackers, each from a thread of its own.

:func:`track` wraps a run (``fedlearn.experiment.run``): every entry point that
runs an experiment (``fedlearn-simulate``, ``-server``, ``-launch``, each job of
``fedlearn-compare``, a resumed run) goes through it. The trackers read only
what the run folder records: new ``metrics.jsonl`` lines after each round (and
at the end, so the initial model's round 0 and a run that never reached a round
are logged too), then ``result.json``'s status and the final files.

A tracker never stops or slows the run: each one logs from its own daemon
thread, the first exception switches it off with one warning, and the end of
the run waits at most the tracker's ``timeout`` for it. ``loggers.json`` in the
run folder keeps each tracker's run id and last step, so a resumed run
continues the same tracker run and logs no step twice.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from hydra.utils import instantiate

from fedlearn import records
from fedlearn.checks import ConfigError
from fedlearn.loggers.base import Logger, RunInfo, flatten_metrics

log = logging.getLogger("fedlearn")

SWEEP_ENV = "FEDLEARN_SWEEP"  # the sweep folder of a run, when a sweep sets it for its jobs
STATE = "loggers.json"  # in the run folder: {name: {"run": ..., "step": last step logged}}
FILES = (records.MODEL, records.RESULT, records.CONFIG)  # handed to Logger.finish
OnRound = Callable[[dict[str, Any]], None]


class _Worker:
    """One tracker's thread: runs its calls in order; after a failure, drops them."""

    def __init__(self, name: str, logger: Logger) -> None:
        self.name = name
        self.logger = logger
        self.failed = False
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def submit(self, call: Callable[[], None]) -> None:
        """Queue ``call``; the thread starts with the first one. Lazily, because the
        runtime may still fork (local gRPC clients, worker pools) before round 1."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._loop, name=f"fedlearn-logger-{self.name}", daemon=True
            )
            self._thread.start()
        self._queue.put(call)

    def _loop(self) -> None:
        while (call := self._queue.get()) is not None:
            if self.failed:
                continue
            try:
                call()
            except BaseException as exc:  # noqa: BLE001 - a tracker must never end the run
                self.failed = True
                text = (str(exc).strip().splitlines() or [""])[0]
                log.warning(
                    "logger %s failed (%s%s); it logs nothing more in this run,"
                    " metrics.jsonl has every round",
                    self.name,
                    type(exc).__name__,
                    f": {text}" if text else "",
                )

    def join(self, deadline: float) -> bool:
        """Stop after the queued calls; wait until ``deadline``; False if still busy."""
        if self._thread is None:
            return True
        self._queue.put(None)
        self._thread.join(max(0.0, deadline - time.monotonic()))
        return not self._thread.is_alive()


class Tracker:
    """The run's trackers (none: every method does nothing).

    Parameters
    ----------
    loggers : dict
        Built loggers by name (the keys under ``logger:`` in the config).
    run : RunInfo
        The run they follow.
    resume : bool
        The run continues an earlier one in the same folder.
    """

    def __init__(self, loggers: dict[str, Logger], run: RunInfo, resume: bool = False) -> None:
        self.run = run
        self._workers = {name: _Worker(name, lg) for name, lg in loggers.items()}
        self._state: dict[str, dict[str, Any]] = _load_state(run.run_dir) if resume else {}
        self._lock = threading.Lock()  # loggers.json, written from the workers' threads
        self._feed = threading.Lock()  # the round loop's thread and close() may both feed
        self._offset = 0  # bytes of metrics.jsonl already handed to the workers
        self._started = False

    def on_round(self, line: dict[str, Any] | None = None) -> None:  # noqa: ARG002
        """A round ended: hand the new metrics.jsonl lines to every tracker."""
        if not self._workers:
            return
        with self._feed:
            if not self._started:
                self._started = True
                for name, worker in self._workers.items():
                    worker.submit(lambda n=name, w=worker: self._start(n, w.logger))
            for line in self._new_lines():
                for name, worker in self._workers.items():
                    worker.submit(lambda n=name, w=worker, m=line: self._log(n, w.logger, m))

    def chain(self, callback: OnRound | None) -> OnRound | None:
        """``callback`` (e.g. the progress display), then :meth:`on_round`."""
        if not self._workers:
            return callback

        def both(line: dict[str, Any]) -> None:
            if callback is not None:
                callback(line)
            self.on_round(line)

        return both

    def close(self, status: str) -> None:
        """Log what is left and the final ``status``; wait for each tracker at most its
        ``timeout`` seconds (a tracker still busy then is left behind, with a warning)."""
        if not self._workers:
            return
        self.on_round()
        files = [self.run.run_dir / f for f in FILES if (self.run.run_dir / f).exists()]
        t0 = time.monotonic()
        for worker in self._workers.values():
            worker.submit(lambda w=worker: w.logger.finish(status, files))
        for name, worker in self._workers.items():
            if not worker.join(t0 + worker.logger.timeout) and not worker.failed:
                log.warning(
                    "logger %s still busy after %g s; left behind (raise"
                    " logger.%s.timeout to wait longer), metrics.jsonl has every round",
                    name,
                    worker.logger.timeout,
                    name,
                )

    # ----- in the workers' threads -----
    def _start(self, name: str, logger: Logger) -> None:
        saved = self._state.get(name, {})
        run = RunInfo(**{**vars(self.run), "resumed": dict(saved.get("run") or {})})
        opened = logger.start(run)
        self._save(name, run=opened, step=saved.get("step", -1) if saved.get("run") else -1)

    def _log(self, name: str, logger: Logger, line: dict[str, Any]) -> None:
        step = int(line.get("round", 0))
        if step <= self._state.get(name, {}).get("step", -1):
            return  # logged before the run was interrupted: each step once
        logger.log_metrics(flatten_metrics(line), step)
        self._save(name, step=step)

    def _save(self, name: str, **entry: Any) -> None:
        with self._lock:
            self._state[name] = {**self._state.get(name, {}), **entry}
            records.write_json(self.run.run_dir / STATE, self._state)

    def _new_lines(self) -> list[dict[str, Any]]:
        """Complete metrics.jsonl lines written since the last call."""
        path = self.run.run_dir / records.METRICS
        try:
            if path.stat().st_size < self._offset:  # rewritten (a resume rewinds it)
                self._offset = 0
            with open(path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return []
        data = data[: data.rfind(b"\n") + 1]  # a line being written waits for the next call
        self._offset += len(data)
        lines = []
        for raw in data.splitlines():
            try:
                lines.append(json.loads(raw))
            except json.JSONDecodeError:
                continue
        return lines


def _load_state(run_dir: Path) -> dict[str, dict[str, Any]]:
    try:
        return json.loads((run_dir / STATE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def build_loggers(specs: dict[str, Any] | None) -> dict[str, Logger]:
    """The loggers of the config's ``logger`` section (``logger=[tensorboard,mlflow]``)."""
    loggers = {}
    for name, spec in (specs or {}).items():
        if not isinstance(spec, dict) or "_target_" not in spec:
            raise ConfigError(f"logger.{name}: expected a logger with a _target_, got {spec!r}")
        try:
            loggers[name] = instantiate(spec, _convert_="all")
        except Exception as err:  # noqa: BLE001 - Hydra wraps what the constructor raised
            cause = err.__cause__ or err
            text = (
                str(cause) if isinstance(cause, ConfigError) else f"{type(cause).__name__}: {cause}"
            )
            raise ConfigError(f"logger.{name}: {text}") from None
        if not isinstance(loggers[name], Logger):
            raise ConfigError(f"logger.{name}: {spec['_target_']} is not a fedlearn Logger")
    return loggers


def run_info(cfg: dict[str, Any], run_dir: Path, overrides: list[str] | None) -> RunInfo:
    """What the trackers are told about the run: config, tags, sweep."""
    from fedlearn.compare.runs import flatten

    config = {k: v for k, v in cfg.items() if k != "logger"}
    tags = {}
    for item in overrides or []:
        key, sep, value = item.lstrip("+").partition("=")
        if sep and not key.startswith(("hydra", "logger", "resume", "progress", "~")):
            tags[key] = value
    target = (cfg.get("strategy") or {}).get("_target_")
    if target:
        tags["strategy"] = str(target).rsplit(".", 1)[-1]
    tags["seed"] = str(cfg.get("seed"))
    return RunInfo(
        run_dir=run_dir,
        name=str(run_dir),
        params=flatten(config),
        config=config,
        tags=tags,
        group=_sweep_dir(run_dir),
    )


def _sweep_dir(run_dir: Path) -> str | None:
    """The sweep the run folder belongs to: the one named in :data:`SWEEP_ENV`
    (``fedlearn-compare``, whose sweep is several multiruns), else the Hydra multirun's
    folder; None for a single run. Only a folder that holds ``run_dir`` counts."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    found = [os.environ.get(SWEEP_ENV)]
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        found.append(str(HydraConfig.get().sweep.dir))
    here = run_dir.resolve()
    return next((d for d in found if d and here.is_relative_to(Path(d).resolve())), None)


def _result(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / records.RESULT).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def track(
    cfg: dict[str, Any], run_dir: Path, overrides: list[str] | None = None
) -> AbstractContextManager[Tracker]:
    """Follow the run inside the ``with`` block with the config's loggers (none: a no-op).

    The loggers are built here, so a logger setting that cannot work stops the
    command now, before the run starts. The status logged at the end is the one
    this run wrote to result.json; without one, ``interrupted`` for Ctrl-C /
    SIGTERM, ``failed`` for an exception, ``completed`` otherwise.
    """
    loggers = build_loggers(cfg.get("logger"))
    return _following(Tracker(loggers, run_info(cfg, run_dir, overrides), bool(cfg.get("resume"))))


@contextmanager
def _following(tracker: Tracker) -> Iterator[Tracker]:
    run_dir = tracker.run.run_dir
    before = _result(run_dir)  # a resumed folder holds the interrupted run's summary
    try:
        yield tracker
    except BaseException as exc:
        tracker.close(_status(run_dir, before, exc))
        raise
    tracker.close(_status(run_dir, before, None))


def _status(run_dir: Path, before: dict[str, Any], exc: BaseException | None) -> str:
    result = _result(run_dir)
    if result != before and result.get("status"):
        return str(result["status"])
    if exc is None:
        return "completed"
    return "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"

"""What every experiment tracker gets from a run, and the one interface it implements.

A :class:`Logger` is driven by :class:`fedlearn.loggers.tracker.Tracker` from a
background thread of its own, so a slow or failing tracker never holds up the
run. It is told three things: the run started (:meth:`Logger.start`), a round
ended (:meth:`Logger.log_metrics`, one metrics.jsonl line flattened with ``/``
and the round as step), and the run ended (:meth:`Logger.finish`, with its
status and the run folder's files). Everything it logs comes from what the run
folder records.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedlearn.checks import ConfigError

# Run statuses (result.json's ``status``) and whether the run reached its last round.
STATUSES = ("completed", "stopped", "interrupted", "failed")


@dataclass
class RunInfo:
    """The run a tracker follows.

    Attributes
    ----------
    run_dir : Path
        The run folder.
    name : str
        The run's display name (its folder).
    params : dict
        The resolved config, flattened to dotted keys (``client.lr``).
    config : dict
        The resolved config as nested plain data.
    tags : dict
        ``strategy``, ``seed`` and each command-line override (``partitioner.alpha``).
    group : str or None
        The sweep folder of a multirun (``fedlearn-compare``, ``-m``), else None.
    resumed : dict
        What :meth:`Logger.start` returned when the run started, when this run
        resumes it (the tracker's run id, ...); empty for a new run.
    """

    run_dir: Path
    name: str
    params: dict[str, Any]
    config: dict[str, Any]
    tags: dict[str, str] = field(default_factory=dict)
    group: str | None = None
    resumed: dict[str, Any] = field(default_factory=dict)


class Logger:
    """One experiment tracker (TensorBoard, MLflow, W&B, ...).

    Subclasses implement the three hooks; each runs in the tracker's own
    thread, may block, and may raise: the first exception disables the tracker
    for the rest of the run with one warning.

    Parameters
    ----------
    timeout : float
        Seconds the end of the run waits for this tracker to write what is
        queued; past that it is left behind with one warning.
    """

    requires: tuple[str, ...] = ()  # importable modules, checked before the run starts

    def __init__(self, timeout: float = 60.0) -> None:
        if not float(timeout) >= 0:
            raise ConfigError(f"timeout={timeout}: must be >= 0 seconds")
        self.timeout = float(timeout)
        missing = [m for m in self.requires if importlib.util.find_spec(m) is None]
        if missing:
            raise ConfigError(
                f"{type(self).__name__} needs {', '.join(missing)}:"
                ' pip install "fedlearn[tracking]"'
            )

    def start(self, run: RunInfo) -> dict[str, Any]:
        """Open (or, with ``run.resumed``, reopen) the tracker's run; log the config.

        Returns
        -------
        dict
            What a resumed run needs to continue this tracker run (e.g. its id);
            kept in the run folder's ``loggers.json``.
        """
        raise NotImplementedError

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Log one round's metrics at ``step`` (the round; 0 is the initial model)."""
        raise NotImplementedError

    def finish(self, status: str, files: list[Path]) -> None:
        """Record the run's status (one of :data:`STATUSES`) and its files; close."""
        raise NotImplementedError


def flatten_metrics(line: dict[str, Any]) -> dict[str, float]:
    """Every number of a metrics.jsonl line, nested keys joined by ``/``.

    ``round`` is the step, not a metric; strings, lists and booleans are left
    out; ``null`` (how metrics.jsonl writes NaN and Inf) becomes NaN.
    """
    out: dict[str, float] = {}

    def walk(node: dict[str, Any], prefix: str) -> None:
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(value, f"{name}/")
            elif value is None:
                out[name] = math.nan
            elif isinstance(value, int | float) and not isinstance(value, bool):
                out[name] = float(value)

    walk({k: v for k, v in line.items() if k != "round"}, "")
    return out

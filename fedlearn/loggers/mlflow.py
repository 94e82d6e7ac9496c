"""MLflow: metrics, params, tags and artifacts through ``MlflowClient``.

The default store is MLflow's own default, ``sqlite:///mlflow.db`` in the
folder the command runs in (MLflow 3 refuses new file stores under ``./mlruns``
unless told otherwise), so ``mlflow ui`` there shows every run; artifacts go
beside it under ``mlruns/``. Any tracking URI works (``http://host:5000``).
The client API is used rather than ``mlflow.start_run``: no global active run,
so several runs in one process (a Hydra multirun) never mix.
"""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fedlearn.loggers.base import Logger, RunInfo

try:
    import fcntl
except ImportError:  # Windows: no lock (run a sweep's jobs one after another there)
    fcntl = None  # type: ignore[assignment]

# fedlearn's run status -> MLflow's RunStatus.
_RUN_STATUS = {
    "completed": "FINISHED",
    "stopped": "FAILED",
    "interrupted": "KILLED",
    "failed": "FAILED",
}


class MLflowLogger(Logger):
    """Log to an MLflow tracking store or server.

    Parameters
    ----------
    tracking_uri : str
        Where runs go: ``sqlite:///mlflow.db`` (relative to the working folder),
        ``http://host:5000``, any URI MLflow takes.
    experiment : str
        MLflow experiment name (created when missing).
    timeout : float
        See :class:`fedlearn.loggers.base.Logger`.
    """

    requires = ("mlflow",)

    def __init__(
        self,
        tracking_uri: str = "sqlite:///mlflow.db",
        experiment: str = "fedlearn",
        timeout: float = 60.0,
    ) -> None:
        super().__init__(timeout)
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self._client: Any = None
        self._run_id = ""

    def start(self, run: RunInfo) -> dict[str, Any]:
        from mlflow import MlflowClient
        from mlflow.entities import Param

        # A resumed run goes back to the store it started in, whatever the folder.
        uri = run.resumed.get("tracking_uri") or absolute_uri(self.tracking_uri)
        check_reachable(uri)
        logging.getLogger("alembic").setLevel(logging.WARNING)  # a new store's migrations
        with _store_lock(uri):
            self._client = client = MlflowClient(uri)
        params = {k: "None" if v is None else str(v) for k, v in run.params.items()}
        if run.resumed.get("run_id"):
            self._run_id = run.resumed["run_id"]
            params = self._reopen(params)
        else:
            tags = {**run.tags, "run_dir": str(run.run_dir.resolve())}
            if run.group:
                tags["sweep"] = run.group
            created = client.create_run(self._experiment_id(), run_name=run.name, tags=tags)
            self._run_id = created.info.run_id
        client.log_batch(self._run_id, params=[Param(k, v) for k, v in params.items()])
        return {"tracking_uri": uri, "run_id": self._run_id}

    def _reopen(self, params: dict[str, str]) -> dict[str, str]:
        """Mark the resumed run running again; return the params it does not have yet.
        MLflow params cannot change: a value the resume overrode becomes a tag."""
        self._client.update_run(self._run_id, status="RUNNING")
        logged = self._client.get_run(self._run_id).data.params
        for key, value in params.items():
            if key in logged and logged[key] != value:
                self._client.set_tag(self._run_id, f"resumed.{key}", value)
        return {k: v for k, v in params.items() if k not in logged}

    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        found = self._client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        try:
            return self._client.create_experiment(self.experiment)
        except MlflowException:  # another run of the sweep created it first
            return self._client.get_experiment_by_name(self.experiment).experiment_id

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, step) for k, v in metrics.items()]
        self._client.log_batch(self._run_id, metrics=batch)

    def finish(self, status: str, files: list[Path]) -> None:
        self._client.set_tag(self._run_id, "status", status)
        for path in files:
            self._client.log_artifact(self._run_id, str(path))
        self._client.set_terminated(self._run_id, _RUN_STATUS.get(status, "FAILED"))


def absolute_uri(uri: str) -> str:
    """A relative ``sqlite:///`` path made absolute (against the working folder)."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix) :].startswith("/"):
        return prefix + str(Path.cwd() / uri[len(prefix) :])
    return uri


@contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Hold a lock file beside an SQLite store while its client opens it: the first
    opening creates the tables, and parallel jobs of a sweep doing so at once break
    the store's migrations ("duplicate column name")."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or fcntl is None:
        yield
        return
    with open(f"{uri[len(prefix) :]}.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def check_reachable(uri: str, seconds: float = 5.0) -> None:
    """Fail at once when an HTTP tracking server does not answer: MLflow's own client
    would retry for minutes (in the logger's thread, but still)."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=seconds).close()
    except urllib.error.HTTPError:
        return  # it answered (authentication, or no /health there): reachable
    except OSError as err:
        reason = getattr(err, "reason", err)
        raise ConnectionError(f"MLflow server {uri} does not answer ({reason})") from None

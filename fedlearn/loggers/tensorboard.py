"""TensorBoard: event files in the run folder (``tensorboard --logdir outputs``).

Each round's metrics are scalars at the round's step; the config is the run's
hyperparameters (TensorBoard's HParams tab, one session per run folder, so a
sweep folder compares its runs there); the status is a text summary and the
HParams session's end status.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedlearn.loggers.base import Logger, RunInfo

# fedlearn's run status -> the HParams plugin's session status.
_SESSION_STATUS = {
    "completed": "STATUS_SUCCESS",
    "stopped": "STATUS_FAILURE",
    "interrupted": "STATUS_ABORTED",
    "failed": "STATUS_FAILURE",
}


class TensorBoardLogger(Logger):
    """Write TensorBoard event files with torch's ``SummaryWriter``.

    Parameters
    ----------
    dir : str
        Folder of the event files; a relative one is inside the run folder.
    timeout : float
        See :class:`fedlearn.loggers.base.Logger`.
    """

    requires = ("tensorboard",)

    def __init__(self, dir: str = "tensorboard", timeout: float = 60.0) -> None:
        super().__init__(timeout)
        self.dir = dir
        self._writer: Any = None

    def start(self, run: RunInfo) -> dict[str, Any]:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        log_dir = run.run_dir / self.dir
        self._writer = SummaryWriter(str(log_dir))
        if not run.resumed:  # a resumed run is the same HParams session
            values = {**run.params, "sweep": run.group}
            # Only the session start: without an experiment summary TensorBoard lists
            # every hyperparameter of the runs and finds the metrics among their scalars.
            _, start, _ = hparams(values, {})
            self._writer.file_writer.add_summary(start)
        return {"dir": str(log_dir)}

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self._writer.add_scalar(key, value, step)
        self._writer.flush()  # a round on disk is a round logged (loggers.json says so)

    def finish(self, status: str, files: list[Path]) -> None:  # noqa: ARG002
        self._writer.add_text("status", status)
        self._writer.file_writer.add_summary(_session_end(status))
        self._writer.close()


def _session_end(status: str) -> Any:
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    end = plugin_data_pb2.HParamsPluginData(
        session_end_info=plugin_data_pb2.SessionEndInfo(
            status=api_pb2.Status.Value(_SESSION_STATUS.get(status, "STATUS_UNKNOWN"))
        )
    )
    tag = metadata.SESSION_END_INFO_TAG
    return Summary(value=[Summary.Value(tag=tag, metadata=metadata.create_summary_metadata(end))])

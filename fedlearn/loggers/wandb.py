"""Weights & Biases: offline by default, files under the run folder, synced later.

``wandb sync <run folder>/wandb/offline-run-*`` uploads a run when wanted
(a resumed run adds a second ``offline-run-*`` folder with the same id; sync
them together and W&B joins them). ``logger.wandb.mode=online`` logs live.
Each run is its own ``wandb.Run`` (``reinit="create_new"``): several runs in
one process (a Hydra multirun) never share W&B's global run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedlearn.checks import ConfigError
from fedlearn.loggers.base import Logger, RunInfo

MODES = ("offline", "online", "disabled")


class WandbLogger(Logger):
    """Log to Weights & Biases.

    Parameters
    ----------
    project : str
        W&B project.
    entity : str, optional
        W&B user or team (None: the account's default).
    mode : str
        ``offline`` (no network; ``wandb sync`` later), ``online`` or ``disabled``.
    timeout : float
        See :class:`fedlearn.loggers.base.Logger`.
    """

    requires = ("wandb",)

    def __init__(
        self,
        project: str = "fedlearn",
        entity: str | None = None,
        mode: str = "offline",
        timeout: float = 60.0,
    ) -> None:
        super().__init__(timeout)
        if mode not in MODES:
            raise ConfigError(f"mode={mode!r}; allowed: {', '.join(MODES)}")
        self.project, self.entity, self.mode = project, entity, mode
        self._run: Any = None

    def start(self, run: RunInfo) -> dict[str, Any]:
        import wandb

        resumed = run.resumed.get("id")
        settings = wandb.Settings(
            silent=True,  # the run's own console and fedlearn.log stay fedlearn's
            console="off",
            disable_git=True,
            save_code=False,
            x_disable_stats=True,
        )
        self._run = wandb.init(
            project=self.project,
            entity=self.entity,
            mode=self.mode,
            dir=str(run.run_dir),
            id=resumed,
            resume="allow" if resumed else None,
            name=run.name,
            group=run.group,
            tags=[f"{k}={v}"[:64] for k, v in run.tags.items()],  # W&B's limit per tag
            config=None if resumed else run.config,
            reinit="create_new",
            settings=settings,
        )
        if resumed:  # values a resume may override (num_rounds=20) replace the old ones
            self._run.config.update(run.config, allow_val_change=True)
        return {"id": self._run.id}

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self._run.log(metrics, step=step)

    def finish(self, status: str, files: list[Path]) -> None:
        import wandb

        self._run.summary["status"] = status
        for path in files:
            kind = "model" if path.suffix == ".pt" else "run-record"
            artifact = wandb.Artifact(f"{path.stem}-{self._run.id}", type=kind)
            artifact.add_file(str(path))
            self._run.log_artifact(artifact)
        self._run.finish(exit_code=0 if status == "completed" else 1)

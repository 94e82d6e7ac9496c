"""Run an experiment from a composed config: build the app and the runtime once, run.

``run(cfg, run_dir)`` is what ``fedlearn-simulate`` calls under ``@hydra.main``;
``simulate(overrides)`` composes the same config from Python (notebooks, tests).
The app is fedlearn's own (strategy, model, dataset, ... settings) or any Flower
app (``app=<folder>``, :mod:`fedlearn.flower_app`); the runtime is whatever
``conf/runtime/<name>.yaml`` builds (:class:`fedlearn.runtime.base.Runtime`).
Both kinds of app run through :func:`run` the same way: one place where a run
starts, where each metrics line is emitted (``job.setup.on_round``) and where it
ends.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from fedlearn import checks, console, flower_app, records, targets
from fedlearn.app import client_app as client_module
from fedlearn.app.arrays import to_record
from fedlearn.app.recorder import AppRecord, finish, recorded
from fedlearn.app.run_config import client_run_config
from fedlearn.app.server_app import ServerSetup, make_server_app
from fedlearn.data import load_dataset
from fedlearn.loggers.tracker import track
from fedlearn.models import build_model
from fedlearn.runtime.base import FEDLEARN_CLIENT_APP, Runtime

log = logging.getLogger("fedlearn")


def compose_config(overrides: list[str] | None = None) -> DictConfig:
    """Compose ``fedlearn/conf/config.yaml`` with Hydra overrides (no run folder made)."""
    overrides = flower_app.hydra_overrides(list(overrides or []))
    checks.check_choices(overrides)
    with initialize_config_module("fedlearn.conf", version_base="1.3"):
        return compose("config", overrides=overrides)


def simulate(overrides: list[str] | None = None, run_dir: str | Path | None = None) -> dict:
    """Compose, run and return the run's summary (result.json's content)."""
    cfg = compose_config(overrides)
    if run_dir is None:
        run_dir = Path("outputs") / datetime.now().strftime("%Y-%m-%d/%H-%M-%S-%f")
    return run(cfg, Path(run_dir), overrides)


def _plain(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def _resume_config(resume: str, overrides: list[str]) -> dict[str, Any]:
    """The saved config of run folder ``resume`` with plain ``key=value`` overrides applied
    (e.g. ``num_rounds=20`` to continue further); group choices cannot change."""
    saved_path = Path(resume) / records.CONFIG
    if not saved_path.exists():
        raise checks.ConfigError(f"resume={resume}: no {records.CONFIG} there; give a run folder")
    dotlist = []
    for item in overrides:
        key = item.lstrip("+~").partition("=")[0]
        if key in checks.GROUPS:
            raise checks.ConfigError(f"resume: {key} of an existing run cannot change; drop {item}")
        if key != "resume" and not key.startswith("hydra"):
            dotlist.append(item.lstrip("+"))
    if flower_app.selected(OmegaConf.load(saved_path).get("app")):
        raise checks.ConfigError(
            f"resume={resume}: a Flower app's ServerApp runs its own rounds and keeps no"
            " checkpoints; start a new run"
        )

    merged = OmegaConf.merge(OmegaConf.load(saved_path), OmegaConf.from_dotlist(dotlist))
    plain = _plain(merged)
    plain["resume"] = str(resume)
    return plain


def build_strategy(cfg: dict[str, Any]) -> Any:
    """The configured Flower strategy, wrapped in central DP when ``dp`` is set."""
    strategy = instantiate(cfg["strategy"], _convert_="all")
    dp = cfg.get("dp")
    if dp:
        sampled = checks.num_sampled(cfg["strategy"], cfg["num_clients"])
        dp = {"num_sampled_clients": sampled, **dp}
        strategy = instantiate(dp, strategy=strategy, _convert_="all")
    return strategy


def _central_eval(cfg: dict[str, Any], model: torch.nn.Module) -> Any:
    from fedlearn.app.central import central_evaluation

    server = cfg["server"]
    device, cap = str(server.get("device", "auto")), server.get("central_eval_samples")
    return central_evaluation(cfg["dataset"], model, device, cap)


def train_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The ConfigRecord scalars every train message carries (see client_app)."""
    c = cfg["client"]
    out = {
        "lr": float(c["lr"]),
        "local-epochs": int(c["local_epochs"]),
        "batch-size": int(c["batch_size"]),
        "momentum": float(c.get("momentum", 0.0)),
        "weight-decay": float(c.get("weight_decay", 0.0)),
    }
    if c.get("max_steps"):
        out["max-steps"] = int(c["max_steps"])
    return out


def build_setup(cfg: dict[str, Any], run_dir: Path, clients_here: bool = True) -> ServerSetup:
    """Validate the config and build the server side: strategy, model, central eval.

    ``clients_here``: the runtime runs the clients on this machine (their device is
    checked here)."""
    checks.check_experiment(cfg, clients_here)
    data = load_dataset(cfg["dataset"])
    torch.manual_seed(int(cfg["seed"]))
    model = build_model(cfg["model"], data.spec)
    strategy = build_strategy(cfg)
    inner = getattr(strategy, "strategy", strategy)
    return ServerSetup(
        strategy=strategy,
        initial_arrays=to_record(model.state_dict()),
        num_rounds=int(cfg["num_rounds"]),
        run_dir=run_dir,
        train_config=train_config(cfg),
        evaluate_fn=_central_eval(cfg, model) if cfg["server"].get("central_eval", True) else None,
        min_train_replies=max(1, int(getattr(inner, "min_train_nodes", 1))),
        round_timeout=float(cfg["server"]["round_timeout"]),
        checkpoint_every=int(cfg["server"]["checkpoint_every"]),
        resume=bool(cfg.get("resume")),
        seed=int(cfg["seed"]),
        max_update_norm=cfg["server"].get("max_update_norm"),
    )


def node_configs(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """Flower's node_config of each simulated node: its partition."""
    n = int(cfg["num_clients"])
    return [{"partition-id": i, "num-partitions": n} for i in range(n)]


def _check_partitions(cfg: dict[str, Any]) -> None:
    # Partition on the server too, so an empty client fails before any round starts.
    from fedlearn.data.partition import client_indices

    client_indices(cfg["dataset"], cfg["partitioner"], int(cfg["num_clients"]), int(cfg["seed"]))


@contextmanager
def long_lived_objects() -> Iterator[None]:
    """Keep the garbage collector off what is alive now (modules, data, model) for the
    duration: every full collection would otherwise walk torch's and Flower's objects
    again, 0.1-0.2 s each, mid-round. Left alone when the caller has frozen the GC."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


class Interrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C or SIGTERM; its folder holds every finished round."""

    def __init__(self, run_dir: Path, resumable: bool = True) -> None:
        super().__init__(str(run_dir))
        self.run_dir = run_dir
        self.resumable = resumable


@dataclass
class Job:
    """What one run executes: a ServerApp and a ClientApp over ``nodes``.

    ``setup`` is where the run's metrics lines go (``on_round``) and its summary is
    kept (``result``): fedlearn's :class:`ServerSetup`, or a Flower app's :class:`AppRecord`.
    """

    server_app: ServerApp
    client_app: ClientApp
    client_ref: str
    nodes: list[dict[str, Any]]
    run_config: dict[str, Any]
    setup: ServerSetup | AppRecord
    num_rounds: int | None


def build_runtime(cfg: dict[str, Any]) -> Runtime:
    """The runtime ``conf/runtime/<name>.yaml`` names, given only its own settings."""
    runtime = instantiate(cfg["runtime"], _convert_="all")
    if not isinstance(runtime, Runtime):
        raise checks.ConfigError(
            f"runtime._target_={cfg['runtime'].get('_target_')} is a {type(runtime).__name__},"
            " not a fedlearn.runtime.base.Runtime"
        )
    return runtime


def _own_job(cfg: dict[str, Any], run_dir: Path, runtime: Runtime) -> Job:
    """fedlearn's own app: strategy, model and data from the config."""
    setup = build_setup(cfg, run_dir, runtime.clients_here)
    _check_partitions(cfg)
    if cfg.get("resume") and runtime.client_state == "none" and keeps_client_state(setup):
        raise checks.ConfigError(
            f"resume={cfg['resume']}: {type(runtime).__name__} cannot restore client state"
            f" (Context.state), which {type(setup.strategy).__name__}'s clients keep;"
            " start a new run"
        )
    return Job(
        make_server_app(setup),
        client_module.app,
        FEDLEARN_CLIENT_APP,
        node_configs(cfg),
        client_run_config(cfg),
        setup,
        setup.num_rounds,
    )


def keeps_client_state(setup: ServerSetup) -> bool:
    """Whether the strategy's client half keeps ``Context.state`` (SCAFFOLD, FedDyn)."""
    inner = getattr(setup.strategy, "strategy", setup.strategy)  # under central DP
    return bool(getattr(inner, "keeps_client_state", False))


def _app_job(cfg: dict[str, Any], run_dir: Path, overrides: list[str]) -> Job:
    """A Flower app: its components, its run config, one node per client."""
    app = flower_app.load(cfg["app"])
    given = any(o.lstrip("+~").startswith("num_clients=") for o in overrides)
    n = int(cfg["num_clients"]) if given or app.num_nodes is None else app.num_nodes
    rounds = app.run_config.get("num-server-rounds")  # Flower's templates' name for it
    rounds = rounds if isinstance(rounds, int) else None
    record = AppRecord(run_dir, app.name, app.run_config, rounds)
    records.truncate_metrics(run_dir, -1)
    nodes = [{"partition-id": i, "num-partitions": n} for i in range(n)]
    return Job(
        recorded(app.server, record),
        app.client,
        app.client_ref,
        nodes,
        app.run_config,
        record,
        record.num_rounds,
    )


def run(
    cfg: DictConfig | dict[str, Any], run_dir: Path, overrides: list[str] | None = None
) -> dict[str, Any]:
    """Run one experiment into ``run_dir``; return its summary.

    With ``resume=<run folder>`` the run continues in that folder from its latest
    checkpoint, under its saved config plus any plain ``key=value`` ``overrides``.
    A run whose ServerApp raises ends with ``status: failed`` in result.json and
    :class:`~fedlearn.records.RunFailed`.
    """
    plain = _plain(cfg) if isinstance(cfg, DictConfig) else dict(cfg)
    overrides = list(overrides or [])
    if plain.get("resume"):
        run_dir = Path(plain["resume"])
        plain = _resume_config(plain["resume"], overrides)
    run_dir.mkdir(parents=True, exist_ok=True)
    targets.allow_config(plain)  # the user's own config: its clients build what it names
    runtime = build_runtime(plain)
    is_app = flower_app.selected(plain.get("app"))
    job = _app_job(plain, run_dir, overrides) if is_app else _own_job(plain, run_dir, runtime)
    tracking = track(plain, run_dir, overrides)  # the config's loggers (none: a no-op)
    if not plain.get("resume"):
        saved = {**plain, "num_clients": len(job.nodes)} if is_app else plain
        (run_dir / records.CONFIG).write_text(OmegaConf.to_yaml(OmegaConf.create(saved)))
    done = len([m for m in records.read_metrics(run_dir) if m.get("round", 0) > 0])
    show = bool(plain.get("progress", True))
    progress = console.round_progress(job.num_rounds, done + 1, show)
    t0 = time.perf_counter()
    with long_lived_objects(), records.run_log(run_dir, is_app):
        try:
            with progress as cb, tracking as tracker:
                job.setup.on_round = tracker.chain(cb)  # every metrics line of the run passes here
                runtime.run(
                    job.server_app,
                    job.client_app,
                    job.nodes,
                    job.run_config,
                    run_dir,
                    client_ref=job.client_ref,
                )
        except KeyboardInterrupt:
            if isinstance(job.setup, AppRecord):  # e.g. Ray's ServerApp thread still running
                finish(job.setup, "interrupted", "interrupted", time.perf_counter() - t0)
            raise Interrupted(run_dir, resumable=not is_app) from None
        except Exception as exc:
            if job.setup.result.get("status") != "failed":
                raise  # the runtime's own error (e.g. too few gRPC clients), not the app's
            log.error("the ServerApp raised", exc_info=exc)
            raise records.RunFailed(run_dir, job.setup.result["error"]) from exc
        finally:
            runtime.close()
    if show:
        label = job.setup.result.get("strategy") or job.setup.result.get("app")
        title = f"{label} - {job.setup.result['status']} - {run_dir}"
        console.console.print(console.results_table(records.read_metrics(run_dir), title))
    return job.setup.result

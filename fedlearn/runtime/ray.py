"""The Ray runtime: Flower's own simulation engine (``flwr.simulation``).

For many cores, GPUs (fractional ``num_gpus`` per client) or a Ray cluster
(``runtime.init_args.address=auto``). It runs the same ServerApp and ClientApp
as the in-process runtime; only the Grid differs (Flower's in-memory Grid over
Ray actors, which polls for replies every 0.1 s).
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

from fedlearn.app.client_app import with_run_config
from fedlearn.app.run_config import client_run_config

log = logging.getLogger("fedlearn")


class _NotOurDeprecation(logging.Filter):
    """Drop Flower's notice that ``run_simulation`` is deprecated: fedlearn calls it on
    purpose (it is Flower's Ray engine); the user has nothing to change."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "`run_simulation` function is deprecated" not in record.getMessage()


def _quiet() -> None:
    # Loggers that print set-up chatter at INFO under Hydra's job logging.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    flwr = logging.getLogger("flwr")
    if not any(isinstance(f, _NotOurDeprecation) for f in flwr.filters):
        flwr.addFilter(_NotOurDeprecation())
    # Ray's advice about a future default for num_gpus=0; fedlearn relies on today's
    # (clients without GPUs see none), so there is nothing to act on.
    warnings.filterwarnings(
        "ignore", message="Tip: In future versions of Ray", category=FutureWarning
    )


def backend_config(runtime: dict[str, Any]) -> dict[str, Any]:
    """Flower's backend config from ``conf/runtime/ray.yaml``."""
    res = dict(runtime.get("client_resources") or {})
    num_cpus = float(res.get("num_cpus", 1))
    num_gpus = float(res.get("num_gpus", 0.0))
    if num_cpus <= 0:
        raise ValueError(f"runtime.client_resources.num_cpus must be > 0, got {num_cpus}")
    if not 0.0 <= num_gpus:
        raise ValueError(f"runtime.client_resources.num_gpus must be >= 0, got {num_gpus}")
    init_args = {"logging_level": logging.ERROR, "log_to_driver": False}
    init_args.update(runtime.get("init_args") or {})
    return {
        "client_resources": {"num_cpus": num_cpus, "num_gpus": num_gpus},
        "init_args": init_args,
    }


def run_ray(
    cfg: dict[str, Any],
    server_app: ServerApp,
    client_app: ClientApp,
    node_configs: list[dict[str, Any]],
) -> None:
    """Run ``server_app`` against ``len(node_configs)`` Ray-simulated nodes.

    Flower assigns node i the node_config ``{partition-id: i, num-partitions: n}``,
    which is what ``node_configs`` holds for the simulated runtimes.
    """
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ValueError(
            "runtime=ray needs Ray: pip install 'fedlearn[ray]' (or flwr[simulation])"
        ) from None
    _quiet()
    from flwr.simulation import run_simulation

    try:
        run_simulation(
            server_app=server_app,
            client_app=with_run_config(client_run_config(cfg)) if client_app else client_app,
            num_supernodes=len(node_configs),
            backend_name="ray",
            backend_config=backend_config(cfg["runtime"]),
        )
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()

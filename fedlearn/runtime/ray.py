"""The Ray runtime: Flower's own simulation engine (``flwr.simulation``).

For many cores, GPUs (fractional ``num_gpus`` per client) or a Ray cluster
(``runtime.init_args.address=auto``). It runs the same ServerApp and ClientApp
as the in-process runtime; only the Grid differs (Flower's in-memory Grid over
Ray actors, which polls for replies every 0.1 s).

Flower's engine keeps each node's Context where fedlearn cannot save it, and
gives nodes new ids at every start, so the server keeps the client state itself
and carries it in the messages (:mod:`fedlearn.runtime.carry`): checkpoints hold
it and a resumed run continues with it, for any ClientApp and any Ray cluster.
"""

from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from fedlearn.runtime.base import (
    FEDLEARN_CLIENT_APP,
    ModdedClientApp,
    Runtime,
    run_config_mod,
)
from fedlearn.runtime.carry import StateCarryingGrid, carry_state
from fedlearn.runtime.ray_nodes import recording_nodes, tag_ray_node

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
    """Flower's backend config from ``conf/runtime/ray.yaml``'s settings."""
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


def carrying_state(server_app: ServerApp, run_config: dict[str, Any]) -> ServerApp:
    """``server_app`` given a :class:`StateCarryingGrid` over Flower's Grid, and the
    run's config in its Context (the Python simulation API leaves it empty)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        context.run_config = {**run_config, **context.run_config}
        server_app(StateCarryingGrid(grid), context)

    return app


class RayRuntime(Runtime):
    """Flower's Ray simulation engine: ``conf/runtime/ray.yaml``.

    Parameters
    ----------
    client_resources : dict
        Ray resources per client: ``num_cpus``, ``num_gpus`` (fractions share a GPU).
    init_args : dict
        Passed to ``ray.init`` (e.g. ``{address: auto}`` to join a running cluster).
    """

    client_state = "server"  # carried in the messages, see the module docstring

    def __init__(
        self,
        client_resources: dict[str, Any] | None = None,
        init_args: dict[str, Any] | None = None,
    ) -> None:
        self.backend = backend_config(
            {"client_resources": client_resources or {}, "init_args": init_args or {}}
        )
        # A cluster's nodes may have devices this machine has not; a local Ray has
        # exactly this machine's.
        self.clients_here = not (init_args or {}).get("address")

    def run(
        self,
        server_app: ServerApp,
        client_app: ClientApp,
        nodes: list[dict[str, Any]],
        run_config: dict[str, Any],
        run_dir: Path,
        *,
        client_ref: str = FEDLEARN_CLIENT_APP,
    ) -> None:
        """Run on ``len(nodes)`` Ray-simulated nodes.

        Flower assigns node i the node_config ``{partition-id: i, num-partitions: n}``,
        which is what ``nodes`` holds for a simulation.
        """
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ValueError(
                "runtime=ray needs Ray: pip install 'fedlearn[ray]' (or flwr[simulation])"
            ) from None
        _quiet()
        from flwr.simulation import run_simulation

        mods = [run_config_mod(run_config), carry_state, tag_ray_node]  # (ray_nodes.py)
        client = ModdedClientApp(client_app, mods)
        try:
            run_simulation(
                server_app=recording_nodes(carrying_state(server_app, run_config), run_dir),
                client_app=client,
                num_supernodes=len(nodes),
                backend_name="ray",
                backend_config=copy.deepcopy(self.backend),  # Flower fills it in
            )
        finally:
            import ray

            if ray.is_initialized():
                ray.shutdown()

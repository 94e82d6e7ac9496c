"""The one interface of a runtime: run a ServerApp and a ClientApp over some nodes.

A runtime is built by Hydra from ``conf/runtime/<name>.yaml`` (``_target_``)
and receives only that file's settings. Everything a caller needs to know about
it is an attribute, never its name:

- :attr:`Runtime.clients_here`: ClientApps run on this machine, so a device
  they are told to use must exist here (``fedlearn.checks``).
- :attr:`Runtime.client_state`: how a node's ``Context.state`` (SCAFFOLD's and
  FedDyn's client terms, whatever a ClientApp keeps there) survives a resume.

A runtime whose server keeps the client state hands the ServerApp a Grid that
is a :class:`ClientStateStore`; fedlearn's round loop saves that state with
every checkpoint and loads it back on resume.

Adding a runtime is one module (a :class:`Runtime` subclass), one YAML naming
it and one test.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import Mod
from flwr.serverapp import Grid, ServerApp
from flwr.supercore.run import Run

ClientStatePolicy = Literal["server", "clients", "none"]
FEDLEARN_CLIENT_APP = "fedlearn.app.client_app:app"


@runtime_checkable
class ClientStateStore(Protocol):
    """A Grid that holds every node's ``Context.state`` on the server side."""

    def client_states(self) -> dict[str, RecordDict]:
        """Every node's state, keyed by a name that is stable across restarts."""
        ...

    def load_client_states(self, states: dict[str, RecordDict]) -> None:
        """Give nodes back the states :meth:`client_states` returned (e.g. on resume)."""
        ...


class Runtime(ABC):
    """Runs a Flower ServerApp against nodes running a Flower ClientApp.

    Attributes
    ----------
    clients_here : bool
        The ClientApps run on this machine (a device they name must exist here).
    client_state : {"server", "clients", "none"}
        Where a node's ``Context.state`` survives a resume. ``"server"``: the
        Grid given to the ServerApp is a :class:`ClientStateStore`, and
        checkpoints hold every node's state. ``"clients"``: each client keeps
        its own (the gRPC clients' ``--state-file``). ``"none"``: it is lost,
        so resuming a run whose clients keep state is refused.
    """

    clients_here: bool = True
    client_state: ClientStatePolicy = "server"

    @abstractmethod
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
        """Run ``server_app`` to its end against ``len(nodes)`` nodes running ``client_app``.

        Parameters
        ----------
        server_app : ServerApp
            Called once with this runtime's Grid and a Context holding ``run_config``.
        client_app : ClientApp
            What every node runs.
        nodes : list of dict
            One Flower ``node_config`` per simulated node (``partition-id``,
            ``num-partitions``). A runtime whose clients bring their own
            node_config (remote processes) uses only how many there are.
        run_config : dict
            Flower's ``run_config`` (flat scalars), for the ServerApp and every node.
        run_dir : Path
            The run folder (a runtime may keep its own files there).
        client_ref : str
            ``module:attribute`` naming ``client_app``, for client processes that
            import it themselves.

        Exceptions raised by the ServerApp propagate.
        """

    def close(self) -> None:  # noqa: B027 - optional hook, most runtimes hold nothing
        """Release what the runtime holds between runs (worker processes, ...)."""


class DelegatingGrid(Grid):
    """A Grid that hands every call to ``inner``: the base of Grid wrappers, which
    override the calls they add something to."""

    def __init__(self, inner: Grid) -> None:
        self.inner = inner

    def set_run(self, run: Run) -> None:
        self.inner.set_run(run)

    @property
    def run(self) -> Run:
        return self.inner.run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):  # noqa: ANN001, ANN201
        return self.inner.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self.inner.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.inner.pull_messages(message_ids)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return self.inner.send_and_receive(messages, timeout=timeout)


def server_context(run_config: dict[str, Any], run_id: int = 1) -> Context:
    """The ServerApp's Context: Flower's SuperLink gives it the run's config too."""
    return Context(
        run_id=run_id, node_id=0, node_config={}, state=RecordDict(), run_config=dict(run_config)
    )


class ModdedClientApp(ClientApp):
    """``app`` behind Flower mods, outermost first (as ``ClientApp(mods=...)`` applies them).

    A ClientApp applies its own mods when a handler is registered, so a runtime
    cannot add one to an app it is given; it wraps the app instead.
    """

    def __init__(self, app: ClientApp, mods: list[Mod]) -> None:
        super().__init__()
        self.app = app
        self.mods = list(mods)

    def __call__(self, message: Message, context: Context) -> Message:
        """Run the mods, then ``app``."""

        def call(i: int, msg: Message, ctx: Context) -> Message:
            if i == len(self.mods):
                return self.app(msg, ctx)
            return self.mods[i](msg, ctx, lambda m, c: call(i + 1, m, c))

        return call(0, message, context)


def run_config_mod(run_config: dict[str, Any]) -> Mod:
    """A mod that gives a node ``run_config`` for the length of each call.

    Flower's Python simulation API gives nodes an empty run_config (a SuperNode
    would read the app's), and refuses a Context whose run_config changed, so it
    is put back after the call.
    """

    def fill_run_config(msg: Message, context: Context, call_next):  # noqa: ANN001, ANN202
        original = context.run_config
        context.run_config = {**run_config, **original}
        try:
            return call_next(msg, context)
        finally:
            context.run_config = original

    return fill_run_config

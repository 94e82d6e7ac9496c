"""Client state kept by the server and carried to each node inside its messages.

For runtimes whose nodes do not keep a Context the server can reach and save
(Flower's Ray engine: Contexts live in the engine, node ids change with every
start). :class:`StateCarryingGrid` wraps the runtime's Grid: it holds every
node's ``Context.state``, adds it to each message it pushes as reserved records
(``fedlearn.state/<key>``), and takes the node's new state out of the reply.
On the node, :func:`carry_state` (a Flower mod) puts those records into
``Context.state`` before the ClientApp runs and moves the state back into the
reply afterwards, leaving the engine's own Context empty, so the state travels
once, in the message, instead of inside the engine's Context.

The reserved records are added below fedlearn's byte counting (the Grid the
ServerApp sees is wrapped around this one), so ``bytes_sent`` and
``bytes_received`` count the app's content only.

States are keyed by the node's ``partition-id`` (its node id where it has
none): stable across restarts, unlike Ray's node ids. After a resume the grid
learns which node holds which partition with one ``query`` message per node,
answered by the mod without calling the ClientApp.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.serverapp.grid import Grid

from fedlearn.runtime.base import DelegatingGrid

PREFIX = "fedlearn.state/"
MARK = "fedlearn.carry"  # ConfigRecord on every carried message and its reply


def node_key(node_config: dict[str, Any], node_id: int) -> str:
    """The name a node's state is kept under: its partition, else its node id."""
    pid = node_config.get("partition-id")
    return f"partition-{pid}" if pid is not None else f"node-{node_id}"


def _split(content: RecordDict) -> tuple[RecordDict, RecordDict, ConfigRecord | None]:
    """``content`` without the carried records; the carried state; the mark."""
    kept, state = RecordDict(), RecordDict()
    for key, record in content.items():
        if key.startswith(PREFIX):
            state[key[len(PREFIX) :]] = record
        elif key != MARK:
            kept[key] = record
    return kept, state, content.get(MARK)


def carry_state(msg: Message, context: Context, call_next):  # noqa: ANN001, ANN201
    """Flower mod: the carried state becomes ``Context.state`` for this call, and goes
    back in the reply. Messages not sent by a :class:`StateCarryingGrid` pass as they are."""
    if not msg.has_content() or MARK not in msg.content:
        return call_next(msg, context)
    content, state, mark = _split(msg.content)
    key = node_key(dict(context.node_config), context.node_id)
    if mark.get("discover"):  # which partition is this node? (after a resume)
        return Message(RecordDict({MARK: ConfigRecord({"key": key})}), reply_to=msg)
    inner = Message(metadata=msg.metadata, content=content)
    context.state = state
    try:
        reply = call_next(inner, context)
        if reply.has_content():
            for name, record in context.state.items():
                reply.content[PREFIX + name] = record
            reply.content[MARK] = ConfigRecord({"key": key})
        return reply
    finally:
        context.state = RecordDict()  # the engine's copy of the Context stays light


def _key_order(key: str) -> tuple[int, int, str]:
    """Sort key of a state key: partitions by number, then nodes without one."""
    pid = key.removeprefix("partition-")
    return (0, int(pid), "") if pid.isdigit() else (1, 0, key)


class StateCarryingGrid(DelegatingGrid):
    """A Grid wrapper that keeps every node's state and carries it in the messages.

    It is a :class:`~fedlearn.runtime.base.ClientStateStore`: fedlearn's round
    loop checkpoints :meth:`client_states` and restores them on resume.
    """

    def __init__(self, inner: Grid) -> None:
        super().__init__(inner)
        self.states: dict[str, RecordDict] = {}
        self.keys: dict[int, str] = {}  # node id -> state key, learned from replies

    # -- ClientStateStore -------------------------------------------------------
    def client_states(self) -> dict[str, RecordDict]:
        """Every node's state as of its last successful reply."""
        return dict(self.states)

    def load_client_states(self, states: dict[str, RecordDict]) -> None:
        """Restore saved states; the nodes' keys are asked for before the next push."""
        self.states = dict(states)

    # -- Grid -------------------------------------------------------------------
    def get_node_ids(self) -> list[int]:
        """Node ids in partition order: the engine's are random, and strategies sample
        from this list, so it must not depend on them (reproducible runs)."""
        ids = list(self.inner.get_node_ids())
        unknown = [i for i in ids if i not in self.keys]
        if unknown:
            self._discover(sorted(unknown))
        return sorted(ids, key=lambda i: _key_order(self.keys.get(i, f"node-{i}")))

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.inner.push_messages(self._with_states(list(messages)))

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._take_state(r) for r in self.inner.pull_messages(message_ids)]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        out = self._with_states(list(messages))
        return [self._take_state(r) for r in self.inner.send_and_receive(out, timeout=timeout)]

    # -- carrying ---------------------------------------------------------------
    def _with_states(self, messages: list[Message]) -> list[Message]:
        unknown = {m.metadata.dst_node_id for m in messages} - set(self.keys)
        if self.states and unknown:
            self._discover(sorted(unknown))
        out = []
        for msg in messages:
            if not msg.has_content():
                out.append(msg)
                continue
            content = RecordDict(dict(msg.content.items()))  # strategies share one content
            key = self.keys.get(msg.metadata.dst_node_id)
            for name, record in self.states.get(key, RecordDict()).items():
                content[PREFIX + name] = record
            content[MARK] = ConfigRecord({"discover": False})
            out.append(Message(metadata=msg.metadata, content=content))
        return out

    def _take_state(self, reply: Message) -> Message:
        if not reply.has_content() or MARK not in reply.content:
            return reply  # an error reply: the node keeps the state it had
        content, state, mark = _split(reply.content)
        key = str(mark["key"])
        self.keys[reply.metadata.src_node_id] = key
        self.states[key] = state
        return Message(metadata=reply.metadata, content=content)

    def _discover(self, node_ids: list[int]) -> None:
        """Ask nodes which partition they hold (one small message each)."""
        asks = [
            Message(RecordDict({MARK: ConfigRecord({"discover": True})}), node, "query")
            for node in node_ids
        ]
        for reply in self.inner.send_and_receive(asks):
            if reply.has_content() and MARK in reply.content:
                self.keys[reply.metadata.src_node_id] = str(reply.content[MARK]["key"])

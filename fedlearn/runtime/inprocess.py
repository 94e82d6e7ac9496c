"""The in-process runtime: a Flower Grid that calls the ClientApp directly.

:class:`InProcessRuntime` (``conf/runtime/inprocess.yaml``) runs a ServerApp on
an :class:`InProcessGrid`, which executes a round's messages in ``_execute``.

No SuperLink, no serialization, no polling: ``send_and_receive`` hands each
message to the ClientApp and returns its reply. It keeps one Flower Context
per node across rounds (client state persists), gives each client its own
copy of the message content (Flower's strategies share one RecordDict across
a round's messages), turns a client exception into a Flower Error reply (the
round goes on without that client), and with ``workers > 1`` runs clients in
worker processes. Results do not depend on ``workers``: each client's work
depends only on its message and Context, replies come back in message order,
and every client runs with the same number of torch threads (``threads``;
a different thread count changes float summation order in some kernels).
A ClientApp that offers a batched handler (:mod:`fedlearn.runtime.batched`) gets
a round's messages at once, a share per worker (``vectorize``, ``group_size``).
"""

from __future__ import annotations

import copy
import logging
import multiprocessing as mp
import os
import signal
import threading
import time
import traceback
import uuid
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch
from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp
from flwr.serverapp.grid import Grid
from flwr.supercore.run import Run

from fedlearn.runtime import batched, set_server_identity
from fedlearn.runtime.base import FEDLEARN_CLIENT_APP, Runtime, server_context

log = logging.getLogger("fedlearn")

CLIENT_EXCEPTION = 1000  # fedlearn's Error code for an exception raised by a ClientApp
FIRST_NODE_ID = 1_000  # node ids are FIRST_NODE_ID + partition id: stable and readable


def copy_content(content: RecordDict) -> RecordDict:
    """A per-client copy: new records and Array objects; array bytes are immutable and shared."""
    out = RecordDict()
    for key, record in content.items():
        new = copy.copy(record)
        if hasattr(record, "items"):
            new = type(record)({k: copy.copy(v) for k, v in record.items()})
        out[key] = new
    return out


def call_client(app: ClientApp, message: Message, context: Context) -> tuple[Message, Context]:
    """Run ``app`` on one message; an exception becomes a Flower Error reply."""
    try:
        reply = app(message, context)
    except Exception as exc:  # noqa: BLE001 - any client failure is reported, not raised
        reply = error_reply(message, exc)
    reply.metadata.__dict__["_message_id"] = str(uuid.uuid4())
    return reply, context


def error_reply(message: Message, exc: BaseException) -> Message:
    """The Flower Error reply that reports a client's exception (logged as a warning)."""
    log.warning("client node %s failed: %s", message.metadata.dst_node_id, exc)
    log.debug("".join(traceback.format_exception(exc)))
    return Message(Error(CLIENT_EXCEPTION, f"{type(exc).__name__}: {exc}"), reply_to=message)


_WORKER_APP: ClientApp | None = None


def _init_worker(app: ClientApp, threads: int) -> None:
    global _WORKER_APP
    _WORKER_APP = app
    torch.set_num_threads(threads)
    # Ctrl-C (and a scheduler's SIGTERM) reach the whole process group: the parent
    # stops the run and then the pool; a worker finishes the client it is running
    # instead of printing a traceback. Workers end with the pool, or with the parent.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_exit_with, args=(os.getppid(),), daemon=True).start()


def _exit_with(parent: int) -> None:
    # A worker blocks on the pool's queue, whose pipe it holds both ends of: it would
    # outlive a parent killed outright (SIGKILL, OOM killer). Leave with it instead.
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _worker_call(message: Message, context: Context) -> tuple[Message, Context]:
    assert _WORKER_APP is not None
    return call_client(_WORKER_APP, message, context)


def call_many(
    app: ClientApp, messages: list[Message], contexts: list[Context], group_size: int | None
) -> list[tuple[Message, Context] | None]:
    """``messages`` through ``app``'s batched handler: a reply per message it takes (an
    Error reply for a client that failed), None for the others. If the handler itself
    fails, one at a time instead: each client that fails then gets its own Error reply."""
    handler = batched.handler_of(app)
    assert handler is not None
    try:
        replies = handler.run(messages, contexts, group_size)
    except Exception as exc:  # noqa: BLE001 - the clients' own failures come next
        log.debug("batched clients failed (%s); running them one at a time", exc)
        return [call_client(app, m, c) for m, c in zip(messages, contexts, strict=True)]
    out: list[tuple[Message, Context] | None] = []
    for msg, reply, context in zip(messages, replies, contexts, strict=True):
        if isinstance(reply, Exception):
            reply = error_reply(msg, reply)
        if reply is not None:
            reply.metadata.__dict__["_message_id"] = str(uuid.uuid4())
        out.append(None if reply is None else (reply, context))
    return out


def _worker_many(
    messages: list[Message], contexts: list[Context], group_size: int | None
) -> list[tuple[Message, Context] | None]:
    assert _WORKER_APP is not None
    return call_many(_WORKER_APP, messages, contexts, group_size)


def _start_method() -> str:
    # fork: workers start in milliseconds and share the already-loaded data
    # copy-on-write. Safe here because workers run torch with the thread count
    # set in _init_worker (torch resets its pool after fork). spawn elsewhere.
    return "fork" if "fork" in mp.get_all_start_methods() else "spawn"


def _check_counts(workers: int, threads: int) -> None:
    if workers < 1:
        raise ValueError(f"runtime.workers must be >= 1, got {workers}")
    if threads < 1:
        raise ValueError(f"runtime.client_threads must be >= 1, got {threads}")


class InProcessGrid(Grid):
    """A Grid over ``len(node_configs)`` virtual nodes running ``client_app``.

    Parameters
    ----------
    client_app : ClientApp
        The Flower ClientApp every node runs.
    node_configs : list of dict
        One Flower ``node_config`` per node (``partition-id``, ``num-partitions``).
    run_config : dict
        Flower ``run_config`` (flat scalars) shared by all nodes.
    workers : int
        Processes running clients in parallel; 1 runs them in this process.
    threads : int
        torch threads each client trains with, whatever ``workers`` is.
    vectorize : bool or str
        ``"auto"``: a round's messages go to the ClientApp's batched handler
        (:mod:`fedlearn.runtime.batched`) for the nodes whose handler says together is
        faster; True: for every node, or a one-line ValueError naming why one cannot;
        False: one message at a time.
    group_size : int, optional
        Clients per batched computation (None: the handler's choice). Results do not
        depend on it, nor on ``workers`` (each worker gets a share of the messages).
    """

    def __init__(
        self,
        client_app: ClientApp,
        node_configs: list[dict[str, Any]],
        run_config: dict[str, Any],
        workers: int = 1,
        threads: int = 1,
        run_id: int = 1,
        vectorize: bool | str = "auto",
        group_size: int | None = None,
    ) -> None:
        _check_counts(workers, threads)
        if group_size is not None and group_size < 1:
            raise ValueError(f"runtime.group_size must be >= 1 or null, got {group_size}")
        self.client_app = client_app
        self.workers = workers
        self.threads = threads
        self._run = Run.create_empty(run_id)
        set_server_identity(run_id)
        self.contexts = {
            FIRST_NODE_ID + i: Context(
                run_id=run_id,
                node_id=FIRST_NODE_ID + i,
                node_config=dict(nc),
                state=RecordDict(),
                run_config=dict(run_config),
            )
            for i, nc in enumerate(node_configs)
        }
        self._pool: ProcessPoolExecutor | None = None
        self._replies: dict[str, Message] = {}
        self.group_size = group_size
        self.batched_nodes = self._batched_nodes(batched.parse_vectorize(vectorize))

    # -- Grid interface ---------------------------------------------------------
    def set_run(self, run: Run) -> None:
        self._run = run
        set_server_identity(run.run_id)

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):  # noqa: ANN001, ANN201
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        messages = [self._prepare(m) for m in messages]
        for msg, (reply, ctx) in zip(messages, self._execute(messages), strict=True):
            self.contexts[msg.metadata.dst_node_id] = ctx
            self._replies[msg.metadata.message_id] = reply
        return [m.metadata.message_id for m in messages]

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        # Replies are complete when push returns: no polling, whatever the timeout.
        return list(self.pull_messages(self.push_messages(messages)))

    # -- execution --------------------------------------------------------------
    def _prepare(self, msg: Message) -> Message:
        node = msg.metadata.dst_node_id
        if node not in self.contexts:
            raise ValueError(f"message for unknown node {node}")
        out = Message(metadata=copy.copy(msg.metadata), content=copy_content(msg.content))
        out.metadata.__dict__["_message_id"] = str(uuid.uuid4())
        out.metadata.__dict__["_run_id"] = self._run.run_id
        return out

    def _batched_nodes(self, forced: bool | None) -> set[int]:
        """The nodes whose messages go to the ClientApp's batched handler."""
        handler = batched.handler_of(self.client_app) if forced is not False else None
        if handler is None:
            if forced:
                raise ValueError("runtime.vectorize=true: this ClientApp has no batched handler")
            return set()
        nodes, reasons = set(), []
        for node, context in self.contexts.items():
            reason = handler.refusal(context, forced=bool(forced))
            if reason is None:
                nodes.add(node)
            elif forced:
                raise ValueError(f"runtime.vectorize=true: {reason}; use auto or false")
            else:
                reasons.append(reason)
        if reasons:
            total = len(self.contexts)
            log.info("%d of %d clients run one at a time: %s", len(reasons), total, reasons[0])
        return nodes

    def _execute(self, messages: list[Message]) -> list[tuple[Message, Context]]:
        # The batched handler first, for its nodes; then, one at a time, the rest and
        # whatever it did not take.
        together = [
            i for i, m in enumerate(messages) if m.metadata.dst_node_id in self.batched_nodes
        ]
        pairs = {}
        if together:
            done = self._execute_batched([messages[i] for i in together])
            pairs = dict(zip(together, done, strict=True))
        alone = [i for i in range(len(messages)) if pairs.get(i) is None]
        if alone:
            pairs.update(zip(alone, self._execute_each([messages[i] for i in alone]), strict=True))
        return [pairs[i] for i in range(len(messages))]

    def _execute_batched(self, messages: list[Message]) -> list[tuple[Message, Context] | None]:
        contexts = [self.contexts[m.metadata.dst_node_id] for m in messages]
        if self.workers == 1:
            saved = torch.get_num_threads()
            torch.set_num_threads(self.threads)
            try:
                return call_many(self.client_app, messages, contexts, self.group_size)
            finally:
                torch.set_num_threads(saved)
        shares = batched.split(list(range(len(messages))), self.workers)
        runs = self._get_pool().map(
            _worker_many,
            [[messages[i] for i in share] for share in shares],
            [[contexts[i] for i in share] for share in shares],
            [self.group_size] * len(shares),
        )
        return [pair for run in runs for pair in run]

    def _execute_each(self, messages: list[Message]) -> list[tuple[Message, Context]]:
        contexts = [self.contexts[m.metadata.dst_node_id] for m in messages]
        if self.workers == 1:
            saved = torch.get_num_threads()
            torch.set_num_threads(self.threads)
            try:
                pairs = zip(messages, contexts, strict=True)
                return [call_client(self.client_app, m, c) for m, c in pairs]
            finally:
                torch.set_num_threads(saved)
        pool = self._get_pool()
        return list(pool.map(_worker_call, messages, contexts))

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=mp.get_context(_start_method()),
                initializer=_init_worker,
                initargs=(self.client_app, self.threads),
            )
        return self._pool

    def close(self, wait: bool = True) -> None:
        """Stop the worker processes: after the clients they are running (``wait``), or
        at once (a run that was interrupted or failed: nobody reads what they are doing,
        and Ctrl-C should not wait for a long client to finish). Workers ignore SIGINT
        and SIGTERM (the parent stops them), so they are killed; they hold nothing that
        outlives the round, which a resume redoes."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if wait:
            pool.shutdown(cancel_futures=True)
            return
        workers = list((getattr(pool, "_processes", None) or {}).values())  # no public handle
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in workers:
            proc.kill()
        for proc in workers:
            proc.join(timeout=10)

    # -- ClientStateStore (fedlearn.runtime.base) --------------------------------
    def client_states(self) -> dict[str, RecordDict]:
        """Every node's Context state (e.g. SCAFFOLD's control variates), by node id."""
        return {str(node): ctx.state for node, ctx in self.contexts.items()}

    def load_client_states(self, states: dict[str, RecordDict]) -> None:
        """Restore node states saved by :meth:`client_states`."""
        for node, st in states.items():
            if int(node) in self.contexts:
                self.contexts[int(node)].state = st


class InProcessRuntime(Runtime):
    """Clients called in this process (or its worker processes): ``conf/runtime/inprocess.yaml``.

    Parameters
    ----------
    workers : int, optional
        Processes running clients; None: one per CPU core. Results do not depend on it.
    client_threads : int
        torch threads per client, and for the server's own work.
    vectorize : bool or str
        ``auto``, True or False: a round's messages to the ClientApp's batched handler
        (see :class:`InProcessGrid`).
    group_size : int, optional
        Clients per batched computation (None: the handler's choice).
    """

    clients_here = True
    client_state = "server"  # the Grid holds every node's Context

    def __init__(
        self,
        workers: int | None = None,
        client_threads: int = 1,
        vectorize: bool | str = "auto",
        group_size: int | None = None,
    ) -> None:
        self.workers = (os.cpu_count() or 1) if workers is None else int(workers)
        self.threads = int(client_threads)
        _check_counts(self.workers, self.threads)
        batched.parse_vectorize(vectorize)  # a bad value fails here, before the run
        self.vectorize, self.group_size = vectorize, group_size

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
        """Run ``server_app`` on an :class:`InProcessGrid` over ``nodes``."""
        grid = InProcessGrid(
            client_app,
            nodes,
            run_config,
            self.workers,
            self.threads,
            vectorize=self.vectorize,
            group_size=self.group_size,
        )
        # The server's own work (aggregation, central evaluation) uses the same thread
        # count: small kernels run slower on two threads than on one, badly so when
        # the cores are busy.
        saved = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            server_app(grid, server_context(run_config, grid.run.run_id))
        except BaseException:  # Ctrl-C, SIGTERM, a ServerApp that raised: stop the workers now
            grid.close(wait=False)
            raise
        finally:
            torch.set_num_threads(saved)
            grid.close()

"""A ClientApp's batched handler: many messages at once, for a runtime that can use it.

Flower's ClientApp takes one Message at a time. A ClientApp may also *offer* a
handler for a round's messages together (:func:`offer`); a runtime that can use it
(:func:`handler_of`) hands it messages with their nodes' Contexts and gets back one
ordinary reply per message. The Message stays the boundary: how a handler computes
its replies (fedlearn's trains a group of clients in one vectorized computation) is
its own business, and any ClientApp without one runs one message at a time.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Protocol

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

_ATTRIBUTE = "batched_handler"


class BatchedHandler(Protocol):
    """What a runtime may call instead of the ClientApp, message by message."""

    def refusal(self, context: Context, forced: bool) -> str | None:
        """None when this node's messages may go to :meth:`run`; else why not, in one
        line. Unless ``forced``, also why not when together is not faster than alone."""

    def run(
        self, messages: Sequence[Message], contexts: Sequence[Context], group_size: int | None
    ) -> list[Message | Exception | None]:
        """One result per message, in order: its reply; the exception that client failed
        with (the runtime makes the Error reply, as for one message at a time); or None
        for a message it does not take (the runtime runs that one alone). Contexts are
        updated in place. If ``run`` raises, the runtime runs every message alone instead:
        the Contexts must then be in a state that gives what one at a time gives.
        ``group_size``: clients per computation (None: the handler decides)."""


def offer(app: ClientApp, handler: BatchedHandler | str) -> ClientApp:
    """Attach ``handler`` to ``app`` for runtimes that look for one, or name it as
    ``"module:attribute"`` of a class or factory, made when a runtime first asks
    (a handler that imports the app's own module would otherwise be an import circle).
    Returns ``app``."""
    setattr(app, _ATTRIBUTE, handler)
    return app


def handler_of(app: ClientApp) -> BatchedHandler | None:
    """The batched handler ``app`` offers, or None."""
    handler = getattr(app, _ATTRIBUTE, None)
    if isinstance(handler, str):
        module, _, name = handler.partition(":")
        handler = getattr(importlib.import_module(module), name)()
        setattr(app, _ATTRIBUTE, handler)
    return handler


def parse_vectorize(value: object) -> bool | None:
    """``runtime.vectorize``: True, False, or None for ``auto``; a one-line error otherwise."""
    text = str(value).lower()
    if text in ("auto", "none", "null"):
        return None
    if text in ("true", "false"):
        return text == "true"
    raise ValueError(f"runtime.vectorize={value}: allowed: auto, true, false")


def split(items: list, parts: int) -> list[list]:
    """``items`` in at most ``parts`` contiguous runs of near-equal length (none empty)."""
    parts = max(1, min(parts, len(items)))
    bounds = [round(i * len(items) / parts) for i in range(parts + 1)]
    return [items[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]

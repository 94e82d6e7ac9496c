"""Config as plain data across the server/client boundary.

The entry point turns the resolved Hydra config into Flower's ``run_config``:
a flat dict of scalars whose keys are dotted paths (``model.hidden``,
``dataset._target_``), the same flattening Flower applies to
``[tool.flwr.app.config]``. Clients rebuild the nested dicts they need with
:func:`section`. ``None`` values are dropped (the callee's default applies).
"""

from __future__ import annotations

from typing import Any

Scalar = bool | int | float | str

# Sections of the experiment config that clients need; the strategy stays on the server.
CLIENT_SECTIONS = ("dataset", "model", "partitioner", "client")
CLIENT_SCALARS = ("num_clients", "seed")


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Scalar]:
    """Flatten nested dicts to dotted keys; lists are refused (not a Flower scalar)."""
    out: dict[str, Scalar] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{path}."))
        elif value is None:
            continue
        elif isinstance(value, bool | int | float | str):
            out[path] = value
        else:
            raise ValueError(
                f"{path}: {type(value).__name__} values cannot go to clients; use scalars"
            )
    return out


def section(run_config: dict[str, Scalar], name: str) -> dict[str, Any]:
    """The nested dict under ``name`` (one level: ``model.hidden`` -> ``{"hidden": ...}``)."""
    prefix = f"{name}."
    return {k[len(prefix) :]: v for k, v in run_config.items() if k.startswith(prefix)}


def client_run_config(cfg: dict[str, Any]) -> dict[str, Scalar]:
    """The part of a resolved experiment config that clients receive."""
    tree = {k: cfg[k] for k in CLIENT_SECTIONS if k in cfg}
    tree.update({k: cfg[k] for k in CLIENT_SCALARS if k in cfg})
    return flatten(tree)

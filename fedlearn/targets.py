"""Which ``_target_``s a process builds datasets, models and partitioners from.

A client builds its dataset, model and partitioner from the run config a server
sends. That config is data, never code: a ``_target_`` in it is only a name,
looked up in this process's allow-list before anything is imported, and the
callable is called with the config's plain scalars as keyword arguments. No
Hydra instantiation key (``_partial_``, ``_args_``, ``_recursive_``,
``_convert_``, a nested ``_target_``) is honoured.

The allow-list holds

- the ``_target_`` of every YAML this installation ships in ``conf/dataset``,
  ``conf/model`` and ``conf/partitioner`` (fedlearn's own choices), and
- what the person running the process adds: ``fedlearn-client --allow-target
  pkg.mod:fn`` (or in a flags file, ``fedlearn-client @client.args``), or the
  environment variable ``FEDLEARN_ALLOW_TARGETS`` (comma-separated). A
  simulation allows the targets of its own config: its user owns the clients.

Additions live in the environment, so the worker processes and local Ray actors
a simulation starts allow the same targets as the process that started them.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ENV = "FEDLEARN_ALLOW_TARGETS"
GROUPS = ("dataset", "model", "partitioner")
_CONF = Path(__file__).parent / "conf"
_SCALARS = (bool, int, float, str, type(None))


class NotAllowed(ValueError):
    """A config names something this process does not build; the message is one line."""


def normalize(target: str) -> str:
    """``pkg.mod:fn`` and ``pkg.mod.fn`` name the same callable; the dotted form is kept."""
    return target.strip().replace(":", ".")


@cache
def shipped(group: str) -> frozenset[str]:
    """The ``_target_`` of each YAML of config group ``group`` in this installation."""
    out = set()
    for path in sorted((_CONF / group).glob("*.yaml")):
        target = (yaml.safe_load(path.read_text()) or {}).get("_target_")
        if isinstance(target, str):
            out.add(normalize(target))
    return frozenset(out)


def _added() -> frozenset[str]:
    return frozenset(normalize(t) for t in os.environ.get(ENV, "").split(",") if t.strip())


def allowed(group: str) -> frozenset[str]:
    """Every target this process builds for ``group``: the shipped ones plus the added."""
    return shipped(group) | _added()


def allow(more: Iterable[str]) -> None:
    """Allow ``more`` targets in this process and the processes it starts from now on."""
    new = sorted(_added() | {normalize(t) for t in more if t.strip()})
    os.environ[ENV] = ",".join(new)


def allow_config(cfg: dict[str, Any]) -> None:
    """Allow the dataset, model and partitioner targets of a user's own config."""
    allow(
        str(cfg[g]["_target_"])
        for g in GROUPS
        if isinstance(cfg.get(g), dict) and cfg[g].get("_target_")
    )


def _kwargs(cfg: dict[str, Any], group: str) -> dict[str, Any]:
    """The config's settings as plain keyword arguments; anything else is refused."""
    out = {}
    for key, value in cfg.items():
        if key == "_target_":
            continue
        if key.startswith("_") or "." in key:
            raise NotAllowed(
                f"{group}.{key}: instantiation and nested keys are not honoured; a {group}"
                " takes plain settings only"
            )
        if not isinstance(value, _SCALARS):
            raise NotAllowed(
                f"{group}.{key}: a {type(value).__name__} value is not a plain setting;"
                " allowed: bool, int, float, str, null"
            )
        out[key] = value
    return out


def check(cfg: dict[str, Any], group: str) -> tuple[str, dict[str, Any]]:
    """The allowed target ``cfg`` names (dotted) and its keyword arguments; imports nothing.

    Raises
    ------
    NotAllowed
        In one line naming the setting, when the target is not on this process's
        allow-list or a setting is not plain data.
    """
    target = cfg.get("_target_")
    if not isinstance(target, str) or not target.strip():
        raise NotAllowed(f"{group}._target_ is missing; name a {group} (conf/{group}/*.yaml)")
    name = normalize(target)
    kwargs = _kwargs(cfg, group)
    if name not in allowed(group):
        own = ", ".join(sorted(shipped(group)))
        raise NotAllowed(
            f"{group}._target_={target} is not allowed on this client: it builds {own}"
            f" and what its owner allows (fedlearn-client --allow-target {name})"
        )
    return name, kwargs


def locate(cfg: dict[str, Any], group: str) -> tuple[Callable[..., Any], dict[str, Any]]:
    """The allowed callable ``cfg["_target_"]`` names, imported, and its keyword arguments.

    Raises
    ------
    NotAllowed
        As :func:`check` does, before anything is imported.
    """
    from hydra.utils import get_object

    name, kwargs = check(cfg, group)
    return get_object(name), kwargs


def call(fn: Callable[..., Any], group: str, **kwargs: Any) -> Any:
    """``fn(**kwargs)``; settings ``fn`` does not take are refused in one line first."""
    try:
        inspect.signature(fn).bind(**kwargs)
    except TypeError as err:
        name = getattr(fn, "__qualname__", repr(fn))
        params = inspect.signature(fn).parameters
        known = ", ".join(p for p in params if p not in ("self", "input_shape", "num_classes"))
        raise ValueError(
            f"{group}: {name} refuses these settings ({err}); it takes: {known}"
        ) from None
    except ValueError:  # no signature to check (a builtin): let the call decide
        pass
    return fn(**kwargs)

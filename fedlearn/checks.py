"""Checks of user-supplied settings, each failing with one line that names the
setting and what is allowed. Run once, at the edge, before anything starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CONF_DIR = Path(__file__).parent / "conf"
GROUPS = ("strategy", "model", "dataset", "partitioner", "runtime", "experiment", "dp", "logger")


class ConfigError(ValueError):
    """A setting the user can fix; its message is one line."""


def choices(group: str) -> list[str]:
    """The YAML names available in a config group."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def check_choices(overrides: list[str]) -> None:
    """Refuse ``group=name`` overrides naming no YAML of that group (lists the choices)."""
    for item in overrides:
        key, sep, value = item.lstrip("+~").partition("=")
        if not sep or key not in GROUPS:
            continue
        for name in value.replace("[", "").replace("]", "").split(","):  # a,b sweeps; [a,b] lists
            if name not in ("null", "") and name not in choices(key):
                raise ConfigError(f"unknown {key} '{name}'; choose from: {', '.join(choices(key))}")


def _positive_int(cfg: dict[str, Any], path: str) -> int:
    node: Any = cfg
    for part in path.split("."):
        node = node[part]
    if not isinstance(node, int) or isinstance(node, bool) or node < 1:
        raise ConfigError(f"{path} must be an integer >= 1, got {node!r}")
    return node


def _check_device(key: str, device: Any, on_this_machine: bool) -> None:
    import torch  # here: the checks above run before torch is needed

    from fedlearn.training import resolve_device  # the one place that knows what is here

    allowed = "auto | cpu | cuda | cuda:N | mps"
    try:
        if on_this_machine:
            resolve_device(str(device))
        elif device != "auto":
            torch.device(str(device))
    except RuntimeError:
        raise ConfigError(f"{key}={device} is not a device; allowed: {allowed}") from None
    except ValueError:  # resolve_device: CUDA named, none here
        raise ConfigError(
            f"{key}={device} but CUDA is not available here; use auto or cpu"
        ) from None


def num_sampled(strategy: dict[str, Any], num_clients: int, key: str = "train") -> int:
    """How many clients the strategy samples per round (Flower FedAvg's rule)."""
    fraction = float(strategy.get(f"fraction_{key}", 1.0))
    minimum = int(strategy.get(f"min_{key}_nodes", 2))
    return max(int(num_clients * fraction), minimum)


def check_experiment(cfg: dict[str, Any], clients_here: bool = True) -> None:
    """All settings that can be checked before data or models are built.

    ``clients_here``: the runtime runs the clients on this machine, so the device
    they are given must exist here (``Runtime.clients_here``); elsewhere only its
    spelling is checked (a Ray cluster's or a remote client's GPU)."""
    n = _positive_int(cfg, "num_clients")
    _positive_int(cfg, "num_rounds")
    _positive_int(cfg, "client.local_epochs")
    _positive_int(cfg, "client.batch_size")
    if not float(cfg["client"]["lr"]) > 0:
        raise ConfigError(f"client.lr must be > 0, got {cfg['client']['lr']}")
    ef = float(cfg["client"].get("eval_fraction", 0.2))
    if not 0.0 <= ef < 1.0:
        raise ConfigError(f"client.eval_fraction must be in [0, 1), got {ef}")
    st = cfg["strategy"]
    name = st["_target_"].rsplit(".", 1)[-1]
    for key, low_open in (("fraction_train", True), ("fraction_evaluate", False)):
        if key in st:
            f = float(st[key])
            if not ((0.0 < f if low_open else 0.0 <= f) and f <= 1.0):
                allowed = "(0, 1]" if low_open else "[0, 1]"
                raise ConfigError(f"strategy.{key} must be in {allowed}, got {f}")
    for key in ("min_train_nodes", "min_evaluate_nodes", "min_available_nodes"):
        if key in st and int(st[key]) > n:
            raise ConfigError(f"strategy.{key}={st[key]} exceeds num_clients={n}; allowed: 0..{n}")
    sampled = num_sampled(st, n)
    f = int(st.get("num_malicious_nodes", 0))
    need = {"Krum": 2 * f + 3, "MultiKrum": 2 * f + 3, "Bulyan": 4 * f + 3}.get(name)
    if need is not None and sampled < need:
        raise ConfigError(
            f"strategy={name.lower()} with num_malicious_nodes={f} needs at least {need} clients"
            f" per round, but samples {sampled} (num_clients={n},"
            f" fraction_train={st.get('fraction_train', 1.0)})"
        )
    if name == "MultiKrum" and int(st.get("num_nodes_to_select", 1)) > sampled:
        raise ConfigError(
            f"strategy.num_nodes_to_select={st['num_nodes_to_select']} exceeds the {sampled}"
            " clients sampled per round"
        )
    seed = cfg.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
    _check_device("client.device", cfg["client"].get("device", "auto"), clients_here)
    srv = cfg.get("server", {})
    _check_device("server.device", srv.get("device", "auto"), True)
    if float(srv.get("round_timeout", 1)) <= 0:
        raise ConfigError(f"server.round_timeout must be > 0, got {srv['round_timeout']}")
    if int(srv.get("checkpoint_every", 0)) < 0:
        raise ConfigError(f"server.checkpoint_every must be >= 0, got {srv['checkpoint_every']}")
    bound = srv.get("max_update_norm")
    if bound is not None and (
        isinstance(bound, bool) or not isinstance(bound, int | float) or not bound > 0
    ):
        raise ConfigError(f"server.max_update_norm must be a number > 0 or null, got {bound!r}")

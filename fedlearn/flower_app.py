"""Any Flower app, named the way ``flwr run`` names it, ready for fedlearn's runtimes.

An app is given by the ``app`` settings (``conf/config.yaml``):

- ``app=<folder>`` (short for ``app.path=``): a folder whose ``pyproject.toml``
  has ``[tool.flwr.app.components]`` (``serverapp``, ``clientapp``) and
  ``[tool.flwr.app.config]``, the layout ``flwr new`` makes; or the name of an
  installed package with that ``pyproject.toml`` beside it (``pip install -e``).
- ``app.server=module:attr app.client=module:attr``: the two objects directly
  (they replace the folder's components when both are given).
- ``app.config.KEY=VALUE``: run-config overrides, like ``flwr run --run-config``;
  a key the app's config does not have is refused.

Flower's own functions read the file and resolve the components
(``flwr.cli.config_utils.load``, ``flwr.common.config.flatten_dict`` /
``fuse_dicts``, ``flwr.supercore.object_ref.load_app``). Every mistake a user
can make here is one line naming the setting (:class:`~fedlearn.checks.ConfigError`).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedlearn.checks import ConfigError

if TYPE_CHECKING:  # Flower is imported when an app is loaded, not by the console scripts
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp

PYPROJECT = "pyproject.toml"


@dataclass
class FlowerApp:
    """A loaded Flower app: its two components and its resolved run config."""

    name: str
    server: ServerApp
    client: ClientApp
    client_ref: str
    run_config: dict[str, Any]
    num_nodes: int | None = None  # the app's own federation setting (num-supernodes)
    folder: Path | None = None


def selected(app_cfg: dict[str, Any] | None) -> bool:
    """Whether the ``app`` settings name a Flower app (else fedlearn's own runs)."""
    app_cfg = app_cfg or {}
    return bool(app_cfg.get("path") or app_cfg.get("server") or app_cfg.get("client"))


def hydra_overrides(args: list[str]) -> list[str]:
    """Command-line spellings for Hydra: ``app=X`` -> ``app.path=X``, and run-config
    keys added without a ``+`` (Hydra knows them only once the app is read)."""
    out = []
    for arg in args:
        if arg.startswith("app="):
            arg = "app.path=" + arg[len("app=") :]
        elif arg.startswith("app.config."):
            arg = "+" + arg
        out.append(arg)
    return out


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def _folder(spec: str) -> Path:
    """The app's folder: ``spec`` itself, or the source folder of an installed package."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path.resolve()
    if all(part.isidentifier() for part in spec.split(".")):
        found = importlib.util.find_spec(spec.split(".")[0])
        if found is not None and found.submodule_search_locations:
            pkg = Path(list(found.submodule_search_locations)[0])
            for folder in (pkg, pkg.parent):
                if (folder / PYPROJECT).is_file():
                    return folder
            raise ConfigError(
                f"app.path={spec}: the installed package has no {PYPROJECT} beside it;"
                " give the app's folder, or app.server=module:attr app.client=module:attr"
            )
    raise ConfigError(f"app.path={spec}: no such folder or installed package")


def _pyproject(folder: Path, spec: str) -> dict[str, Any]:
    from flwr.cli.config_utils import load

    if not (folder / PYPROJECT).is_file():
        raise ConfigError(f"app.path={spec}: no {PYPROJECT} in {folder}; not a Flower app")
    config = load(folder / PYPROJECT)
    if config is None:
        raise ConfigError(f"app.path={spec}: {folder / PYPROJECT} is not valid TOML")
    app = config.get("tool", {}).get("flwr", {}).get("app")
    if not isinstance(app, dict):
        raise ConfigError(
            f"app.path={spec}: {PYPROJECT} has no [tool.flwr.app] section; not a Flower app"
        )
    components = app.get("components") or {}
    missing = [k for k in ("serverapp", "clientapp") if not components.get(k)]
    if missing:
        raise ConfigError(
            f"app.path={spec}: [tool.flwr.app.components] has no {' or '.join(missing)}"
        )
    return config


def _component(ref: str, kind: type, setting: str, folder: Path | None) -> Any:
    """Import ``module:attr`` (from ``folder`` first) and check it is a ``kind``."""
    from flwr.supercore.object_ref import load_app

    try:
        obj = load_app(ref, ConfigError, project_dir=folder)
    except ConfigError as err:
        raise ConfigError(f"{setting}={ref}: {str(err).strip().splitlines()[0]}") from None
    except Exception as err:  # noqa: BLE001 - whatever the module raises on import
        raise ConfigError(f"{setting}={ref} does not import ({_first_line(err)})") from None
    if not isinstance(obj, kind):
        raise ConfigError(f"{setting}={ref} is a {type(obj).__name__}, not a flwr {kind.__name__}")
    return obj


def _importable(folder: Path) -> None:
    """Put the app's folder on this process's path and on its children's (worker
    processes, Ray's, client processes), as ``flwr run`` installs the app for its own."""
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if str(folder) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(folder), *filter(None, paths)])


def run_config(defaults: dict[str, Any], overrides: dict[str, Any], check: bool) -> dict:
    """The app's config with ``app.config`` overrides applied (Flower's own fusing);
    with ``check``, a key the app's config does not have is refused."""
    from flwr.common.config import flatten_dict, fuse_dicts

    try:
        flat_defaults, flat = flatten_dict(defaults), flatten_dict(overrides)
    except ValueError as err:
        raise ConfigError(f"app.config: {str(err).splitlines()[0]}") from None
    if not check:
        return {**flat_defaults, **flat}
    try:
        return fuse_dicts(flat_defaults, flat)
    except ValueError:
        key = sorted(set(flat) - set(flat_defaults))[0]
        known = ", ".join(sorted(flat_defaults)) or "none"
        raise ConfigError(
            f"app.config.{key}: the app has no run-config key '{key}'; its keys: {known}"
        ) from None


def _federation_nodes(config: dict[str, Any]) -> int | None:
    """``options.num-supernodes`` of the default federation in ``[tool.flwr.federations]``
    (the layout before Flower moved federations to ~/.flwr/config.toml)."""
    feds = config.get("tool", {}).get("flwr", {}).get("federations") or {}
    fed = feds.get(feds.get("default", ""), {})
    n = fed.get("options", {}).get("num-supernodes") if isinstance(fed, dict) else None
    return int(n) if isinstance(n, int) and n > 0 else None


def load(app_cfg: dict[str, Any]) -> FlowerApp:
    """Load the Flower app the ``app`` settings name (one-line ConfigError otherwise)."""
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp

    spec = app_cfg.get("path")
    server_ref, client_ref = app_cfg.get("server"), app_cfg.get("client")
    config: dict[str, Any] = {}
    folder = None
    if spec:
        folder = _folder(str(spec))
        config = _pyproject(folder, str(spec))
        components = config["tool"]["flwr"]["app"]["components"]
        server_ref = server_ref or components["serverapp"]
        client_ref = client_ref or components["clientapp"]
        _importable(folder)
    elif server_ref and client_ref:
        _importable(Path.cwd())  # where flwr's loader looks for them, as `flwr run .` does
    else:
        given = "app.server" if server_ref else "app.client"
        raise ConfigError(f"{given} needs its pair: app.server=module:attr app.client=module:attr")
    defaults = config.get("tool", {}).get("flwr", {}).get("app", {}).get("config") or {}
    return FlowerApp(
        name=str(config.get("project", {}).get("name") or server_ref),
        server=_component(str(server_ref), ServerApp, "app.server", folder),
        client=_component(str(client_ref), ClientApp, "app.client", folder),
        client_ref=str(client_ref),
        run_config=run_config(defaults, dict(app_cfg.get("config") or {}), bool(spec)),
        num_nodes=_federation_nodes(config),
        folder=folder,
    )

"""Console scripts. Thin: compose the config with Hydra, call a plain function.

Errors a user can cause (a bad setting, an impossible partition) end the
command with one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import gc
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig

from fedlearn.checks import ConfigError, check_choices
from fedlearn.flower_app import hydra_overrides
from fedlearn.records import RunFailed


def _quiet_flower() -> None:
    # Flower logs every sampling and aggregation step at INFO; the progress bar says it better.
    logging.getLogger("flwr").setLevel(logging.WARNING)


# What a user can cause: a bad setting, an impossible partition, a missing file, and
# Hydra's reports of a setting that does not compose or a config that does not instantiate.
USER_ERRORS = (ConfigError, ValueError, FileNotFoundError, HydraException)


def fail(err: BaseException) -> None:
    """Print a user error as one line and exit 2."""
    text = str(err)
    if isinstance(err, HydraException):  # its first two lines say it all
        text = unknown_setting(text, sys.argv[1:]) or " ".join(text.split("\n")[:2]).strip()
    print(f"fedlearn: error: {text}", file=sys.stderr)
    sys.exit(2)


def unknown_setting(text: str, argv: list[str]) -> str | None:
    """For Hydra's "Could not override 'a.b'": which settings ``a`` does have (Hydra's
    own advice, ``+a.b=...``, only moves the error to the object that refuses it)."""
    match = re.search(r"Could not override '([^']+)'", text)
    if match is None:
        return None
    key = match.group(1)
    parent, _, leaf = key.rpartition(".")
    from fedlearn.experiment import compose_config

    others = []
    for arg in argv:
        name, _, value = arg.partition("=")
        if arg.startswith(("-", "hydra.", "hydra/", "+hydra")) or name.lstrip("+~") == key:
            continue
        if "(" in value:  # a sweep function (range, choice, ...): the default will do
            continue
        others.append(f"{name}={value.split(',')[0]}")  # a sweep list: its first value
    try:
        node = compose_config(others)
        for part in parent.split(".") if parent else []:
            node = node[part]
    except Exception:  # noqa: BLE001 - no better advice than Hydra's
        return None
    if not hasattr(node, "keys"):
        return None
    known = ", ".join(sorted(str(k) for k in node.keys() if k != "_target_"))
    where = parent or "the config"
    return f"{key}: {where} has no setting '{leaf}'; its settings: {known} (+{key}=... adds one)"


def _interrupt(signum: int, frame: object) -> None:  # noqa: ARG001 - a signal handler
    raise KeyboardInterrupt


def interrupted(stop: KeyboardInterrupt) -> None:
    """Ctrl-C or SIGTERM: one line saying where the run is kept; exit 130."""
    run_dir = getattr(stop, "run_dir", None)
    where = f"; every finished round is in {run_dir}"
    if getattr(stop, "resumable", True):
        where += f": continue with resume={run_dir}"
    print(f"fedlearn: interrupted{where if run_dir else ''}", file=sys.stderr)
    sys.exit(130)


def guarded(main: Callable[[], object], hydra_args: bool = False) -> Callable[[], None]:
    """Run ``main``; turn a user error into one line on stderr and exit code 2.

    Hydra is told to raise what it would print over several lines (a setting that
    does not compose, a config that does not instantiate), so it ends here in one line.

    ``hydra_args``: the command is a Hydra app (``fedlearn-simulate``).
    """

    def wrapper() -> None:
        os.environ["HYDRA_FULL_ERROR"] = "1"
        main_thread = threading.current_thread() is threading.main_thread()
        if main_thread:  # a scheduler's stop, like Ctrl-C (only the main thread may set it)
            previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            sys.argv[1:] = hydra_overrides(sys.argv[1:])  # app=<folder>, app.config.KEY=...
            check_choices(sys.argv[1:])
            if hydra_args:
                import fedlearn.experiment  # noqa: F401 - torch, Flower: imported once, here

                # Everything imported so far lives as long as the process: out of the
                # garbage collector's reach, its full collections stay cheap.
                gc.freeze()
            main()
        except USER_ERRORS as err:
            fail(err)
        except KeyboardInterrupt as stop:
            interrupted(stop)
        except RunFailed as err:  # the ServerApp raised: its folder says how far it got
            print(f"fedlearn: run failed: {err}", file=sys.stderr)
            sys.exit(1)
        finally:
            if main_thread:
                signal.signal(signal.SIGTERM, previous)
            # The process ends here: spare the interpreter's last full collection over
            # every object torch made (about 0.6 s; simulations/bench/bench_simulate.py).
            gc.freeze()

    wrapper.__doc__ = main.__doc__
    return wrapper


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def _simulate(cfg: DictConfig) -> None:
    from fedlearn.experiment import run

    _quiet_flower()
    hc = HydraConfig.get()
    try:  # inside the task: Hydra would print its own traceback for anything raised
        run(cfg, Path(hc.runtime.output_dir), list(hc.overrides.task))
    except USER_ERRORS as err:
        fail(err)


simulate = guarded(_simulate, hydra_args=True)
simulate.__doc__ = "fedlearn-simulate: run a federated simulation (Hydra overrides as arguments)."


def server() -> None:
    """fedlearn-server: a gRPC coordinator for real clients."""
    from fedlearn.runtime.grpc.cli import server_main

    guarded(server_main)()


def client() -> None:
    """fedlearn-client: a gRPC client process."""
    from fedlearn.runtime.grpc.cli import client_main

    guarded(client_main)()


def launch() -> None:
    """fedlearn-launch: one server and N client processes on this machine."""
    from fedlearn.runtime.grpc.cli import launch_main

    guarded(launch_main)()


def provision() -> None:
    """fedlearn-provision: start-up kits (certificates, keys, tokens, commands) per machine."""
    from fedlearn.runtime.grpc.provision import main

    guarded(main)()


def compare() -> None:
    """fedlearn-compare: sweep strategies x seeds and report, or rebuild a report."""
    from fedlearn.compare import main

    guarded(main)()

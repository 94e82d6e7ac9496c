"""Entry points of the gRPC runtime: ``fedlearn-server``, ``fedlearn-client``, ``fedlearn-launch``.

``fedlearn.cli`` wraps each in its one-line error handling. The server and the
launcher take the same Hydra overrides as ``fedlearn-simulate`` (the settings
of ``conf/runtime/grpc.yaml`` under ``runtime.``); the client takes plain flags.

Examples
--------
fedlearn-server num_clients=3 num_rounds=5 runtime.address=0.0.0.0:9092 \\
    runtime.tls.cert=server.pem runtime.tls.key=server.key runtime.auth_tokens=tokens.txt
fedlearn-client --server host:9092 --tls-ca ca.pem --token-file me.token \\
    --partition-id 0 --num-partitions 3
fedlearn-launch num_clients=4 num_rounds=3        # server + 4 clients on this machine
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from fedlearn.runtime.grpc.settings import log

_MODE: dict[str, bool] = {"serve_only": True}


@hydra.main(config_path="../../conf", config_name="config", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    from fedlearn.cli import USER_ERRORS, fail
    from fedlearn.experiment import run

    logging.getLogger("flwr").setLevel(logging.WARNING)
    hc = HydraConfig.get()
    # runtime=grpc is this command's own choice, not a user override (resume refuses those).
    overrides = [o for o in hc.overrides.task if not o.startswith("runtime=")]
    try:
        result = run(cfg, Path(hc.runtime.output_dir), overrides)
    except USER_ERRORS as err:
        fail(err)
    if result.get("status") != "completed":
        print(f"fedlearn: run {result.get('status')}: {result.get('error')}", file=sys.stderr)
        sys.exit(1)


def _with_runtime(serve_only: bool) -> None:
    for arg in sys.argv[1:]:
        if arg.startswith("runtime=") and arg != "runtime=grpc":
            raise ValueError(f"{arg}: this command runs runtime=grpc only")
    sys.argv.append("runtime=grpc")
    if serve_only:
        sys.argv.append("runtime.local_clients=0")


def server_main() -> None:
    """``fedlearn-server``: serve one run to clients that connect over gRPC."""
    _with_runtime(serve_only=True)
    _hydra_main()


def launch_main() -> None:
    """``fedlearn-launch``: a server and ``num_clients`` client processes on this machine."""
    _with_runtime(serve_only=False)
    _hydra_main()


def _value(text: str) -> Any:
    """``3`` -> 3, ``0.5`` -> 0.5, ``true`` -> True, anything else stays a string."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def _pairs(items: list[str], flag: str, prefix: str = "") -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} {item!r}: expected KEY=VALUE")
        out[prefix + key] = _value(value)
    return out


def client_parser() -> argparse.ArgumentParser:
    """The ``fedlearn-client`` command line."""
    p = argparse.ArgumentParser(
        prog="fedlearn-client",
        description=__doc__.split("\n")[0],
        fromfile_prefix_chars="@",  # fedlearn-client @client.args: flags from a file, one a line
    )
    p.add_argument("--server", required=True, help="server host:port")
    p.add_argument(
        "--app",
        default="fedlearn.app.client_app:app",
        help="the Flower ClientApp to run, module:attribute (named here, never by the server)",
    )
    p.add_argument(
        "--allow-target",
        action="append",
        default=[],
        metavar="MODULE:NAME",
        help="also build this dataset loader, model or partitioner when the server's run"
        " config names it (fedlearn's own are always allowed; repeat for more)",
    )
    node = p.add_argument_group("node (Flower node_config)")
    node.add_argument("--partition-id", type=int, help="this client's partition of the dataset")
    node.add_argument("--num-partitions", type=int, help="partitions in total")
    node.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="own local data: dataset settings, e.g. --data root=/data/me",
    )
    node.add_argument(
        "--node-config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other node_config entry",
    )
    node.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    node.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    sec = p.add_argument_group("security")
    sec.add_argument("--insecure", action="store_true", help="plaintext (no TLS)")
    sec.add_argument("--tls-ca", help="CA certificate that signed the server's (PEM)")
    sec.add_argument("--tls-cert", help="this client's certificate (PEM), for mutual TLS")
    sec.add_argument("--tls-key", help="this client's private key (PEM), for mutual TLS")
    sec.add_argument("--token-file", help="file holding this client's token")
    p.add_argument("--node-name", help="node name when the server has no authentication")
    p.add_argument(
        "--id-file",
        help="keep a generated node name in this file, so a restarted"
        " client is the same node (servers without authentication)",
    )
    p.add_argument(
        "--state-file",
        help="keep this node's client state (SCAFFOLD, FedDyn, ...) in this file, so a"
        " restarted client carries on with it in the same run",
    )
    p.add_argument(
        "--reconnect-timeout",
        type=float,
        default=300.0,
        help="give up after this many seconds without a connection",
    )
    p.add_argument("--log-level", default="INFO")
    return p


def persisted_name(path: str | None) -> str | None:
    """The node name kept in ``path`` (``--id-file``), created on first use."""
    if not path:
        return None
    file = Path(path).expanduser()
    if file.is_file() and file.read_text().strip():
        return file.read_text().strip()
    import socket
    import uuid

    name = f"{socket.gethostname()}-{uuid.uuid4().hex[:12]}"
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(name + "\n")
    return name


def client_settings(args: argparse.Namespace) -> Any:
    """ClientSettings from parsed flags (one-line ValueError on a bad combination)."""
    from fedlearn.runtime.grpc.client import ClientSettings
    from fedlearn.runtime.grpc.preflight import split_address

    split_address(args.server, "--server")  # before anything is said about the connection
    node_config = _pairs(args.node_config, "--node-config")
    node_config.update(_pairs(args.data, "--data", prefix="dataset."))
    if args.partition_id is not None:
        if args.num_partitions is None or not 0 <= args.partition_id < args.num_partitions:
            raise ValueError("--partition-id needs --num-partitions N and 0 <= id < N")
        node_config.update(
            {"partition-id": args.partition_id, "num-partitions": args.num_partitions}
        )
    if args.device:
        node_config["device"] = args.device
    if not args.insecure and not args.tls_ca:
        raise ValueError("--tls-ca is required (TLS is on by default); --insecure for plaintext")
    if args.insecure:
        log.warning("--insecure: plaintext connection to %s", args.server)
    return ClientSettings(
        address=args.server,
        node_config=node_config,
        app=args.app,
        insecure=args.insecure,
        tls_ca=args.tls_ca,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        token_file=args.token_file,
        node_name=args.node_name or persisted_name(args.id_file),
        reconnect_timeout=args.reconnect_timeout,
        state_file=args.state_file,
    )


def allowed_targets(args: argparse.Namespace) -> list[str]:
    """What this client's owner allows beyond fedlearn's own targets: ``--allow-target``,
    and a ``_target_`` they set themselves with ``--data``."""
    own = [str(v) for k, v in _pairs(args.data, "--data").items() if k == "_target_"]
    return [*args.allow_target, *own]


def client_main(argv: list[str] | None = None) -> None:
    """``fedlearn-client``: join a server, train when asked, exit when the run is over."""
    from fedlearn import targets

    args = client_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("flwr").setLevel(logging.WARNING)
    settings = client_settings(args)
    targets.allow(allowed_targets(args))
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from fedlearn.runtime.grpc.client import run_client

    sys.exit(run_client(settings))


if __name__ == "__main__":  # python -m fedlearn.runtime.grpc.cli {server,client,launch} ...
    from fedlearn.cli import guarded

    command = sys.argv.pop(1) if len(sys.argv) > 1 else ""
    mains = {"server": server_main, "client": client_main, "launch": launch_main}
    if command not in mains:
        sys.exit("usage: python -m fedlearn.runtime.grpc.cli {server,client,launch} ...")
    guarded(mains[command])()

"""``fedlearn-provision``: one start-up kit per machine of a gRPC deployment.

As NVIDIA FLARE's provisioning does for its sites, one command makes
everything each machine needs, and nothing it must not hold::

    fedlearn-provision --server coordinator.example.org 10.0.0.5 --clients alice bob
    fedlearn-provision --add --clients carol      # same CA: the other kits stay valid
    fedlearn-provision --revoke bob               # bob's line leaves the server's tokens

writes into ``--out`` (default ``kits``)::

    ca/              ca.key, ca.pem, provision.json: stays here, in no kit
    server/          ca.pem, server.pem (subjectAltName: the --server names),
                     server.key, tokens.txt, start.sh, README.md
    clients/<name>/  ca.pem, client.token, client.pem + client.key (--mtls),
                     start.sh, README.md

Folders are 0700; keys and tokens are 0600 from their first byte. A kit's
``start.sh`` is the exact ``fedlearn-server`` / ``fedlearn-client`` command.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
import shutil
from pathlib import Path

from cryptography import x509

from fedlearn.runtime.grpc import certs, kits
from fedlearn.runtime.grpc.kits import Plan
from fedlearn.runtime.grpc.secret_files import (
    PUBLIC_MODE,
    check_private,
    private_dir,
    write_private,
)

_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
# Safe as a file name on any system and as a certificate's CN (at most 64 characters).
_CLIENT = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62}[A-Za-z0-9_-])?")
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10))}
_RESERVED |= {f"lpt{i}" for i in range(10)}
TOKENS_HEADER = (
    "# fedlearn-provision: one '<client-name> <token>' line per client. Delete a line to"
    " refuse\n# that client: the server reads this file again when it changes.\n"
)


def server_host(text: str) -> str:
    """A server name for its certificate: an IP address or a DNS host name (one-line error)."""
    host = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        name = host[:-1] if host.endswith(".") else host
        labels = name.split(".")
        if len(name) <= 253 and all(_LABEL.fullmatch(x) for x in labels):
            if not labels[-1].isdigit():  # 10.0.0.256 is no name either
                return name
        raise ValueError(f"--server {text!r}: neither a host name nor an IP address") from None
    if ip.is_unspecified:
        raise ValueError(f"--server {text}: a wildcard address; give one clients can dial")
    return str(ip)


def client_names(names: list[str], taken: list[str]) -> list[str]:
    """Check new client names: file-name safe, no repeats among them or with ``taken``."""
    old = {n.casefold() for n in taken}  # Alice and alice: one folder on some file systems
    seen: set[str] = set()
    for name in names:
        if not _CLIENT.fullmatch(name) or name.split(".")[0].casefold() in _RESERVED:
            raise ValueError(
                f"--clients {name!r}: not safe as a file name; use 1-64 letters, digits, '.',"
                " '_' or '-', starting with a letter or digit (and no name Windows reserves)"
            )
        key = name.casefold()
        if key in old:
            raise ValueError(
                f"--clients {name}: provisioned already (a revoked name is not given out again)"
            )
        if key in seen:
            raise ValueError(f"--clients {name}: repeats")
        seen.add(key)
    return names


def _ca_files(out: Path) -> tuple[Path, Path, Path]:
    ca = out / "ca"
    return ca / "ca.pem", ca / "ca.key", ca / "provision.json"


def _expiry(cert: x509.Certificate) -> str:
    return cert.not_valid_after_utc.date().isoformat()


def _write_client(out: Path, plan: Plan, ca: certs.Authority, name: str) -> str:
    """Client ``name``'s kit; returns its token."""
    kit = private_dir(out / "clients" / name)
    write_private(kit / kits.CA, certs.cert_pem(ca.cert), mode=PUBLIC_MODE)
    token = certs.new_token()
    write_private(kit / kits.TOKEN, f"{token}\n".encode())
    until = None
    if plan.mtls:
        key, cert = certs.issue(ca, name, days=plan.days)
        certs.write_pair(key, cert, kit / kits.CLIENT_CERT, kit / kits.CLIENT_KEY)
        until = _expiry(cert)
    write_private(kit / kits.START, kits.client_script(plan, name).encode(), mode=0o700)
    write_private(
        kit / kits.README, kits.client_readme(plan, name, until).encode(), mode=PUBLIC_MODE
    )
    return token


def _write_server_texts(out: Path, plan: Plan) -> None:
    """The server kit's command and README (rewritten when clients change)."""
    kit = out / "server"
    cert = x509.load_pem_x509_certificate((kit / kits.SERVER_CERT).read_bytes())
    readme = kits.server_readme(plan, _expiry(cert)).encode()
    write_private(kit / kits.START, kits.server_script(plan).encode(), mode=0o700, replace=True)
    write_private(kit / kits.README, readme, mode=PUBLIC_MODE, replace=True)
    write_private(_ca_files(out)[2], plan.to_json().encode(), replace=True)


def create(out: Path, plan: Plan) -> None:
    """A new CA, the server's kit and one kit per client of ``plan`` under ``out``."""
    ca_pem, ca_key, _ = _ca_files(out)
    if ca_key.exists():
        raise ValueError(
            f"--out {out}: holds a CA already ({ca_key}); --add adds clients to it, or choose"
            " another folder"
        )
    if (out / "server").exists() or (out / "clients").exists():
        raise ValueError(f"--out {out}: holds kits already; choose another folder")
    if not out.exists():
        private_dir(out)
    ca = certs.make_ca(days=max(certs.CA_DAYS, plan.days))
    private_dir(ca_key.parent)
    certs.write_pair(ca.key, ca.cert, ca_pem, ca_key)
    write_private(ca_key.parent / kits.README, kits.ca_readme().encode(), mode=PUBLIC_MODE)
    server = private_dir(out / "server")
    write_private(server / kits.CA, certs.cert_pem(ca.cert), mode=PUBLIC_MODE)
    key, cert = certs.issue(ca, plan.hosts[0], plan.hosts, days=plan.days)
    certs.write_pair(key, cert, server / kits.SERVER_CERT, server / kits.SERVER_KEY)
    private_dir(out / "clients")
    lines = [f"{name} {_write_client(out, plan, ca, name)}\n" for name in plan.clients]
    write_private(server / kits.TOKENS, (TOKENS_HEADER + "".join(lines)).encode())
    _write_server_texts(out, plan)


def load(out: Path) -> tuple[Plan, certs.Authority]:
    """The plan and CA kept in ``out`` (``--add``, ``--revoke``)."""
    ca_pem, ca_key, plan_file = _ca_files(out)
    if not ca_key.is_file() or not plan_file.is_file():
        raise ValueError(f"--out {out}: no CA there; provision it first (without --add/--revoke)")
    check_private(ca_key, "--out")
    try:
        plan = Plan.from_json(plan_file.read_text())
    except (ValueError, TypeError) as err:
        raise ValueError(f"--out {out}: {plan_file} is unreadable: {err}") from None
    return plan, certs.load_ca(ca_pem, ca_key)


def add(out: Path, names: list[str], days: int | None) -> Plan:
    """Kits for new clients ``names``; the CA, the server's certificate and the other
    kits stay as they are, the server's tokens file gets their lines."""
    plan, ca = load(out)
    client_names(names, plan.clients)
    if plan.partitions and len(plan.clients) + len(names) > plan.partitions:
        raise ValueError(
            f"--add: the kits split the data into {plan.partitions} partitions"
            f" (--partitions) and {len(plan.clients)} are given out; no room for {len(names)} more"
        )
    plan.days = days or plan.days
    plan.clients += names
    tokens = out / "server" / kits.TOKENS
    before = tokens.read_text()
    lines = [f"{name} {_write_client(out, plan, ca, name)}\n" for name in names]
    if before and not before.endswith("\n"):  # edited by hand
        before += "\n"
    write_private(tokens, (before + "".join(lines)).encode(), replace=True)
    _write_server_texts(out, plan)
    return plan


def _line_name(line: str) -> str | None:
    """The client a tokens-file line is for (None: a comment or a blank line)."""
    fields = line.split("#", 1)[0].split()
    return fields[0] if fields else None


def revoke(out: Path, names: list[str]) -> Plan:
    """Remove ``names``' lines from the server's tokens file and their kits."""
    plan, _ = load(out)
    for name in names:
        if name not in plan.active:
            raise ValueError(f"--revoke {name}: no such client; active: {', '.join(plan.active)}")
    tokens = out / "server" / kits.TOKENS
    lines = tokens.read_text().splitlines(keepends=True)
    kept = [line for line in lines if _line_name(line) not in names]
    write_private(tokens, "".join(kept).encode(), replace=True)
    for name in names:
        shutil.rmtree(out / "clients" / name, ignore_errors=True)
    plan.revoked += names
    _write_server_texts(out, plan)
    return plan


def parser() -> argparse.ArgumentParser:
    """The ``fedlearn-provision`` command line."""
    p = argparse.ArgumentParser(
        prog="fedlearn-provision",
        description="Write one start-up kit per machine of a deployment: the server's and"
        " each client's (certificates, keys, tokens and the exact command).",
    )
    p.add_argument("--out", default="kits", help="folder of the CA and the kits (default: kits)")
    p.add_argument(
        "--server",
        nargs="+",
        metavar="NAME",
        help="the server's host names and IP addresses"
        " (its certificate's names); clients dial the first",
    )
    p.add_argument("--clients", nargs="+", default=[], metavar="NAME", help="client names")
    p.add_argument("--port", type=int, help="the server's port (default: 9092)")
    p.add_argument("--mtls", action="store_true", help="client certificates too (mutual TLS)")
    p.add_argument(
        "--partitions",
        type=int,
        metavar="N",
        help="a trial on a dataset the server names:"
        " client k trains partition k of N (default: each client brings its own data)",
    )
    p.add_argument("--days", type=int, help="certificate validity in days (default: 365)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--add", action="store_true", help="add --clients to the kits in --out")
    mode.add_argument("--revoke", nargs="+", metavar="NAME", help="refuse these clients")
    return p


def _new_plan(args: argparse.Namespace) -> Plan:
    if not args.server or not args.clients:
        raise ValueError("--server and --clients are required (or --add / --revoke)")
    hosts = list(dict.fromkeys(server_host(h) for h in args.server))
    port = 9092 if args.port is None else args.port
    if not 0 < port < 65536:
        raise ValueError(f"--port {port}: allowed 1-65535")
    if args.partitions is not None and args.partitions < len(args.clients):
        raise ValueError(f"--partitions {args.partitions}: fewer than the clients named")
    return Plan(
        hosts,
        port,
        args.mtls,
        args.partitions,
        args.days or 365,
        client_names(args.clients, []),
    )


def main(argv: list[str] | None = None) -> None:
    """``fedlearn-provision``: write, extend or revoke start-up kits; say where they go."""
    args = parser().parse_args(argv)
    out = Path(args.out)
    if args.days is not None and args.days < 1:
        raise ValueError(f"--days {args.days}: at least 1")
    if args.add or args.revoke:
        for flag in ("server", "port", "mtls", "partitions"):
            if getattr(args, flag):
                raise ValueError(f"--{flag}: set when the kits were made; not with --add/--revoke")
    if args.revoke:
        if args.clients:
            raise ValueError("--revoke and --clients: one at a time")
        plan = revoke(out, args.revoke)
        print(f"fedlearn-provision: revoked {', '.join(args.revoke)}")
    elif args.add:
        if not args.clients:
            raise ValueError("--add needs --clients")
        plan = add(out, args.clients, args.days)
        print(f"fedlearn-provision: added {', '.join(args.clients)} to {out}")
    else:
        plan = _new_plan(args)
        create(out, plan)
        print(f"fedlearn-provision: kits in {out}; the CA ({out / 'ca'}) stays here")
    _say_where(out, plan, [] if args.revoke else args.clients, bool(args.add or args.revoke))


def _say_where(out: Path, plan: Plan, new: list[str], changed: bool) -> None:
    lines = []
    if changed:
        lines.append(
            f"  copy {out / 'server' / kits.TOKENS} to the server's kit: the server reads it"
            " again when it changes (no restart)"
        )
    else:
        lines.append(f"  {out / 'server'} -> the server ({plan.hosts[0]}): ./{kits.START}")
    lines += [f"  {out / 'clients' / n} -> {n}'s machine: ./{kits.START}" for n in new]
    print("\n".join(lines))

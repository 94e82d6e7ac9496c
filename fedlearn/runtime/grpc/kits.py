"""What a start-up kit holds and says: the provisioning plan, each kit's command and README.

``fedlearn-provision`` (:mod:`.provision`) writes the files; this module only
composes text. A kit's ``start.sh`` finds its own folder (``$KIT``), so the kit
runs from wherever it is copied; extra arguments go to the command.
"""

from __future__ import annotations

import dataclasses
import json
import textwrap
from dataclasses import dataclass, field
from typing import Any

PLAN_VERSION = 1
# Files of a kit; the same names in every kit, so every command looks alike.
CA, TOKENS, SERVER_CERT, SERVER_KEY = "ca.pem", "tokens.txt", "server.pem", "server.key"
TOKEN, CLIENT_CERT, CLIENT_KEY, STATE = "client.token", "client.pem", "client.key", "client.state"
START, README = "start.sh", "README.md"


@dataclass
class Plan:
    """A deployment as provisioned (``ca/provision.json``).

    Attributes
    ----------
    hosts : list of str
        The server's host names and IP addresses (its certificate's
        subjectAltName); clients dial the first.
    port : int
        The server's port.
    mtls : bool
        Client certificates too (mutual TLS, on top of tokens).
    partitions : int or None
        A trial on a dataset the server names: client ``k`` (in the order
        provisioned) trains partition ``k`` of ``partitions``. None: each client
        trains on its own data (``--data`` on its command line).
    days : int
        Validity of the certificates issued.
    clients : list of str
        Every client ever provisioned, in order (its index: partition, seed).
    revoked : list of str
        Clients removed from the server's tokens file.
    """

    hosts: list[str]
    port: int = 9092
    mtls: bool = False
    partitions: int | None = None
    days: int = 365
    clients: list[str] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)

    @property
    def active(self) -> list[str]:
        """Clients that hold a valid token."""
        return [c for c in self.clients if c not in self.revoked]

    @property
    def dial(self) -> str:
        """``host:port`` the clients dial (an IPv6 address in brackets)."""
        host = self.hosts[0]
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def to_json(self) -> str:
        return json.dumps({"version": PLAN_VERSION, **dataclasses.asdict(self)}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Plan:
        raw: dict[str, Any] = json.loads(text)
        if raw.pop("version", None) != PLAN_VERSION:
            raise ValueError(f"written by another version of fedlearn-provision ({PLAN_VERSION})")
        return cls(**raw)


def server_args(plan: Plan) -> list[str]:
    """``fedlearn-server``'s arguments in ``sh`` syntax (``$KIT``: the kit's folder).

    Paths are Hydra-quoted (``'...'``) so that a folder with spaces or commas works.
    """
    num = plan.partitions or len(plan.active)
    args = [
        f"num_clients={num}",
        f"runtime.min_clients={len(plan.active)}",
        f"runtime.address=0.0.0.0:{plan.port}",
        f"\"runtime.tls.cert='$KIT/{SERVER_CERT}'\"",
        f"\"runtime.tls.key='$KIT/{SERVER_KEY}'\"",
        f"\"runtime.auth_tokens='$KIT/{TOKENS}'\"",
    ]
    if plan.mtls:
        args += [f"\"runtime.tls.ca='$KIT/{CA}'\"", "runtime.require_client_cert=true"]
    return args


def client_args(plan: Plan, name: str) -> list[str]:
    """``fedlearn-client``'s arguments for client ``name`` in ``sh`` syntax."""
    args = [
        f"--server {plan.dial}",
        f'--tls-ca "$KIT/{CA}"',
        f'--token-file "$KIT/{TOKEN}"',
        f'--state-file "$KIT/{STATE}"',
    ]
    if plan.mtls:
        args.append(f'--tls-cert "$KIT/{CLIENT_CERT}" --tls-key "$KIT/{CLIENT_KEY}"')
    index = plan.clients.index(name)
    if plan.partitions:
        args.append(f"--partition-id {index} --num-partitions {plan.partitions}")
    else:  # its own data; the index only keeps clients' random streams apart
        args.append(f"--node-config node-index={index}")
    return args


def command(program: str, args: list[str]) -> str:
    """``program`` and ``args`` as one ``sh`` command, one argument group per line."""
    return " \\\n  ".join([program, *args, '"$@"'])


def start_script(program: str, args: list[str], about: str, example: str) -> str:
    """A kit's ``start.sh``: find the kit's folder, then run ``program``."""
    return f"""#!/bin/sh
# {about}
# Extra arguments go to {program}, e.g. ./{START} {example}
set -e
KIT=$(cd "$(dirname "$0")" && pwd)
case $KIT in *"'"*) echo "fedlearn: error: the kit's folder has a ' in its path" >&2; exit 2;; esac
exec {command(program, args)}
"""


def server_script(plan: Plan) -> str:
    """The server kit's ``start.sh``."""
    about = f"fedlearn server kit for {', '.join(plan.hosts)}, port {plan.port}."
    return start_script(
        "fedlearn-server", server_args(plan), about, "num_rounds=20 strategy=fedprox"
    )


def client_script(plan: Plan, name: str) -> str:
    """Client ``name``'s ``start.sh``."""
    about = f"fedlearn client kit of {name!r} for the server {plan.dial}."
    example = "--device cuda" if plan.partitions else "--data root=/data/mine"
    return start_script("fedlearn-client", client_args(plan, name), about, example)


def _fill(text: str) -> str:
    return textwrap.fill(text, 80, break_long_words=False, break_on_hyphens=False)


def _files(rows: list[tuple[str, str]]) -> str:
    return "\n".join(["| file | what |", "| --- | --- |", *(f"| `{f}` | {w} |" for f, w in rows)])


def server_readme(plan: Plan, valid_until: str) -> str:
    """The server kit's README.md."""
    sans = ", ".join(plan.hosts)
    rows = [
        (CA, "the deployment's CA certificate (public)"),
        (SERVER_CERT, f"this server's certificate for {sans} (until {valid_until})"),
        (SERVER_KEY, "its private key: keep it 0600 (the server refuses it otherwise)"),
        (TOKENS, f"one `<client-name> <token>` line per client ({', '.join(plan.active)}), 0600"),
        (START, "the command below"),
    ]
    mtls = " Clients also present certificates from this CA (mutual TLS)." if plan.mtls else ""
    intro = _fill(
        f"Copy this folder to the server ({sans}) as it is (`scp -rp`, or `tar`: modes must"
        f" stay 0600/0700), install fedlearn there, and run `./{START}` from any folder (the"
        " run folder, `outputs/<date>/<time>`, is made in the current one). It listens on"
        f" port {plan.port} of every interface and waits for {len(plan.active)} clients.{mtls}"
    )
    return f"""# fedlearn server kit

{intro}

{_files(rows)}

`./{START}` runs (`$KIT` is this folder):

```sh
{command("fedlearn-server", server_args(plan))}
```

Extra arguments are the experiment's settings, as for `fedlearn-simulate`:
`./{START} num_rounds=20 strategy=fedprox seed=1`; after a stop,
`./{START} resume=outputs/<date>/<time>` continues the run.

Clients: `fedlearn-provision --add` gives new ones kits and a new `{TOKENS}`;
copy it here. To refuse a client, delete its line from `{TOKENS}` (or
`fedlearn-provision --revoke NAME` and copy the file here). The running server
reads the file again when it changes: that client is refused from its next
connection on and its open stream is closed, without a restart.
"""


def client_readme(plan: Plan, name: str, valid_until: str | None) -> str:
    """Client ``name``'s README.md."""
    rows = [
        (CA, "the CA that signed the server's certificate (public)"),
        (TOKEN, "this client's token: keep it 0600 (the client refuses it otherwise)"),
    ]
    if valid_until:
        rows += [
            (CLIENT_CERT, f"this client's certificate, CN={name} (until {valid_until})"),
            (CLIENT_KEY, "its private key, 0600"),
        ]
    rows += [(START, "the command below"), (STATE, "written by the client: its state in a run")]
    if plan.partitions:
        index = plan.clients.index(name)
        data = (
            f"It trains partition {index} of {plan.partitions} of the dataset the server names"
            " (a trial: every client has the dataset, e.g. the bundled digits)."
        )
    else:
        data = (
            "It trains on its own data: give its dataset settings, e.g."
            f" `./{START} --data root=/data/mine` (keys of the server's `dataset` config)."
        )
    intro = _fill(
        f"Copy this folder to {name}'s machine as it is (`scp -rp`, or `tar`: modes must stay"
        f" 0600/0700), install fedlearn there, and run `./{START}`. It connects to {plan.dial}"
        f" over TLS, trains when asked and exits when the run is over. {data}"
    )
    return f"""# fedlearn client kit: {name}

{intro}

{_files(rows)}

`./{START}` runs (`$KIT` is this folder):

```sh
{command("fedlearn-client", client_args(plan, name))}
```

More `fedlearn-client` flags go after it, e.g. `./{START} --device cuda`.
"""


def ca_readme() -> str:
    """The CA folder's README.md."""
    return f"""# fedlearn deployment CA

`ca.key` signs every certificate of this deployment: it is in no kit and stays
here. `provision.json` records what was provisioned; with both,
`fedlearn-provision --out <this folder's parent> --add --clients NAME` adds a
client and `--revoke NAME` removes one from the server's `{TOKENS}`.
"""

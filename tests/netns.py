"""Two hosts on one machine: Linux network namespaces joined by a veth pair.

``two_hosts()`` makes namespaces ``fltest-<pid>-<random>-{a,b}`` (so parallel test
runs never collide), each with loopback and one end of a veth pair
(``10.77.0.1`` and ``10.77.0.2``, reachable only from each other), and
``/etc/netns/<name>/hosts`` naming the other host, which ``ip netns exec``
mounts over ``/etc/hosts``. On exit, also after a failure, every process left
in the namespaces is killed and the namespaces and their files are removed;
namespaces left by a test run that was killed (its pid is gone) are removed
on the next run. Needs root and iproute2: :func:`unavailable` says why not.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "fltest-"
NETNS_ETC = Path("/etc/netns")
SUBNET = "10.77.0"
REPO = Path(__file__).resolve().parents[1]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def unavailable() -> str | None:
    """Why namespaces cannot be made here (a one-line skip reason), or None."""
    if os.name != "posix" or sys.platform != "linux":
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "needs root for ip netns (CI runs as root)"
    if shutil.which("ip") is None:
        return "needs iproute2's ip command"
    probe = f"{PREFIX}{os.getpid()}-probe-{secrets.token_hex(3)}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip().splitlines()[0]}"
    _ip("netns", "del", probe, check=False)
    return None


def command_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This repo first on PYTHONPATH, this interpreter's console scripts first on PATH."""
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "PYTHONUNBUFFERED": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        **(extra or {}),
    }


@dataclass
class Host:
    """One namespace: its name, its address, the processes started in it."""

    netns: str
    address: str
    procs: list[subprocess.Popen] = field(default_factory=list)

    def start(
        self, argv: list[str], log: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen:
        """Start ``argv`` in this namespace, stdout and stderr to ``log``."""
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, *argv],
                env=command_env(env),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # one process group: killed as a whole
            )
        self.procs.append(proc)
        return proc

    def run(
        self, argv: list[str], env: dict[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess:
        """Run ``argv`` in this namespace to its end; its output captured."""
        return subprocess.run(
            ["ip", "netns", "exec", self.netns, *argv],
            env=command_env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def pids(self) -> list[int]:
        """Every process in the namespace (whoever started it)."""
        out = _ip("netns", "pids", self.netns, check=False).stdout.split()
        return [int(pid) for pid in out if pid.isdigit()]

    def stop_all(self, grace: float = 0.0) -> None:
        """End every process in the namespace: SIGTERM and up to ``grace`` seconds to
        exit, then SIGKILL."""
        if grace > 0:
            self._signal(signal.SIGTERM)
            end = time.monotonic() + grace
            while self.pids() and time.monotonic() < end:
                time.sleep(0.2)  # teardown only
        self._signal(signal.SIGKILL)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)

    def _signal(self, sig: int) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)


def _remove(netns: str) -> None:
    Host(netns, "").stop_all()
    _ip("netns", "del", netns, check=False)
    shutil.rmtree(NETNS_ETC / netns, ignore_errors=True)


def _remove_stale() -> None:
    """Namespaces of test runs whose process is gone (killed before cleaning up)."""
    listed = _ip("netns", "list", check=False).stdout.split("\n")
    for line in listed:
        name = line.split(" ", 1)[0]
        if not name.startswith(PREFIX):
            continue
        pid = name[len(PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            _remove(name)


@contextlib.contextmanager
def two_hosts(names: tuple[str, str] = ("server", "client")) -> Iterator[tuple[Host, Host]]:
    """Two namespaces joined by a veth pair; each host knows the other by ``names``."""
    _remove_stale()
    tag = f"{os.getpid()}-{secrets.token_hex(3)}"
    hosts = (Host(f"{PREFIX}{tag}-a", f"{SUBNET}.1"), Host(f"{PREFIX}{tag}-b", f"{SUBNET}.2"))
    made: list[str] = []
    try:
        for host in hosts:
            _ip("netns", "add", host.netns)
            made.append(host.netns)
        # The pair is created inside the namespaces: its names never exist outside them.
        ends = ("veth-a", "veth-b")
        _ip("link", "add", ends[0], "netns", hosts[0].netns, "type", "veth",
            "peer", "name", ends[1], "netns", hosts[1].netns)  # fmt: skip
        for host, end, other, other_name in zip(hosts, ends, hosts[::-1], names[::-1], strict=True):
            _ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", end)
            _ip("-n", host.netns, "link", "set", end, "up")
            _ip("-n", host.netns, "link", "set", "lo", "up")
            etc = NETNS_ETC / host.netns
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "hosts").write_text(f"127.0.0.1 localhost\n{other.address} {other_name}\n")
        yield hosts
    finally:
        for netns in made:
            _remove(netns)


def wait_exit(proc: subprocess.Popen, timeout: float, what: str) -> int:
    """``proc``'s exit code; fail naming ``what`` if it runs past ``timeout``."""
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{what} still running after {timeout:.0f} s") from None


def log_tail(path: Path, lines: int = 30) -> str:
    """The end of a log, for assertion messages."""
    if not path.exists():
        return f"({path} missing)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

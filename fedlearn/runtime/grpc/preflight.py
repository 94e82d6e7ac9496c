"""Start-up checks of the gRPC runtime: a setting that cannot work, in one line, at once.

gRPC reports a key that does not match its certificate, a file that is not PEM,
a taken port or a name that does not resolve in tracebacks and log lines of its
own, or not at all (a client just retries for minutes). These checks run first
and raise a one-line :class:`ValueError` naming the setting; the console
scripts turn it into exit code 2. What can pass on its own (a server not up yet,
a DNS server that does not answer) is left to the client's retries.

On a client, :func:`diagnose` runs after a failed connection while the client
has never been welcomed: it tells a server that speaks TLS to a plaintext
client, a certificate that does not name the address dialled, or a CA that did
not sign it, from a connection of its own.
"""

from __future__ import annotations

import errno
import socket
import ssl

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fedlearn.runtime.grpc.security import read_file, read_secret

PROBE_TIMEOUT = 5.0


def split_address(address: str, setting: str, allow_zero: bool = False) -> tuple[str, int]:
    """``host:port`` (IPv6 as ``[::1]:port``) -> (host, port), or a one-line ValueError."""
    host, sep, port = address.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{setting}={address}: expected host:port (no port given)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    low = 0 if allow_zero else 1
    if not port.isdigit() or not low <= int(port) <= 65535:
        raise ValueError(f"{setting}={address}: the port must be a number in {low}..65535")
    return host, int(port)


def resolve(host: str, port: int, setting: str, address: str, passive: bool = False) -> list:
    """``getaddrinfo`` for a TCP endpoint; a name that does not exist is a one-line
    ValueError, a DNS server that does not answer (EAI_AGAIN) returns [] (try later)."""
    flags = socket.AI_PASSIVE if passive else 0
    try:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=flags)
    except socket.gaierror as err:
        if err.errno == socket.EAI_AGAIN:
            return []
        raise ValueError(
            f"{setting}={address}: cannot resolve host {host!r} ({err.strerror})"
        ) from None


def check_bindable(address: str, setting: str = "runtime.address") -> None:
    """The server's address: a valid port, a known host, a port no one listens on."""
    host, port = split_address(address, setting, allow_zero=True)
    infos = resolve(host, port, setting, address, passive=True)
    if not infos:
        raise ValueError(f"{setting}={address}: cannot resolve host {host!r} (no DNS answer)")
    if port == 0:
        return
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds
            try:
                sock.bind(sockaddr)
            except OSError as err:
                why = {
                    errno.EADDRINUSE: f"port {port} is in use (another fedlearn-server?)",
                    errno.EADDRNOTAVAIL: f"{host} is not an address of this machine",
                    errno.EACCES: f"port {port} needs privileges; use 1024 or above",
                }.get(err.errno, err.strerror)
                raise ValueError(f"{setting}={address}: {why}") from None


def _certificates(path: str, setting: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(read_file(path, setting))
    except ValueError as err:
        if str(err).startswith(setting):  # read_file's own: no such file
            raise
        certs = []
    if not certs:
        raise ValueError(f"{setting}={path}: not a PEM certificate")
    return certs


def check_ca(path: str, setting: str) -> None:
    """A CA file holds at least one PEM certificate."""
    _certificates(path, setting)


def check_pair(cert: str, key: str, cert_setting: str, key_setting: str) -> None:
    """A PEM certificate and the PEM private key of that certificate."""
    leaf = _certificates(cert, cert_setting)[0]
    data = read_secret(key, key_setting)  # (missing, or readable by others: refused there)
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):  # not PEM, or encrypted (gRPC cannot ask for a password)
        raise ValueError(f"{key_setting}={key}: not an unencrypted PEM private key") from None
    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if private.public_key().public_bytes(*raw) != leaf.public_key().public_bytes(*raw):
        raise ValueError(f"{key_setting}={key} is not the key of {cert_setting}={cert}")


def _names(der: bytes) -> list[str]:
    """The DNS names and IP addresses a certificate is for (its common name otherwise)."""
    cert = x509.load_der_x509_certificate(der)
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = sans.get_values_for_type(x509.DNSName)
        names += [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        names = [a.value for a in cert.subject if a.oid == x509.NameOID.COMMON_NAME]
    return [str(n) for n in names]


def _handshake(host: str, port: int, context: ssl.SSLContext) -> bytes:
    """A TLS handshake with the server; its certificate (DER)."""
    with socket.create_connection((host, port), timeout=PROBE_TIMEOUT) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            return tls.getpeercert(binary_form=True) or b""


def diagnose(
    address: str, insecure: bool, ca: str | None, cert: str | None = None, key: str | None = None
) -> str | None:
    """Why a client cannot reach ``address`` for good, in one line, or None (retry)."""
    host, port = split_address(address, "--server")
    try:
        socket.create_connection((host, port), timeout=PROBE_TIMEOUT).close()
    except OSError:
        return None  # not listening (yet), unreachable: a network matter, retried
    if insecure:
        plain = ssl.create_default_context()
        plain.check_hostname, plain.verify_mode = False, ssl.CERT_NONE
        plain.set_alpn_protocols(["h2"])
        try:
            _handshake(host, port, plain)
        except (ssl.SSLError, OSError):
            return None
        return (
            f"--server {address} speaks TLS and this client does not (--insecure): give"
            " --tls-ca (the CA that signed the server's certificate) instead"
        )
    context = ssl.create_default_context(cafile=ca) if ca else ssl.create_default_context()
    context.set_alpn_protocols(["h2"])
    if cert and key:
        context.load_cert_chain(cert, key)
    try:
        _handshake(host, port, context)
    except ssl.SSLCertVerificationError as err:
        if err.verify_code in (62, 64):  # X509_V_ERR_HOSTNAME_MISMATCH, _IP_ADDRESS_MISMATCH
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            names = ", ".join(_names(_handshake(host, port, context))) or "no name"
            return (
                f"--server {address}: the server's certificate is for {names}, not {host};"
                " dial one of those, or give the server a certificate for this address"
            )
        return (
            f"--server {address}: its certificate is not signed by --tls-ca={ca}"
            f" ({err.verify_message})"
        )
    except ssl.SSLError as err:
        if "WRONG_VERSION_NUMBER" in str(err) or "record layer" in str(err):
            return (
                f"--server {address} does not speak TLS (a plaintext server?); --insecure"
                " connects without it, on a trusted network only"
            )
        return None
    except OSError:
        return None
    return None

"""Certificates: a CA, server certificates for given names, client certificates.

:func:`make_pki` writes what ``fedlearn-launch`` needs for a trial on this
machine into the run folder's ``certs/``: a CA, a server certificate for
``localhost``/``127.0.0.1``, one certificate per client (mutual TLS) and a tokens
file; the CA's key is never written. ``fedlearn-provision``
(:mod:`.provision`) builds deployment kits from the same pieces. Keys are EC
P-256; keys and tokens are created 0600 in 0700 folders
(:mod:`.secret_files`).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedlearn.runtime.grpc.secret_files import PUBLIC_MODE, private_dir, write_private

CA_DAYS = 3650
TRIAL_DAYS = 30


class Authority(NamedTuple):
    """A CA: its key and self-signed certificate."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


@dataclass
class Pki:
    """Paths of generated credentials."""

    ca: Path
    server_cert: Path
    server_key: Path
    tokens: Path
    client_certs: dict[str, tuple[Path, Path]]  # name -> (cert, key)
    client_tokens: dict[str, Path]  # name -> token file


def new_key() -> ec.EllipticCurvePrivateKey:
    """A new EC P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """A private key as unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    """A certificate as PEM."""
    return cert.public_bytes(serialization.Encoding.PEM)


def general_name(host: str) -> x509.GeneralName:
    """A subjectAltName entry: an IP address if ``host`` is one, else a DNS name."""
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _builder(
    cn: str, issuer: x509.Name, key: ec.EllipticCurvePrivateKey, days: int
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.timezone.utc)
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))  # clocks a little apart
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )


def make_ca(cn: str = "fedlearn-ca", days: int = CA_DAYS) -> Authority:
    """A new CA that may sign end-entity certificates only (path length 0)."""
    key = new_key()
    cert = (
        _builder(cn, _name(cn), key, days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,  # keyCertSign and cRLSign only
        )
        .sign(key, hashes.SHA256())
    )
    return Authority(key, cert)


def issue(
    ca: Authority, cn: str, hosts: list[str] | None = None, days: int = TRIAL_DAYS
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A new key and a certificate for it signed by ``ca``.

    Parameters
    ----------
    ca : Authority
        The signing CA.
    cn : str
        The subject's common name (a client's identity under mutual TLS).
    hosts : list of str, optional
        A server certificate for these host names and IP addresses (its
        subjectAltName, which TLS clients check); without, a client certificate.
    days : int
        Validity.
    """
    key = new_key()
    usage = ExtendedKeyUsageOID.SERVER_AUTH if hosts else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        _builder(cn, ca.cert.subject, key, days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    )
    if hosts:
        sans = x509.SubjectAlternativeName([general_name(h) for h in hosts])
        builder = builder.add_extension(sans, critical=False)
    return key, builder.sign(ca.key, hashes.SHA256())


def load_ca(cert_path: Path, key_path: Path) -> Authority:
    """A CA written by :func:`write_pair` (``fedlearn-provision --add``)."""
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{key_path}: not an EC private key")
    return Authority(key, x509.load_pem_x509_certificate(cert_path.read_bytes()))


def write_pair(
    key: ec.EllipticCurvePrivateKey, cert: x509.Certificate, cert_path: Path, key_path: Path
) -> None:
    """Write a certificate (0644) and its key (0600 from the first byte); neither may exist."""
    write_private(cert_path, cert_pem(cert), mode=PUBLIC_MODE)
    write_private(key_path, key_pem(key))


def new_token() -> str:
    """A client token: 32 random URL-safe characters."""
    return secrets.token_urlsafe(24)


def make_pki(folder: str | os.PathLike, client_names: list[str]) -> Pki:
    """Write a CA, a server pair, client pairs and tokens under ``folder`` (0700).

    Files already there (a resumed run's) are replaced atomically.
    """
    out = private_dir(folder)
    ca = make_ca(days=TRIAL_DAYS)
    write_private(out / "ca.pem", cert_pem(ca.cert), mode=PUBLIC_MODE, replace=True)

    def pair(cn: str, stem: str, hosts: list[str] | None) -> tuple[Path, Path]:
        key, cert = issue(ca, cn, hosts)
        paths = out / f"{stem}.pem", out / f"{stem}.key"
        write_private(paths[0], cert_pem(cert), mode=PUBLIC_MODE, replace=True)
        write_private(paths[1], key_pem(key), replace=True)
        return paths

    server_cert, server_key = pair("localhost", "server", ["localhost", "127.0.0.1"])
    client_certs, client_tokens, lines = {}, {}, []
    for name in client_names:
        client_certs[name] = pair(name, f"client-{name}", None)
        token = new_token()
        lines.append(f"{name} {token}\n")
        client_tokens[name] = write_private(
            out / f"client-{name}.token", f"{token}\n".encode(), replace=True
        )
    tokens = write_private(out / "tokens.txt", "".join(lines).encode(), replace=True)
    return Pki(out / "ca.pem", server_cert, server_key, tokens, client_certs, client_tokens)

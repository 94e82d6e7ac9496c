"""Self-signed certificates and tokens for a local trial deployment.

``fedlearn-launch`` writes them into the run folder's ``certs/``: a CA, a
server certificate for ``localhost``/``127.0.0.1``, one certificate per client
(for mutual TLS) and a tokens file. For a real deployment use certificates
from your own CA.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass
class Pki:
    """Paths of generated credentials."""

    ca: Path
    server_cert: Path
    server_key: Path
    tokens: Path
    client_certs: dict[str, tuple[Path, Path]]  # name -> (cert, key)
    client_tokens: dict[str, Path]  # name -> token file


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    os.chmod(path, 0o600)


def _cert(
    cn: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    signer: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        usage = ExtendedKeyUsageOID.SERVER_AUTH
    else:
        usage = ExtendedKeyUsageOID.CLIENT_AUTH
    if not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(signer, hashes.SHA256())


def make_pki(folder: str | os.PathLike, client_names: list[str]) -> Pki:
    """Write a CA, a server pair, client pairs and tokens under ``folder``."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _cert("fedlearn-ca", ca_key, _name("fedlearn-ca"), ca_key, ca=True)
    pem = serialization.Encoding.PEM
    (out / "ca.pem").write_bytes(ca_cert.public_bytes(pem))

    def pair(cn: str, stem: str, server: bool) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(cn, key, ca_cert.subject, ca_key, server=server)
        (out / f"{stem}.pem").write_bytes(cert.public_bytes(pem))
        _write_key(key, out / f"{stem}.key")
        return out / f"{stem}.pem", out / f"{stem}.key"

    server_cert, server_key = pair("localhost", "server", True)
    client_certs, client_tokens, lines = {}, {}, []
    for name in client_names:
        client_certs[name] = pair(name, f"client-{name}", False)
        token = secrets.token_urlsafe(24)
        lines.append(f"{name} {token}")
        client_tokens[name] = out / f"client-{name}.token"
        client_tokens[name].write_text(token + "\n")
        os.chmod(client_tokens[name], 0o600)
    (out / "tokens.txt").write_text("\n".join(lines) + "\n")
    os.chmod(out / "tokens.txt", 0o600)
    return Pki(
        out / "ca.pem", server_cert, server_key, out / "tokens.txt", client_certs, client_tokens
    )

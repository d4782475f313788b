"""A self-signed certificate made at start-up, for ``itsm-sync simulate --tls``.

PySNC refuses plain ``http://`` instances, so the ServiceNow simulator must be reachable over
HTTPS. The certificate covers ``localhost``, ``127.0.0.1`` and ``::1`` plus the bind host; clients
trust it by pointing ``verify`` (requests) or ``SSL_CERT_FILE``/``REQUESTS_CA_BUNDLE`` at the
written PEM file.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class CertFiles:
    cert: Path
    key: Path


def make_self_signed(directory: Path, host: str = "127.0.0.1") -> CertFiles:
    """Write ``cert.pem`` and ``key.pem`` into ``directory`` and return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "itsm-sync simulators")])
    alt_names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    for ip in {"127.0.0.1", "::1", host}:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(ip)))
        except ValueError:
            alt_names.append(x509.DNSName(ip))
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    files = CertFiles(cert=directory / "cert.pem", key=directory / "key.pem")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    files.key.chmod(0o600)
    return files

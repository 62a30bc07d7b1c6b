"""TLS material for wss://: the simulator's certificate, the harness's trust, a throw-away local CA.

Every Azure target is wss://, so the simulator can serve TLS too (``--tls-cert/--tls-key`` or
``--tls-self-signed``) and the harness can trust a private CA (``target.ca_file``). Certificate
checks are never switched off: a local test trusts the CA that signed the simulator's certificate.
Self-signed pairs are made with ``cryptography``, already installed as a dependency of
azure-identity (msal), so no new package and no ``openssl`` binary are needed.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

#: Names the generated certificate is valid for: loopback only.
LOCAL_NAMES = ("localhost",)
LOCAL_IPS = ("127.0.0.1", "::1")


@dataclass(frozen=True)
class CertFiles:
    """PEM files: the server's chain and key, and the CA a client must trust."""

    cert: str
    key: str
    ca: str


def self_signed(directory: str | Path) -> CertFiles:
    """A fresh CA and a loopback server certificate it signed (EC P-256, valid one day), as PEM files.

    A CA plus a leaf, not one self-signed leaf: OpenSSL's strict X.509 checks (the default from
    Python 3.13) reject a leaf used as its own trust anchor.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "voiceload local test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    sans = [x509.DNSName(n) for n in LOCAL_NAMES] + [x509.IPAddress(ipaddress.ip_address(a)) for a in LOCAL_IPS]
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(leaf_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    files = CertFiles(cert=str(d / "server.pem"), key=str(d / "server.key"), ca=str(d / "ca.pem"))
    Path(files.ca).write_bytes(ca.public_bytes(pem))
    Path(files.cert).write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    key_path = Path(files.key)
    key_path.touch(mode=0o600)
    key_path.write_bytes(leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
    return files


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """The simulator's context; ValueError naming the file that is missing or unusable."""
    for flag, path in (("--tls-cert", cert), ("--tls-key", key)):
        if not Path(path).is_file():
            raise ValueError(f"{flag} {path}: no such file")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(f"--tls-cert {cert} / --tls-key {key}: cannot load the certificate and key: {exc}") from None
    return ctx


def client_context(ca_file: str | None = None) -> ssl.SSLContext:
    """A verifying client context (certificate and host name) trusting the system store, or only
    ``ca_file`` when given. A stdlib context: the transport drives it sans-I/O (``wrap_bio``)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    else:
        ctx.load_default_certs()  # honours SSL_CERT_FILE / SSL_CERT_DIR
    return ctx


def check_ca_file(path: str) -> str | None:
    """Why ``path`` cannot serve as a CA bundle, or None when it can."""
    p = Path(path)
    if not p.is_file():
        return f"{path}: no such file"
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=str(p))
    except (ssl.SSLError, OSError, ValueError) as exc:
        return f"{path}: not a PEM certificate bundle ({exc})"
    return None

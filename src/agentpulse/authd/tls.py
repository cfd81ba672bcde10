"""TLS for port 1515 (reference section 14.1) and the files it needs: the manager's certificate and key,
the agents' CA, and the enrolment password. Blocking file work: the service calls these from a thread.

Wazuh's packages make `etc/sslmanager.cert`/`.key` once at install time; agentpulse makes the pair on
first start when both are missing (self-signed, ECDSA P-256: every 4.x agent's OpenSSL takes it, and a
handshake costs a fraction of RSA-2048's), and uses an existing pair as it is. TLS 1.2 and 1.3 only,
unless `<ssl_auto_negotiate>`; `<ciphers>` governs TLS 1.2, as `SSL_CTX_set_cipher_list` does.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import secrets
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agentpulse.config import AuthConfig

log = logging.getLogger(__name__)

KEY_MODE: Final = 0o600
CERT_MODE: Final = 0o644  # the certificate is public: agents that verify the manager need a copy
PASS_MODE: Final = 0o640
CERT_DAYS: Final = 3650
PASSWORD_BYTES: Final = 16  # 32 lowercase hex characters, as w_generate_random_pass() makes


class AuthdSetupError(Exception):
    """Enrolment cannot start: a certificate, key, CA or password file is missing or unusable."""


@dataclass(frozen=True, slots=True)
class Password:
    text: str
    generated: bool  # made now (and written to the file) because the file was missing


def resolve(home: Path, path: str) -> Path:
    """A path of `<auth>` as Wazuh reads it: relative ones are relative to the install directory."""
    candidate = Path(path)
    return candidate if candidate.is_absolute() else home / candidate


# -- the manager's certificate ---------------------------------------------------------------------------


def ensure_certificate(cert: Path, key: Path, *, names: tuple[str, ...] = ()) -> str | None:
    """Make a self-signed pair when both files are missing; the SHA-256 fingerprint of a new one, else
    None. One file without the other is an `AuthdSetupError` (which one to trust is not ours to guess)."""
    if cert.exists() and key.exists():
        return None
    if cert.exists() or key.exists():
        missing = key if cert.exists() else cert
        raise AuthdSetupError(
            f"Unable to read {'key' if missing == key else 'certificate'} file (not found): {missing}"
        )
    private_key = ec.generate_private_key(ec.SECP256R1())
    host = socket.gethostname() or "agentpulse"
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "agentpulse"),
            x509.NameAttribute(NameOID.COMMON_NAME, host),
        ]
    )
    alt_names: list[x509.GeneralName] = [x509.DNSName(host), x509.DNSName("localhost")]
    for name in ("127.0.0.1", *names):
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt_names.append(x509.DNSName(name))
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .sign(private_key, hashes.SHA256())
    )
    key_pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_new(key, key_pem, KEY_MODE)
    _write_new(cert, certificate.public_bytes(serialization.Encoding.PEM), CERT_MODE)
    return fingerprint(certificate)


def fingerprint(certificate: x509.Certificate) -> str:
    digest = certificate.fingerprint(hashes.SHA256())
    return ":".join(f"{byte:02X}" for byte in digest)


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create `path` with `mode` from the start (never readable by others, even for a moment)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), mode)  # whatever the umask
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


# -- the TLS context -------------------------------------------------------------------------------------


def server_context(config: AuthConfig, cert: Path, key: Path, agent_ca: Path | None) -> ssl.SSLContext:
    """TLS 1.2+ (any with `<ssl_auto_negotiate>`), `<ciphers>`, the manager's pair, and the agents' CA."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = (
        ssl.TLSVersion.MINIMUM_SUPPORTED if config.ssl_auto_negotiate else ssl.TLSVersion.TLSv1_2
    )
    try:
        context.set_ciphers(config.ciphers)
    except ssl.SSLError as error:
        raise AuthdSetupError(f"<auth><ciphers> {config.ciphers!r}: {error}") from None
    try:
        context.load_cert_chain(cert, key)
    except FileNotFoundError as error:
        raise AuthdSetupError(f"Unable to read certificate file (not found): {error.filename}") from None
    except (ssl.SSLError, OSError) as error:
        raise AuthdSetupError(f"Unable to read the certificate {cert} or key {key}: {error}") from None
    if agent_ca is not None:
        try:
            context.load_verify_locations(agent_ca)
        except (ssl.SSLError, OSError) as error:
            raise AuthdSetupError(f"Unable to read the agents' CA {agent_ca}: {error}") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def certificate_names(peercert: dict[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """(IP addresses, DNS names, common names) of a peer certificate as `SSLObject.getpeercert()` gives it."""
    ips = [value for kind, value in peercert.get("subjectAltName", ()) if kind == "IP Address"]
    dns = [value for kind, value in peercert.get("subjectAltName", ()) if kind == "DNS"]
    common = [value for rdn in peercert.get("subject", ()) for kind, value in rdn if kind == "commonName"]
    return ips, dns, common


def names_address(peercert: dict[str, Any], source_ip: str) -> bool:
    """`<ssl_verify_host>`: the agent's certificate names its source address (a SAN IP, else a SAN DNS
    name or the CN written as that address)."""
    try:
        source = ipaddress.ip_address(source_ip)
    except ValueError:
        return False
    ips, dns, common = certificate_names(peercert)
    for text in (*ips, *dns, *common):
        try:
            if ipaddress.ip_address(text.strip()) == source:
                return True
        except ValueError:
            continue
    return False


# -- the password ----------------------------------------------------------------------------------------


def load_password(path: Path) -> Password:
    """`<use_password>`: the first line of `etc/authd.pass` (its `\\n` taken off). A missing file gets a
    random password, written there (0640) so agents given it keep working after a restart."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        text = secrets.token_hex(PASSWORD_BYTES)
        _write_new(path, f"{text}\n".encode(), PASS_MODE)
        return Password(text, generated=True)
    except OSError as error:
        raise AuthdSetupError(f"Unable to read the password file {path}: {error.strerror or error}") from None
    text = data.split(b"\n", 1)[0].decode("latin-1")
    if len(text) < 2:
        raise AuthdSetupError(f"Empty password provided ({path}).")
    return Password(text, generated=False)

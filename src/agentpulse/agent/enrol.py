"""Enrolment, the agent's side (reference 14.6): ask a manager on port 1515 for a key, and keep it.

One TLS connection per attempt: the request line (`wire.enrolment.build_request`), then everything the
manager writes until it closes, which is one key or one `ERROR: ...`. The TLS settings are the agent's
`<enrollment>` ones: TLS 1.2+ unless `auto_method`, `ssl_cipher`, the manager verified (certificate and
name) only with `server_ca_path`, a certificate of the agent's own when both its paths are set. The key is
written as a Wazuh agent writes it: that one line as the whole `client.keys`, 0640, replaced atomically.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl
from pathlib import Path
from typing import Final

from agentpulse.agent.config import EnrollmentConfig
from agentpulse.agent.sysinfo import AGENT_VERSION
from agentpulse.keysfile import write_keys_file
from agentpulse.wire import enrolment
from agentpulse.wire.enrolment import EnrolmentError
from agentpulse.wire.keys import AgentKey, KeysFile

RECV_TIMEOUT: Final = 60.0  # agent.recv_timeout, for the whole exchange
REPLY_MAX: Final = 65536
RETRY_STEP: Final = 5.0  # ENROLLMENT_RETRY_TIME_DELTA: after the Nth failed round, wait N x 5 s
RETRY_MAX: Final = 60.0
_NOT_NAME: Final = re.compile(r"[^0-9A-Za-z_.-]")

__all__ = [
    "EnrolmentError",
    "agent_name",
    "client_context",
    "read_password",
    "request_key",
    "retry_delay",
    "save_key",
]


def resolve(home: Path, path: str) -> Path:
    candidate = Path(path)
    return candidate if candidate.is_absolute() else home / candidate


def client_context(config: EnrollmentConfig, home: Path) -> ssl.SSLContext:
    """The agent's TLS settings (`get_ssl_context()`); blocking (it may read certificate files)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = (
        ssl.TLSVersion.MINIMUM_SUPPORTED if config.auto_method else ssl.TLSVersion.TLSv1_2
    )
    context.set_ciphers(config.ssl_cipher)
    if config.server_ca_path:
        context.load_verify_locations(resolve(home, config.server_ca_path))
        context.check_hostname = True  # check_x509_cert(): the manager address in the SAN or the CN
    else:
        context.check_hostname = False  # "Registering agent to unverified manager"
        context.verify_mode = ssl.CERT_NONE
    if config.agent_certificate_path and config.agent_key_path:
        context.load_cert_chain(
            resolve(home, config.agent_certificate_path), resolve(home, config.agent_key_path)
        )
    return context


def read_password(path: Path) -> str | None:
    """The first line of the password file without its `\\n`, if that line (with it) is over 2 bytes."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    line = data.split(b"\n", 1)[0]
    return line.decode("latin-1") if len(line) + 1 > 2 else None


def agent_name(config: EnrollmentConfig) -> str:
    """`<agent_name>`, else the host name with every character outside `[0-9A-Za-z_.-]` deleted."""
    return config.agent_name or _NOT_NAME.sub("", socket.gethostname())


def build_request(
    config: EnrollmentConfig, name: str, *, password: str | None, existing: AgentKey | None
) -> bytes:
    """The request line, with `K:` when the agent still has a key (the manager may then keep it)."""
    ip = config.agent_address or (enrolment.SOURCE_IP if config.use_source_ip else None)
    key_hash = enrolment.key_hash(existing.id, existing.name, existing.key) if existing is not None else None
    return enrolment.build_request(
        name, password=password, version=AGENT_VERSION, groups=config.groups, ip=ip, key_hash=key_hash
    )


async def request_key(
    host: str,
    port: int,
    request: bytes,
    context: ssl.SSLContext,
    *,
    timeout: float = RECV_TIMEOUT,
    local_address: str | None = None,
) -> AgentKey:
    """One enrolment: the key the manager gave, or `EnrolmentError` (its `ERROR: ...` text, or a key that
    does not have a valid format). Connection and TLS failures raise OSError, ssl.SSLError, TimeoutError."""

    async def exchange() -> bytes:
        reader, writer = await asyncio.open_connection(
            host,
            port,
            ssl=context,
            server_hostname=host if context.check_hostname else None,
            local_addr=(local_address, 0) if local_address else None,
        )
        try:
            writer.write(request)
            chunks: list[bytes] = []
            size = 0
            while size < REPLY_MAX:
                chunk = await reader.read(REPLY_MAX - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            return b"".join(chunks)
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()

    data = await asyncio.wait_for(exchange(), timeout)
    if not data:
        raise ConnectionResetError("the manager closed the connection without a reply")
    return enrolment.parse_reply(data)


def save_key(path: Path, key: AgentKey) -> None:
    """The whole client.keys: this one line (temporary file, 0640, rename). Blocking."""
    write_keys_file(path, KeysFile([key.line()]))


def retry_delay(failed_rounds: int) -> float:
    """After the Nth failed round of enrolment: 5, 10, 15 ... s, at most 60 (never giving up)."""
    return min(RETRY_MAX, RETRY_STEP * failed_rounds)

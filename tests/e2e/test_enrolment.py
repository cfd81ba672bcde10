"""Enrolment on a real manager (reference section 14): real TLS on 127.0.0.1, real files, global.db read as
an operator's tool reads it. The worked example 14.7, the replies, the replacement rules, the agent that
then connects with its key at once, and the status event of a registration."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import re
import ssl
import stat
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agentpulse.agent.config import EnrollmentConfig
from agentpulse.agent.connection import AgentCodec, AgentConnection
from agentpulse.agent.enrol import client_context, request_key
from agentpulse.wire import control, enrolment
from agentpulse.wire.keys import KeysFile, parse_line
from tests.e2e.harness import LOOPBACK, ManagerProcess, ManagerSettings, wait_until

EXAMPLE_REQUEST = b"OSSEC PASS: topsecret OSSEC A:'web-01' V:'v4.14.7' G:'default,linux'\n"
KEY_REPLY = re.compile(rb"OSSEC K:'(\d{3,}) ([A-Za-z0-9._-]+) (\S+) ([0-9a-f]{64})'")


def tls_client(maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if maximum is not None:
        context.maximum_version = maximum
    return context


async def exchange(manager: ManagerProcess, data: bytes, *, timeout: float = 15.0) -> bytes:
    """One TLS connection to 1515: send `data`, read until the manager closes."""
    reader, writer = await asyncio.open_connection(LOOPBACK, manager.auth_port, ssl=tls_client())
    try:
        writer.write(data)
        return await asyncio.wait_for(reader.read(1 << 20), timeout)
    finally:
        writer.close()


def enrol(manager: ManagerProcess, data: bytes) -> bytes:
    return asyncio.run(exchange(manager, data))


def auth_manager(manager: ManagerProcess, options: str = "", **settings: object) -> ManagerProcess:
    manager.settings = ManagerSettings(auth=options, **settings)  # type: ignore[arg-type]
    return manager


def test_the_worked_example_is_answered_byte_for_byte_and_the_agent_is_registered(
    manager: ManagerProcess,
) -> None:
    """14.7: password topsecret, groups default,linux, highest id 001: the reply is the 89 bytes of
    `OSSEC K:'002 web-01 any <64 hex>'`, the key random, everything else exact."""
    auth_manager(manager, "<use_password>yes</use_password><purge>yes</purge>")
    manager.home.create_layout()
    manager.home.client_keys.write_text(
        "001 agent-01 any 9a1b8c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b\n"
    )
    (manager.home.etc / "authd.pass").write_text("topsecret\n")
    (manager.home.etc / "shared" / "linux").mkdir(parents=True)
    manager.start()
    reply = enrol(manager, EXAMPLE_REQUEST)
    assert len(reply) == 89
    match = KEY_REPLY.fullmatch(reply)
    assert match is not None, reply
    assert match.group(1, 2, 3) == (b"002", b"web-01", b"any")
    key = match.group(4).decode()
    assert manager.home.client_keys.read_text().splitlines()[-1] == f"002 web-01 any {key}"
    assert stat.S_IMODE(manager.home.client_keys.stat().st_mode) == 0o640
    wait_until(lambda: bool(manager.query("SELECT 1 FROM agent WHERE id = 2")), "the agent in global.db")
    row = manager.query(
        "SELECT name, register_ip, internal_key, connection_status, `group`, date_add FROM agent WHERE id = 2"
    )[0]
    assert tuple(row)[:5] == ("web-01", "any", key, "never_connected", "default,linux")
    assert abs(row["date_add"] - time.time()) < 60
    assert manager.history(2) == [("never_connected", "never_connected", 0)]
    assert "Agent key generated for 'web-01' (requested by any)" in manager.output()


def test_the_new_key_is_accepted_by_remoted_at_once(manager: ManagerProcess) -> None:
    """No wait for the 10 s key reload: the agent that has its key connects and is acked."""
    auth_manager(manager, extra_remote="<keyupdate_interval>1h</keyupdate_interval>")
    manager.start()

    async def scenario() -> None:
        reply = await exchange(manager, enrolment.build_request("web-01", version="v4.14.7"))
        key = enrolment.parse_reply(reply)
        connection = await AgentConnection.open(AgentCodec(key), LOOPBACK, manager.port)
        connection.send(control.build_startup("v4.14.7"))
        assert await connection.receive(5) == control.Ack()
        connection.close()

    asyncio.run(scenario())
    wait_until(lambda: ("never_connected", "pending", 0) in manager.history(1), "the startup")


def test_errors_get_wazuhs_exact_reply_and_the_connection_is_closed(manager: ManagerProcess) -> None:
    auth_manager(manager, "<use_password>yes</use_password>")
    manager.home.create_layout()
    (manager.home.etc / "authd.pass").write_text("topsecret\n")
    manager.start()
    assert enrol(manager, b"OSSEC A:'web-01'\n") == b"ERROR: Invalid password. Unable to add agent"
    assert enrol(manager, b"OSSEC PASS: topsecret OSSEC A:'w'\n") == (
        b"ERROR: Invalid agent name: w. Unable to add agent"
    )
    assert enrol(manager, b"OSSEC PASS: topsecret OSSEC A:'web-01' G:'nope'\n") == (
        b"ERROR: Invalid group: nope. Unable to add agent"
    )
    assert enrol(manager, b"OSSEC PASS: topsecret OSSEC A:'web-01' V:'v4.15.0'\n") == (
        b"ERROR: Agent version must be lower or equal to manager version. Unable to add agent"
    )
    assert KEY_REPLY.fullmatch(enrol(manager, b"OSSEC PASS: topsecret OSSEC A:'web-01' V:'v4.14.9'\n"))
    assert enrol(manager, b"OSSEC PASS: topsecret OSSEC A:'web-01'\n") == (
        b"ERROR: Duplicate agent name: web-01. Unable to add agent"
    )


def test_a_re_enrolment_with_the_key_the_manager_has_is_a_duplicate_name(manager: ManagerProcess) -> None:
    """14.7, second half: key_mismatch (default yes) keeps an agent whose key is unchanged."""
    auth_manager(
        manager,
        '<force><disconnected_time enabled="no">0</disconnected_time>'
        "<after_registration_time>0</after_registration_time></force>",
    )
    manager.home.create_layout()
    line = "001 agent-01 any 9a1b8c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b"
    manager.home.client_keys.write_text(line + "\n")
    manager.start()
    same = b"OSSEC A:'agent-01' V:'v4.14.7' K:'e089b431998f81c0476046bfcada2b5594c9a03b'\n"
    assert enrol(manager, same) == b"ERROR: Duplicate agent name: agent-01. Unable to add agent"
    other = enrolment.build_request("agent-01", version="v4.14.7", key_hash="0" * 40)
    key = enrolment.parse_reply(enrol(manager, other))
    assert (key.id, key.name) == ("002", "agent-01")
    lines = manager.home.client_keys.read_text().splitlines()
    assert lines == [f"001 !agent-01 any {line.split()[3]}", key.line()]  # <purge>no: kept as removed
    wait_until(lambda: manager.status(1)[0] == "missing", "the replaced agent out of global.db")
    assert manager.history(1)[-1] == ("never_connected", "disconnected", 0)
    wait_until(lambda: manager.history(2) == [("never_connected", "never_connected", 0)], "the registration")
    assert "Duplicate name. Removing old agent 'agent-01' (id '001')." in manager.output()


def test_an_agent_enrolled_less_than_an_hour_ago_cannot_be_enrolled_again(manager: ManagerProcess) -> None:
    auth_manager(manager)
    manager.start()
    assert KEY_REPLY.fullmatch(enrol(manager, b"OSSEC A:'web-01'\n"))
    assert (
        enrol(manager, b"OSSEC A:'web-01'\n") == b"ERROR: Duplicate agent name: web-01. Unable to add agent"
    )
    assert "doesn't comply with the registration time" in manager.output()


def test_use_source_ip_registers_the_address_and_refuses_a_second_agent_from_it(
    manager: ManagerProcess,
) -> None:
    auth_manager(manager, "<use_source_ip>yes</use_source_ip>")
    manager.start()
    key = enrolment.parse_reply(enrol(manager, b"OSSEC A:'web-01'\n"))
    assert key.ip.text == LOOPBACK
    assert (
        enrol(manager, b"OSSEC A:'web-02'\n")
        == f"ERROR: Duplicate IP: {LOOPBACK}. Unable to add agent".encode()
    )
    forced = enrolment.parse_reply(enrol(manager, b"OSSEC A:'web-03' IP:'any'\n"))
    assert forced.ip.text == "any"


def test_the_status_event_of_a_registration_goes_through_the_outbox(manager: ManagerProcess) -> None:
    auth_manager(
        manager,
        nats="<nats><enabled>yes</enabled><start_without_nats>yes</start_without_nats><url>nats://127.0.0.1:1</url></nats>",
    )
    manager.start()
    enrol(manager, b"OSSEC A:'web-01'\n")
    wait_until(lambda: bool(manager.query("SELECT 1 FROM event_outbox")), "the outbox row")
    subject, msg_id, payload = manager.query("SELECT subject, msg_id, payload FROM event_outbox")[0]
    event = json.loads(payload)
    assert (subject, msg_id) == ("agent.status.001", "001:1")
    assert {key: event[key] for key in ("previous", "status", "status_code", "reason", "name")} == {
        "previous": "never_connected",
        "status": "never_connected",
        "status_code": 0,
        "reason": "registered",
        "name": "web-01",
    }


def test_the_certificate_is_made_on_first_start_and_kept(manager: ManagerProcess) -> None:
    auth_manager(manager)
    manager.start()
    cert, key = manager.home.etc / "sslmanager.cert", manager.home.etc / "sslmanager.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    before = cert.read_bytes()
    assert re.search(
        r"Created the enrolment certificate .* \(SHA-256 ([0-9A-F]{2}:){31}[0-9A-F]{2}\)", manager.output()
    )
    manager.stop()
    manager.start()
    assert cert.read_bytes() == before


def test_a_missing_password_file_gets_a_random_password_logged_once(manager: ManagerProcess) -> None:
    auth_manager(manager, "<use_password>yes</use_password>")
    manager.start()
    password = (manager.home.etc / "authd.pass").read_text().strip()
    assert re.fullmatch(r"[0-9a-f]{32}", password)
    assert f"Random password chosen for agent authentication: {password}" in manager.output()
    request = enrolment.build_request("web-01", password=password)
    assert KEY_REPLY.fullmatch(enrol(manager, request))


@pytest.mark.parametrize("workers", [2])
def test_with_worker_processes_every_worker_knows_the_key_before_the_reply(
    manager: ManagerProcess, workers: int
) -> None:
    auth_manager(manager, workers=workers, extra_remote="<keyupdate_interval>1h</keyupdate_interval>")
    manager.start()

    async def scenario() -> None:
        keys = [
            enrolment.parse_reply(await exchange(manager, enrolment.build_request(f"web-{n:02d}")))
            for n in range(8)
        ]
        # SO_REUSEPORT spreads the connections over the workers: each must accept its agent at once
        for key in keys:
            connection = await AgentConnection.open(AgentCodec(key), LOOPBACK, manager.port)
            connection.send(control.build_startup("v4.14.7"))
            assert await connection.receive(5) == control.Ack(), key.id
            connection.close()

    asyncio.run(scenario())
    assert [parse_line(line) is not None for line in manager.home.client_keys.read_text().splitlines()]
    assert len(list(KeysFile.parse(manager.home.client_keys.read_text()).active())) == 8


def _ca_and_agent_certificates(directory: Path, addresses: dict[str, str]) -> Path:
    """A CA, and for each name an agent certificate naming that IP address: <name>.cert / <name>.key."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test agents CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    (directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for name, address in addresses.items():
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address))]), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        (directory / f"{name}.cert").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (directory / f"{name}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return directory / "ca.pem"


def test_ssl_agent_ca_and_verify_host_want_an_agent_certificate_naming_its_address(
    manager: ManagerProcess, tmp_path: Path
) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    ca = _ca_and_agent_certificates(certs, {"good": LOOPBACK, "elsewhere": "10.9.9.9"})
    auth_manager(manager, f"<ssl_agent_ca>{ca}</ssl_agent_ca><ssl_verify_host>yes</ssl_verify_host>")
    manager.start()

    async def attempt(name: str | None) -> bytes:
        config = EnrollmentConfig(
            agent_certificate_path=str(certs / f"{name}.cert") if name else None,
            agent_key_path=str(certs / f"{name}.key") if name else None,
        )
        context = client_context(config, tmp_path)
        try:
            reader, writer = await asyncio.open_connection(LOOPBACK, manager.auth_port, ssl=context)
            writer.write(enrolment.build_request(f"agent-{name}"))
            data = await asyncio.wait_for(reader.read(1 << 16), 15)
            writer.close()
            return data
        except (ssl.SSLError, ConnectionError):
            return b""

    async def scenario() -> None:
        assert KEY_REPLY.fullmatch(await attempt("good"))
        assert await attempt(None) == b""  # no certificate: the handshake fails
        assert await attempt("elsewhere") == b""  # a certificate for another address: closed, no reply

    asyncio.run(scenario())
    assert "Unable to verify client certificate (from 127.0.0.1)." in manager.output()


def test_an_agent_that_verifies_the_manager_accepts_the_certificate_it_made(
    manager: ManagerProcess, tmp_path: Path
) -> None:
    auth_manager(manager)
    manager.start()
    config = EnrollmentConfig(server_ca_path=str(manager.home.etc / "sslmanager.cert"))
    context = client_context(config, tmp_path)
    request = enrolment.build_request("verifying-01")
    key = asyncio.run(request_key(LOOPBACK, manager.auth_port, request, context))
    assert key.name == "verifying-01"

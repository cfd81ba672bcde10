"""What port 1515 refuses, and that it keeps serving everyone else meanwhile: plain TCP, TLS below 1.2, a
request over 69,632 bytes, clients that never send, one address opening too many connections."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import time
import warnings

from agentpulse.agent.connection import AgentCodec, AgentConnection
from agentpulse.wire import control, enrolment
from tests.e2e.harness import LOOPBACK, ManagerProcess, ManagerSettings
from tests.e2e.test_enrolment import KEY_REPLY, exchange, tls_client

OTHER_SOURCE = "127.0.0.2"


def start(manager: ManagerProcess, options: str = "") -> None:
    manager.settings = ManagerSettings(auth=options)
    manager.start()


def open_files(manager: ManagerProcess) -> int:
    assert manager.process is not None
    return len(os.listdir(f"/proc/{manager.process.pid}/fd"))


async def enrols(manager: ManagerProcess, name: str) -> bool:
    return KEY_REPLY.fullmatch(await exchange(manager, enrolment.build_request(name))) is not None


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """What the manager sent before it closed, or AssertionError if it kept the connection open."""
    try:
        return await asyncio.wait_for(reader.read(1 << 20), seconds)
    except (ConnectionError, ssl.SSLError):
        return b""


def test_plain_tcp_is_refused_without_a_reply_and_others_still_enrol(manager: ManagerProcess) -> None:
    start(manager)

    async def scenario() -> None:
        reader, writer = await asyncio.open_connection(LOOPBACK, manager.auth_port)
        writer.write(b"OSSEC A:'web-01' V:'v4.14.7'\n")
        received = await closed_within(reader, 5)
        assert b"OSSEC" not in received  # a TLS alert at most
        writer.close()
        assert await enrols(manager, "web-02")

    asyncio.run(scenario())
    assert "TLS handshake with 127.0.0.1 failed" in manager.output()


def test_a_tls_1_0_only_client_is_refused(manager: ManagerProcess) -> None:
    start(manager)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        old.check_hostname = False
        old.verify_mode = ssl.CERT_NONE
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1
        old.set_ciphers("DEFAULT:@SECLEVEL=0")

    async def scenario() -> None:
        try:
            _, writer = await asyncio.open_connection(LOOPBACK, manager.auth_port, ssl=old)
        except (ssl.SSLError, ConnectionError):
            pass
        else:
            writer.close()
            raise AssertionError("a TLS 1.0 handshake succeeded")
        assert await enrols(manager, "web-01")

    asyncio.run(scenario())


def test_a_100_kb_request_is_closed_without_a_reply(manager: ManagerProcess) -> None:
    start(manager)

    async def scenario() -> None:
        reader, writer = await asyncio.open_connection(LOOPBACK, manager.auth_port, ssl=tls_client())
        writer.write(b"OSSEC A:'" + b"x" * 100 * 1024 + b"'\n")
        assert await closed_within(reader, 5) == b""
        writer.close()
        assert await enrols(manager, "web-01")

    asyncio.run(scenario())
    assert "a request longer than 69632 bytes" in manager.output()


def test_clients_that_never_send_are_closed_after_10_s_while_others_enrol(manager: ManagerProcess) -> None:
    start(manager)

    async def scenario() -> None:
        silent_tls, tls_writer = await asyncio.open_connection(LOOPBACK, manager.auth_port, ssl=tls_client())
        silent_tcp, tcp_writer = await asyncio.open_connection(LOOPBACK, manager.auth_port)  # no handshake
        began = time.monotonic()
        for n in range(5):
            assert await enrols(manager, f"web-{n:02d}")
        assert time.monotonic() - began < 5
        results = await asyncio.gather(closed_within(silent_tls, 20), closed_within(silent_tcp, 20))
        assert all(b"OSSEC" not in result for result in results)
        assert 9 < time.monotonic() - began < 20
        tls_writer.close()
        tcp_writer.close()

    asyncio.run(scenario())
    assert "no request within 10 s" in manager.output()


def test_one_address_over_its_rate_is_refused_and_another_address_is_not(manager: ManagerProcess) -> None:
    start(manager, "<source_rate>3</source_rate>")

    async def scenario() -> None:
        held = [
            (await asyncio.open_connection(LOOPBACK, manager.auth_port, ssl=tls_client()))[1]
            for _ in range(3)
        ]
        reader, writer = await asyncio.open_connection(LOOPBACK, manager.auth_port)  # the fourth
        assert await closed_within(reader, 5) == b""
        writer.close()
        other = await asyncio.open_connection(
            LOOPBACK, manager.auth_port, ssl=tls_client(), local_addr=(OTHER_SOURCE, 0)
        )
        other[1].write(enrolment.build_request("web-01"))
        assert KEY_REPLY.fullmatch(await other[0].read(1 << 16))
        for connection in held:
            connection.close()
        await asyncio.sleep(1.2)  # the bucket refills and the held connections are gone
        assert await enrols(manager, "web-02")

    asyncio.run(scenario())
    assert "connections open from this address. Rejecting the enrolment connection from 127.0.0.1" in (
        manager.output()
    )


def test_failed_handshakes_leave_no_file_open(manager: ManagerProcess) -> None:
    start(manager)

    async def garbage() -> None:
        for _ in range(30):
            with socket.create_connection((LOOPBACK, manager.auth_port)) as sock:
                sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
                sock.settimeout(5)
                try:
                    while sock.recv(4096):
                        pass
                except OSError:
                    pass
        assert await enrols(manager, "web-01")

    asyncio.run(garbage())  # the first round opens what the manager keeps (databases, the certificate)
    before = open_files(manager)
    asyncio.run(garbage_again(manager))
    time.sleep(0.5)
    assert open_files(manager) <= before + 2


async def garbage_again(manager: ManagerProcess) -> None:
    for n in range(30):
        with socket.create_connection((LOOPBACK, manager.auth_port)) as sock:
            sock.sendall(b"\x16\x03\x01\x00\x05hello")
            sock.settimeout(5)
            try:
                while sock.recv(4096):
                    pass
            except OSError:
                pass
        if n % 10 == 0:
            assert await enrols(manager, f"again-{n:02d}")


def test_a_taken_enrolment_port_turns_enrolment_off_and_remoted_serves_on(manager: ManagerProcess) -> None:
    (key,) = manager.add_agents(1)
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind((LOOPBACK, manager.auth_port))
        squatter.listen()
        start(manager)
        assert f"Enrolment is off: cannot listen on port {manager.auth_port}" in manager.output()

        async def scenario() -> None:
            connection = await AgentConnection.open(AgentCodec(key), LOOPBACK, manager.port)
            connection.send(control.build_startup("v4.14.7"))
            assert await connection.receive(10) == control.Ack()
            connection.close()

        asyncio.run(scenario())

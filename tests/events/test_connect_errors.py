"""Wrong credentials or an unreachable server: exit 1 when NATS is required, keep serving agents when not."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import ManagerProcess
from tests.events.fleet import Agent, nats_settings, read_stream
from tests.events.natsserver import NatsServer, free_port

USER, PASSWORD, WRONG = "agentpulse", "s3cret", "not-the-password-9f2"


@pytest.fixture
def secured_nats(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "nats" / "store", user=USER, password=PASSWORD)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def wrong_credentials(server: NatsServer) -> tuple[str, str]:
    return server.url, f"<user>{USER}</user><password>{WRONG}</password>"


def unreachable(_: NatsServer) -> tuple[str, str]:
    return f"nats://127.0.0.1:{free_port()}", ""


CASES = {
    "wrong credentials": (wrong_credentials, "the server refused the credentials (Authorization Violation)"),
    "unreachable url": (unreachable, "connection refused"),
}


@pytest.mark.parametrize("case", CASES)
def test_required_nats_that_cannot_be_used_stops_the_start_with_exit_1(
    case: str, secured_nats: NatsServer, manager: ManagerProcess
) -> None:
    target, reason = CASES[case]
    url, extra = target(secured_nats)
    manager.settings = nats_settings(url, extra + "<start_without_nats>no</start_without_nats>")
    with pytest.raises(RuntimeError, match="manager exited with 1"):
        manager.start()
    output = manager.output()
    assert f"Cannot start: NATS at {url} is unavailable: {reason}" in output
    assert "start_without_nats> is no" in output
    assert "Traceback" not in output
    assert PASSWORD not in output and WRONG not in output


@pytest.mark.parametrize("case", CASES)
def test_optional_nats_that_cannot_be_used_logs_a_retry_line_and_agents_are_served(
    case: str, secured_nats: NatsServer, manager: ManagerProcess
) -> None:
    target, reason = CASES[case]
    url, extra = target(secured_nats)
    manager.settings = nats_settings(url, extra)
    (key,) = manager.add_agents(1)
    manager.start()

    async def scenario() -> None:
        agent = await Agent.connect(manager, key)
        await agent.startup()
        await agent.keepalive()
        await manager.reach(key.number, "active")
        agent.close()

    asyncio.run(scenario())
    output = manager.output()
    retry_line = f"NATS at {url} is unavailable: {reason}; the manager keeps serving agents"
    assert output.count(retry_line) == 1, output[-2000:]
    assert manager.query("SELECT COUNT(*) FROM event_outbox")[0][0] == 2


def test_right_credentials_publish(secured_nats: NatsServer, manager: ManagerProcess) -> None:
    manager.settings = nats_settings(
        secured_nats.url,
        f"<user>{USER}</user><password>{PASSWORD}</password><start_without_nats>no</start_without_nats>",
    )
    (key,) = manager.add_agents(1)
    manager.start()

    async def scenario() -> None:
        agent = await Agent.connect(manager, key)
        await agent.startup()
        agent.close()

    asyncio.run(scenario())
    url = secured_nats.url.replace("nats://", f"nats://{USER}:{PASSWORD}@")
    (message,) = asyncio.run(read_stream(url, at_least=1))
    assert message.subject == f"agent.status.{key.number:03d}"

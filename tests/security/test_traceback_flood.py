"""Issue 17, item 5: deeply nested JSON in a startup or a `#!-req` reply costs one log line, not a traceback
per message. The startup is refused (its connection closed), the reply ignored (the agent stays), and the
other agents never notice."""

from __future__ import annotations

import asyncio

from agentpulse.agent.connection import AgentCodec, AgentConnection
from agentpulse.wire import control
from agentpulse.wire.keys import AgentKey
from tests.e2e.harness import LOOPBACK, ManagerProcess
from tests.e2e.test_statuses import KEEPALIVE

DEEP = "[" * 5_000 + "]" * 5_000  # json.loads: RecursionError at about 1,000 levels
ATTEMPTS = 20


async def online(manager: ManagerProcess, key: AgentKey) -> AgentConnection:
    connection = await AgentConnection.open(AgentCodec(key), LOOPBACK, manager.port)
    connection.send(control.build_startup("v4.14.7"))
    assert await connection.receive(timeout=5) == control.Ack()
    return connection


async def acked(connection: AgentConnection) -> None:
    connection.send(KEEPALIVE)
    assert await connection.receive(timeout=5) == control.Ack()


def test_a_startup_with_deeply_nested_json_is_refused_with_one_line(manager: ManagerProcess) -> None:
    healthy, attacker = manager.add_agents(2)
    manager.start()
    startup = control.CONTROL_HEADER + control.HC_STARTUP + f'{{"version":{DEEP}}}'.encode()

    async def scenario() -> None:
        good = await online(manager, healthy)
        for _ in range(ATTEMPTS):
            bad = await AgentConnection.open(AgentCodec(attacker), LOOPBACK, manager.port)
            bad.send(startup)
            assert await bad.receive(timeout=5) is None  # closed without an answer
            await acked(good)
        assert not good.closed.is_set()
        good.close()

    asyncio.run(scenario())
    output = manager.output()
    assert output.count("refused: JSON too large or too deeply nested: nested deeper than 32") == 1
    assert "Traceback" not in output and "RecursionError" not in output
    assert manager.status(attacker.number) == ("never_connected", 0)
    manager.wait_for(healthy.number, "active")


def test_a_request_reply_with_deeply_nested_json_is_ignored_and_the_agent_stays(
    manager: ManagerProcess,
) -> None:
    (key,) = manager.add_agents(1)
    manager.start()
    reply = control.build_request_reply("1a2b", f'{{"data":{DEEP}}}')

    async def scenario() -> None:
        connection = await online(manager, key)
        await acked(connection)
        for _ in range(ATTEMPTS):
            connection.send(reply)
            await acked(connection)  # same connection: the reply was ignored, nothing closed
        assert not connection.closed.is_set()
        connection.close()

    asyncio.run(scenario())
    output = manager.output()
    assert output.count("request reply ignored: JSON too large or too deeply nested") == 1
    assert "Traceback" not in output and "RecursionError" not in output
    manager.wait_for(key.number, "active")

"""Shared files against a real manager and real `agentpulse agent` processes: the default group's merged.mg
reaches an agent, a group change reaches it again, `agentpulse group` shows it, and workers push too."""

from __future__ import annotations

import json

import pytest

from agentpulse.shared.merge import md5_hex
from tests.e2e.harness import AgentFactory, ManagerProcess, run_cli, wait_until

DEFAULT_MD5 = "ca35f9148a3273413eccb79f149f4757"  # reference 15.7


def _row(manager: ManagerProcess, agent_id: int) -> tuple[str | None, str]:
    rows = manager.query("SELECT merged_sum, group_config_status FROM agent WHERE id = ?", agent_id)
    return (rows[0][0], rows[0][1]) if rows else (None, "missing")


@pytest.mark.parametrize("workers", [1, 2])
def test_an_agent_gets_its_groups_merged_mg_and_a_change_reaches_it(
    manager: ManagerProcess, agent_process: AgentFactory, workers: int
) -> None:
    manager.settings.workers = workers
    manager.settings.shared_push = True
    manager.settings.extra_remote = "<shared_reload>1</shared_reload>"
    (key,) = manager.add_agents(1)
    manager.start()
    assert (manager.root / "etc/shared/default/merged.mg").read_bytes()[:9] == b"#default\n"
    agent = agent_process(key)
    agent.start()
    manager.wait_for(key.number, "active", 0, timeout=30)  # an agent process starts slowly on a busy machine
    wait_until(lambda: _row(manager, key.number) == (DEFAULT_MD5, "synced"), "the default merged.mg", 30)
    shared = agent.home.shared_dir
    assert md5_hex((shared / "merged.mg").read_bytes()) == DEFAULT_MD5
    assert (shared / "agent.conf").read_bytes() == (
        manager.root / "etc/shared/default/agent.conf"
    ).read_bytes()

    (manager.root / "etc/shared/default/agent.conf").write_text("<agent_config><labels/></agent_config>\n")
    (manager.root / "etc/shared/default/extra.txt").write_text("more\n")
    reload = run_cli("agentpulse", "group", "reload", home=manager.root)
    assert reload.returncode == 0, reload.stderr
    new_md5 = md5_hex((manager.root / "etc/shared/default/merged.mg").read_bytes())
    assert new_md5 != DEFAULT_MD5 and new_md5 in reload.stdout
    wait_until(lambda: _row(manager, key.number) == (new_md5, "synced"), "the changed merged.mg", 30)
    assert (shared / "extra.txt").read_text() == "more\n"
    status = run_cli("agentpulse", "group", "status", "default", "--json", home=manager.root)
    assert status.returncode == 0, status.stderr
    counts = json.loads(status.stdout)
    assert (counts["members"], counts["synced"], counts["md5"]) == (1, 1, new_md5)
    files = run_cli("agentpulse", "group", "files", "default", home=manager.root)
    assert files.returncode == 0, files.stderr
    assert "extra.txt" in files.stdout and md5_hex(b"more\n") in files.stdout
    created = run_cli("agentpulse", "group", "create", "web", home=manager.root)
    assert created.returncode == 0, created.stderr
    assert (manager.root / "etc/shared/web/agent.conf").stat().st_size == 76  # the stock agent.conf


def test_a_chunk_that_would_begin_with_the_control_header_reaches_a_wazuh_like_agent_whole(
    manager: ManagerProcess, agent_process: AgentFactory
) -> None:
    """Reference 15.5 caveat: a 900-byte chunk starting with `#!-` is taken by agentd for a control message
    and the file is cut short. agentpulse starts such a chunk one byte earlier; the agent (which behaves as
    agentd does) gets the whole file."""
    manager.settings.shared_push = True
    manager.settings.extra_remote = "<shared_reload>1</shared_reload>"
    (key,) = manager.add_agents(1)
    manager.home.create_layout()
    group = manager.root / "etc/shared/default"
    group.mkdir(parents=True)
    body = b"a" * 874 + b"#!-not a control message\n" + b"b" * 1101  # 2000 bytes
    (group / "agent.conf").write_bytes(body)
    merged = b"#default\n!2000 agent.conf\n" + body
    assert merged[900:903] == b"#!-"
    manager.start()
    agent = agent_process(key)
    agent.start()
    wait_until(lambda: _row(manager, key.number) == (md5_hex(merged), "synced"), "the whole file", 30)
    assert (agent.home.shared_dir / "merged.mg").read_bytes() == merged
    assert (agent.home.shared_dir / "agent.conf").read_bytes() == body


@pytest.mark.parametrize("name", ["..", "../etc", "a/b", "x%00y"])
def test_group_names_that_are_paths_are_refused_by_every_command(manager: ManagerProcess, name: str) -> None:
    manager.start()
    name = name.replace("%00", "\0")
    for action in ("create", "files", "push", "status"):
        done = run_cli("agentpulse", "group", action, name, home=manager.root) if "\0" not in name else None
        if done is not None:
            assert done.returncode == 1 and "invalid group name" in done.stderr, (action, done.stderr)
    from tests.e2e.wdb_tools import ask

    for command in ("shared-files", "shared-push", "shared-status"):
        reply = ask(manager, f"remoted {command} {name}".encode())
        if "\0" in name:  # the query socket ends a request at a NUL, as wazuh-db does: the name is "x"
            assert reply == b"err Group 'x' has no folder", (command, reply)
            break
        assert reply is not None and reply.startswith(b"err Invalid group name"), (command, reply)
    assert sorted(p.name for p in (manager.root / "etc/shared").iterdir()) == ["default"]


def test_an_agent_that_disconnects_mid_push_gets_it_again_and_is_never_synced_on_a_cut_file(
    manager: ManagerProcess,
) -> None:
    import asyncio

    manager.settings.shared_push = True

    from agentpulse.agent.connection import AgentCodec, AgentConnection
    from agentpulse.wire import control
    from tests.e2e.harness import LOOPBACK

    (key,) = manager.add_agents(1)
    manager.home.create_layout()
    group = manager.root / "etc/shared/default"
    group.mkdir(parents=True)
    (group / "big.txt").write_bytes(bytes(range(32, 127)) * 2000)  # 190 KB: 212 chunks
    manager.start()
    merged = (group / "merged.mg").read_bytes()
    codec = AgentCodec(key)

    def keepalive(md5: str | None) -> bytes:
        return control.build_keepalive("Linux |h |1 |2 |x86_64 - Wazuh v4.14.7", merged_sum=md5)

    async def connect() -> AgentConnection:
        connection = await AgentConnection.open(codec, LOOPBACK, manager.port)
        connection.send(control.build_startup("v4.14.7"))
        assert await connection.receive(timeout=10) == control.Ack()
        return connection

    async def scenario() -> tuple[list[str], bytes]:
        seen: list[str] = []
        first = await connect()
        first.send(keepalive(None))  # "x merged.mg": no file yet
        assert await first.receive(timeout=10) == control.Ack()
        update = await first.receive(timeout=10)
        assert isinstance(update, control.FileUpdate) and update.md5 == md5_hex(merged)
        assert isinstance(await first.receive(timeout=10), control.AgentEvent)  # one chunk, then gone
        first.close()
        await asyncio.sleep(0.5)
        seen.append(_row(manager, key.number)[1])
        second = await connect()
        second.send(keepalive(md5_hex(merged[:900])))  # what a cut file hashes to
        data = b""
        while True:
            message = await second.receive(timeout=10)
            if isinstance(message, control.FileClose):
                break
            if isinstance(message, control.AgentEvent):
                data += message.payload
            elif isinstance(message, control.FileUpdate):
                data = b""
        await asyncio.sleep(0.5)
        seen.append(_row(manager, key.number)[1])
        second.send(keepalive(md5_hex(data)))
        assert await second.receive(timeout=10) == control.Ack()
        for _ in range(50):
            if _row(manager, key.number)[1] == "synced":
                break
            await asyncio.sleep(0.1)
        seen.append(_row(manager, key.number)[1])
        second.close()
        return seen, data

    seen, data = asyncio.run(scenario())
    assert data == merged
    assert seen == ["not synced", "not synced", "synced"]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_udp_agent_gets_a_file_of_many_chunks_paced(
    manager: ManagerProcess, agent_process: AgentFactory, workers: int
) -> None:
    """UDP: Wazuh's pacing (a pause after the 32nd data chunk); with workers, every worker is asked and the
    one that holds the agent's peer sends."""
    manager.settings.shared_push = True
    manager.settings.protocols = "udp"
    manager.settings.workers = workers
    (key,) = manager.add_agents(1)
    manager.home.create_layout()
    group = manager.root / "etc/shared/default"
    group.mkdir(parents=True)
    (group / "rules.txt").write_bytes(b"rule\n" * 8000)  # 40 KB: 45 chunks, one pause
    manager.start()
    merged = (group / "merged.mg").read_bytes()
    agent = agent_process(key, protocol="udp")
    agent.start()
    wait_until(lambda: _row(manager, key.number) == (md5_hex(merged), "synced"), "the file over UDP", 30)
    assert (agent.home.shared_dir / "rules.txt").read_bytes() == b"rule\n" * 8000

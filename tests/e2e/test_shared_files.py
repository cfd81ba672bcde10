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
    manager.settings.extra_remote = "<shared_reload>1</shared_reload>"
    (key,) = manager.add_agents(1)
    manager.start()
    assert (manager.root / "etc/shared/default/merged.mg").read_bytes()[:9] == b"#default\n"
    agent = agent_process(key)
    agent.start()
    manager.wait_for(key.number, "active", 0)
    wait_until(lambda: _row(manager, key.number) == (DEFAULT_MD5, "synced"), "the default merged.mg", 15)
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
    wait_until(lambda: _row(manager, key.number) == (new_md5, "synced"), "the changed merged.mg", 15)
    assert (shared / "extra.txt").read_text() == "more\n"
    status = run_cli("agentpulse", "group", "status", "default", "--json", home=manager.root)
    assert status.returncode == 0, status.stderr
    counts = json.loads(status.stdout)
    assert (counts["members"], counts["synced"], counts["md5"]) == (1, 1, new_md5)
    files = run_cli("agentpulse", "group", "files", "default", home=manager.root)
    assert files.returncode == 0, files.stderr
    assert "extra.txt" in files.stdout and md5_hex(b"more\n") in files.stdout

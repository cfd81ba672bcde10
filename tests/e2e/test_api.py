"""The HTTP API against a real manager with real agents (the Python agent and wire-level agents): every
endpoint and parameter of reference section 16, compared with agent_control -j and the query socket."""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import time
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from agentpulse.keysfile import read_keys_file
from agentpulse.status import ConnectionStatus
from tests.e2e.api_tools import ADMIN, READER, Api, add_user, agent_control_statuses
from tests.e2e.harness import AgentFactory, ManagerProcess, ManagerSettings, run_cli
from tests.e2e.wdb_tools import FleetStats, ask, run_agent

HTTP = "<https><enabled>no</enabled></https>"
FLEET = 12  # 001 the Python agent, 002-007 wire agents kept alive, 008-012 never connected
WIRE = range(2, 8)
WORDS = {status.value: status.words for status in ConnectionStatus}


def start(manager: ManagerProcess, api: str = HTTP, **settings: object) -> Api:
    manager.settings = ManagerSettings(api=api, **settings)  # type: ignore[arg-type]
    manager.add_agents(FLEET)
    manager.write_config()
    add_user(manager, *ADMIN, "admin")
    add_user(manager, *READER, "read")
    manager.start()
    client = Api(manager)
    client.token = client.login(ADMIN)
    return client


class WireFleet:
    """Wire-level agents 002-007 in a thread of their own, kept alive every second."""

    def __init__(self, manager: ManagerProcess) -> None:
        self.manager = manager
        self.stats = FleetStats()
        self.loop = asyncio.new_event_loop()
        self.stop = asyncio.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        keys = {
            key.number: key
            for key in __import__("agentpulse.keysfile", fromlist=["x"])
            .read_keys_file(self.manager.home.client_keys)
            .active()
        }

        async def main() -> None:
            self.stop = asyncio.Event()
            await asyncio.gather(
                *(run_agent(self.manager, keys[n], self.stop, self.stats, 1.0) for n in WIRE)
            )

        self.loop.run_until_complete(main())

    def __enter__(self) -> WireFleet:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(20)


@pytest.fixture
def fleet(manager: ManagerProcess, agent_process: AgentFactory) -> Iterator[tuple[Api, ManagerProcess]]:
    api = start(manager)
    keys = list(read_keys_file(manager.home.client_keys).active())
    python_agent = agent_process(keys[0])
    python_agent.start()
    with WireFleet(manager):
        manager.wait_for(1, "active", timeout=20)
        for number in WIRE:
            manager.wait_for(number, "active", timeout=20)
        yield api, manager


def wdb_status(manager: ManagerProcess, agent_id: int) -> str:
    reply = ask(manager, f"global get-agent-info {agent_id}".encode())
    assert reply is not None and reply.startswith(b"ok ")
    (row,) = json.loads(reply[3:])
    return str(row["connection_status"])


def test_list_and_summary_agree_with_agent_control_and_the_query_socket(
    fleet: tuple[Api, ManagerProcess],
) -> None:
    api, manager = fleet
    time.sleep(0.5)  # one flush: the view and global.db agree
    listed = api.get("/agents?limit=100")
    items = listed["data"]["affected_items"]
    assert listed["error"] == 0 and listed["data"]["total_affected_items"] == FLEET + 1
    assert [i["id"] for i in items] == [f"{n:03d}" for n in range(FLEET + 1)]
    control = agent_control_statuses(manager)
    for item in items[1:]:
        assert WORDS[item["status"]] == control[item["id"]]
        assert item["status"] == wdb_status(manager, int(item["id"]))
    assert items[0]["lastKeepAlive"] == "9999-12-31T23:59:59+00:00"
    python_agent = items[1]
    assert python_agent["status"] == "active" and python_agent["version"].startswith("Wazuh v")
    assert {"name", "platform", "uname"} <= set(python_agent["os"])
    assert "internal_key" not in python_agent and "lastKeepAlive" in python_agent
    assert "version" not in items[FLEET] and "os" not in items[FLEET]  # never connected: NULLs absent

    summary = api.get("/agents/summary/status")["data"]
    counts = {s: sum(1 for i in items[1:] if i["status"] == s) for s in WORDS}
    assert summary["connection"] == {**counts, "total": FLEET}
    assert counts["active"] == 1 + len(WIRE) and counts["never_connected"] == FLEET - 1 - len(WIRE)
    assert summary["configuration"]["total"] == FLEET


def test_every_parameter_of_get_agents(fleet: tuple[Api, ManagerProcess]) -> None:
    api, _ = fleet
    time.sleep(0.5)

    def ids(query: str) -> list[str]:
        return [i["id"] for i in api.get(f"/agents?{query}")["data"]["affected_items"]]

    active = [f"{n:03d}" for n in (1, *WIRE)]
    assert ids("status=active&q=id!=000") == active
    assert ids("status=never_connected,pending") == [f"{n:03d}" for n in range(8, FLEET + 1)]
    assert ids("agents_list=003,001&select=name") == ["001", "003"]
    only = api.get("/agents?agents_list=002&select=name,os.platform,status")["data"]["affected_items"][0]
    assert set(only) == {"id", "name", "status", "os"} and set(only["os"]) == {"platform"}
    assert ids("limit=3&offset=2") == ["002", "003", "004"]
    page = api.get("/agents?limit=2&offset=0&sort=-id")["data"]
    assert [i["id"] for i in page["affected_items"]] == [f"{FLEET:03d}", f"{FLEET - 1:03d}"]
    assert page["total_affected_items"] == FLEET + 1
    names = [i["name"] for i in api.get("/agents?sort=-name&q=id!=000&limit=100")["data"]["affected_items"]]
    assert names == sorted(names, reverse=True)
    assert ids("search=agent-00005") == ["005"]
    assert "005" not in ids("search=-agent-00005&limit=100") and "004" in ids("search=-agent-00005&limit=100")
    assert ids("q=" + quote("name=agent-00002,name=agent-00004")) == ["002", "004"]
    assert ids("q=" + quote("(status=active,status=pending);id>5")) == ["006", "007"]
    assert ids("q=" + quote("name~00010")) == ["010"]
    assert ids("q=" + quote("lastKeepAlive<1d;id!=000")) == active
    assert ids("older_than=1h&q=id!=000") == []
    time.sleep(1.2)
    assert ids("older_than=1s&status=never_connected") == [f"{n:03d}" for n in range(8, FLEET + 1)]
    every = api.get("/agents?limit=100&q=id!=000")["data"]["affected_items"]
    platform = every[1]["os"]["platform"]
    on_platform = [i["id"] for i in every if i.get("os", {}).get("platform") == platform]
    assert f"{WIRE[0]:03d}" in on_platform
    assert ids(f"os.platform={platform}&q=id!=000") == on_platform
    version = every[1]["version"]
    with_version = [i["id"] for i in every if i.get("version") == version]
    assert f"{WIRE[0]:03d}" in with_version
    assert ids("version=" + quote(version.split(" v")[1]) + "&q=id!=000") == with_version
    assert ids("version=" + quote("wazuh " + version.split(" v")[1]) + "&q=id!=000") == with_version
    assert len(ids("group=default&limit=100")) == FLEET
    failed = api.get("/agents?agents_list=001,777")
    assert failed["error"] == 2 and failed["data"]["failed_items"][0]["error"]["code"] == 1701
    assert failed["data"]["failed_items"][0]["id"] == ["777"]
    none = api.get("/agents?agents_list=777")
    assert none["error"] == 1 and none["message"] == "No agent information was returned"


BAD_PARAMETERS = [
    ("limit=-1", None),
    ("limit=100001", 1405),
    ("offset=-1", None),
    ("select=name,nonexistent", 1724),
    ("sort=-password", 1403),
    ("status=hacked", None),
    ("q=" + quote("id=1;DROP TABLE agent"), 1407),
    ("q=" + quote("name=x') OR 1=1 --"), 1407),
    ("q=" + quote("internal_key~a"), 1408),
    ("q=" + quote("lastKeepAlive=1d"), 1409),
    ("q=" + quote("(name=a"), 1407),
    ("older_than=yesterday", 1411),
]


def test_bad_parameters_get_wazuh_error_envelopes(manager: ManagerProcess) -> None:
    api = start(manager)
    for query, code in BAD_PARAMETERS:
        reply = api.call("GET", f"/agents?{query}")
        assert reply.status == 400, query
        assert reply.headers["content-type"] == "application/problem+json"
        problem = reply.json()
        assert problem["title"] == "Bad Request" and problem["detail"]
        assert problem.get("error") == code, (query, problem)
    assert api.get("/agents?limit=100")["data"]["total_affected_items"] == FLEET + 1  # nothing was touched


def test_no_route_is_reachable_without_a_valid_token(manager: ManagerProcess) -> None:
    api = start(manager, api=HTTP + "<max_login_attempts>3</max_login_attempts>")
    routes = [
        ("GET", "/agents"),
        ("DELETE", "/agents?agents_list=all&status=all"),
        ("GET", "/agents/summary/status"),
        ("PUT", "/agents/reconnect"),
        ("GET", "/agents/stream"),
        ("GET", "/agents/001/history"),
        ("PUT", "/agents/group?group_id=default"),
        ("DELETE", "/agents/group?group_id=default"),
        ("GET", "/groups"),
        ("POST", "/groups"),
        ("GET", "/groups/default/agents"),
        ("GET", "/manager/status"),
        ("GET", "/openapi.json"),
        ("GET", "/agents/summary/status/history"),
    ]
    for method, path in routes:
        for token in ("", "not.a.token", api.token[:-4] + "AAAA"):
            reply = api.call(method, path, token=token)
            assert reply.status == 401, (method, path, reply.body)
            assert reply.json()["title"] == "Unauthorized"
    metrics = api.call("GET", "/metrics", token="")  # the metrics package's render, no token by default
    assert metrics.status == 200 and metrics.headers["content-type"].startswith("text/plain")
    assert f'agentpulse_agents{{status="never_connected"}} {FLEET}' in metrics.body.decode()
    assert api.call("GET", "/", token="").status == 200  # the page's login form

    reader = api.login(READER)
    assert api.call("GET", "/agents", token=reader).status == 200
    denied = api.call("DELETE", "/agents?agents_list=001&status=all", token=reader)
    assert denied.status == 403 and denied.json()["error"] == 4000
    assert api.call("PUT", "/agents/reconnect", token=reader).status == 403

    # the user removed: their token stops working at once
    removed = run_cli("agentpulse", "api-user", "remove", "reader", home=manager.root)
    assert removed.returncode == 0, removed.stderr
    assert api.call("GET", "/agents", token=reader).json()["detail"] == "Invalid token"

    # failed logins from one address: blocked after 3, even with the right password
    import base64

    for _ in range(3):
        bad = base64.b64encode(b"admin:wrong").decode()
        reply = api.call(
            "POST", "/security/user/authenticate", token="", headers={"Authorization": f"Basic {bad}"}
        )
        assert reply.status == 401 and reply.json()["detail"] == "Invalid credentials"
    good = base64.b64encode(f"{ADMIN[0]}:{ADMIN[1]}".encode()).decode()
    blocked = api.call(
        "POST", "/security/user/authenticate", token="", headers={"Authorization": f"Basic {good}"}
    )
    assert blocked.status == 403 and blocked.json()["error"] == 6000

    # a new signing key at restart revokes every token
    old = api.token
    manager.stop()
    (manager.home.root / "etc" / "api" / "jwt.key").unlink()
    manager.start()
    assert api.call("GET", "/agents", token=old).status == 401


def test_delete_reconnect_and_groups(fleet: tuple[Api, ManagerProcess]) -> None:
    api, manager = fleet
    # reconnect: the active wire agents are told, the never-connected one fails with 1707
    reply = api.call("PUT", "/agents/reconnect?agents_list=002,003,009,000").json()
    assert reply["data"]["affected_items"] == ["002", "003"]
    assert {f["error"]["code"] for f in reply["data"]["failed_items"]} == {1703, 1707}
    implicit = api.call("PUT", "/agents/reconnect").json()
    assert implicit["error"] == 0 and "009" not in implicit["data"]["affected_items"]

    # groups: create, assign, list, the members, unassign; the query socket agrees
    assert api.call("POST", "/groups", body=b'{"group_id":"web"}').status == 200
    assert api.call("POST", "/groups", body=b'{"group_id":"web"}').json()["error"] == 1711
    assert api.call("POST", "/groups", body=b'{"group_id":"../etc"}').json()["error"] == 1722
    assigned = api.call("PUT", "/agents/group?group_id=web&agents_list=004,005").json()
    assert assigned["data"]["affected_items"] == ["004", "005"], assigned
    groups = {g["name"]: g["count"] for g in api.get("/groups")["data"]["affected_items"]}
    assert groups == {"default": FLEET, "web": 2}
    members = api.get("/groups/web/agents?select=group")["data"]["affected_items"]
    assert [m["id"] for m in members] == ["004", "005"] and members[0]["group"] == ["default", "web"]
    belong = ask(manager, b"global select-group-belong 4")
    assert belong is not None and json.loads(belong[3:]) == ["default", "web"]
    single = api.call("PUT", "/agents/group?group_id=web&agents_list=006&force_single_group=true").json()
    assert single["message"].endswith("and removed from the other groups")
    assert api.get("/agents?agents_list=006")["data"]["affected_items"][0]["group"] == ["web"]
    removed = api.call("DELETE", "/agents/group?group_id=web&agents_list=004,007").json()
    assert removed["data"]["affected_items"] == ["004"]
    assert removed["data"]["failed_items"][0]["error"]["code"] == 1734
    assert api.call("GET", "/groups/nope/agents").status == 404

    # delete: only agents matching every filter; the rest fail 1731; history and client.keys follow
    deleted = api.call(
        "DELETE", "/agents?agents_list=009,010,002&status=never_connected&older_than=0s"
    ).json()
    assert deleted["data"]["affected_items"] == ["009", "010"], deleted
    assert deleted["data"]["failed_items"][0]["error"]["code"] == 1731
    assert deleted["data"]["failed_items"][0]["id"] == ["002"]
    assert "009" not in agent_control_statuses(manager)
    assert "009 !agent-00009" in manager.home.client_keys.read_text()
    history = api.get("/agents/009/history")["data"]["affected_items"]
    assert history[0]["to"] == "disconnected" and history[0]["reason"] == "removed"
    assert api.get("/agents/summary/status")["data"]["connection"]["total"] == FLEET - 2
    default_7d = api.call("DELETE", "/agents?agents_list=011&status=all").json()
    assert (
        default_7d["data"]["older_than"] == "7d"
        and default_7d["data"]["failed_items"][0]["error"]["code"] == 1731
    )
    assert api.call("DELETE", "/agents?status=all").status == 400  # agents_list is required


def test_stream_and_history_follow_an_agent_that_connects_and_is_killed(
    manager: ManagerProcess, agent_process: AgentFactory
) -> None:
    api = start(manager)
    keys = list(read_keys_file(manager.home.client_keys).active())
    connection = api.connection()
    connection.request(
        "GET", "/agents/stream?snapshot=true", headers={"Authorization": f"Bearer {api.token}"}
    )
    response = connection.getresponse()
    assert response.status == 200 and response.getheader("Content-Type") == "text/event-stream"
    agent = agent_process(keys[0])
    agent.start()
    manager.wait_for(1, "active", timeout=20)
    agent.kill()
    manager.wait_for(1, "disconnected", timeout=10)
    seen: list[tuple[str, str]] = []
    deadline = time.monotonic() + 10
    buffer = b""
    while time.monotonic() < deadline and ("active", "disconnected") not in seen:
        buffer += response.read1(65536)
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            lines = dict(line.split(": ", 1) for line in block.decode().splitlines() if ": " in line)
            if lines.get("event") == "status":
                document = json.loads(lines["data"])
                seen += [(c["from"], c["to"]) for c in document["changes"] if c["id"] == "001"]
                assert document["counts"]["total"] == FLEET
    connection.close()
    assert ("never_connected", "pending") in seen or ("never_connected", "active") in seen
    assert ("active", "disconnected") in seen
    history = api.get("/agents/001/history")["data"]["affected_items"]
    assert history[0]["to"] == "disconnected" and history[0]["status_code"] == 6
    status = api.get("/manager/status")["data"]
    assert status["listeners"] and status["store"]["write_errors"] == 0
    chart = api.get("/agents/summary/status/history?minutes=5")["data"]["series"]
    assert len(chart) == 5 and chart[-1]["disconnected"] == 1


def test_https_with_the_certificate_made_on_first_start(manager: ManagerProcess) -> None:
    manager.settings = ManagerSettings(
        api="<https><enabled>yes</enabled></https><metrics_auth>yes</metrics_auth>"
    )
    manager.add_agents(2)
    manager.write_config()
    add_user(manager, *ADMIN, "admin")
    manager.start()
    cert = manager.home.root / "etc" / "api" / "server.crt"
    assert cert.exists() and (cert.with_name("server.key").stat().st_mode & 0o077) == 0
    context = ssl.create_default_context(cafile=str(cert))
    api = Api(manager, context=context)
    api.token = api.login(ADMIN)
    assert api.get("/agents/summary/status")["data"]["connection"]["total"] == 2
    plain = Api(manager)
    with pytest.raises((ConnectionError, OSError, Exception)):
        plain.call("GET", "/agents")
    assert api.call("GET", "/metrics", token="").status == 401  # <metrics_auth>yes
    assert api.call("GET", "/metrics").status == 200
    openapi = api.get("/openapi.json")
    assert {"/agents", "/agents/summary/status", "/agents/stream", "/groups", "/manager/status"} <= set(
        openapi["paths"]
    )


def test_reconnect_and_delete_reach_agents_held_by_worker_processes(manager: ManagerProcess) -> None:
    api = start(manager, workers=2)
    with WireFleet(manager) as fleet:
        for number in WIRE:
            manager.wait_for(number, "active", timeout=20)
        reply = api.call("PUT", "/agents/reconnect?agents_list=002,003").json()
        assert reply["data"]["affected_items"] == ["002", "003"]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not {2, 3} <= set(fleet.stats.reconnects):
            time.sleep(0.1)
        assert {2, 3} <= set(fleet.stats.reconnects), fleet.stats.reconnects
        assert 4 not in fleet.stats.reconnects

        deleted = api.call("DELETE", "/agents?agents_list=004&status=active&older_than=0s&purge=true").json()
        assert deleted["data"]["affected_items"] == ["004"], deleted
        assert " agent-00004 " not in manager.home.client_keys.read_text()  # purge: the line is gone
        assert "004" not in agent_control_statuses(manager)
        history = api.get("/agents/004/history")["data"]["affected_items"]
        assert history[0]["to"] == "disconnected" and history[0]["reason"] == "removed"
        assert any(row["from"] == "active" for row in history)
        sessions = fleet.stats.sessions.get(4, 0)
        time.sleep(2)  # the removed agent's connection was closed, and no new one is accepted
        assert fleet.stats.sessions.get(4, 0) == sessions
        assert any(f.startswith("4:") for f in fleet.stats.failures), fleet.stats.failures


def test_a_port_already_taken_turns_the_api_off_and_agents_are_served(manager: ManagerProcess) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", manager.api_port))
        taken.listen()
        manager.settings = ManagerSettings(api=HTTP)
        keys = manager.add_agents(1)
        manager.start()
        assert "the API and the fleet page are off" in manager.output()
        stop = asyncio.Event()
        stats = FleetStats()

        async def one_agent() -> None:
            task = asyncio.create_task(run_agent(manager, keys[0], stop, stats, 1.0))
            await manager.reach(1, "active", timeout=20)
            stop.set()
            await task

        asyncio.run(one_agent())

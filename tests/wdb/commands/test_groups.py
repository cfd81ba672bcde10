"""Group commands: Wazuh's priority order, the set modes, listings, and `remoted force-reconnect`."""

from __future__ import annotations

from agentpulse.wire.control import FORCE_RECONNECT
from tests.wdb.served import Served


def test_set_agent_groups_modes_keep_wazuhs_priority_order(served: Served) -> None:
    assert served.query("global insert-agent-group web") == "ok"
    request = 'global set-agent-groups {{"mode":"{mode}","sync_status":"syncreq","data":[{{"id":1,"groups":{groups}}}]}}'
    assert served.query(request.format(mode="append", groups='["web","db"]')) == "ok"
    assert served.query("global select-group-belong 1") == 'ok ["default","web","db"]'
    priorities = served.rows(
        "SELECT g.name, b.priority FROM belongs b JOIN `group` g ON g.id = b.id_group WHERE b.id_agent = 1 ORDER BY b.priority"
    )
    assert [tuple(row) for row in priorities] == [("default", 0), ("web", 1), ("db", 2)]
    assert served.query(request.format(mode="remove", groups='["default"]')) == "ok"
    assert served.query("global select-agent-group 1") == 'ok [{"group":"web,db"}]'
    assert served.query(request.format(mode="empty_only", groups='["ops"]')) == "ok"
    assert served.query("global select-group-belong 1") == 'ok ["web","db"]'
    assert served.query(request.format(mode="override", groups='["ops"]')) == "ok"
    assert served.query("global select-group-belong 1") == 'ok ["ops"]'
    assert served.query(request.format(mode="remove", groups='["ops"]')) == "ok"
    assert served.query("global select-group-belong 1") == 'ok ["default"]'
    sync = served.rows("SELECT group_sync_status, group_hash FROM agent WHERE id = 1")[0]
    assert sync[0] == "syncreq" and sync[1] == "37a8eec1"


def test_set_agent_groups_errors(served: Served) -> None:
    assert (
        served.query('global set-agent-groups {"mode":"merge","data":[]}')
        == "err Invalid mode 'merge' in set_agent_groups command"
    )
    assert (
        served.query('global set-agent-groups {"data":[]}')
        == "err Invalid JSON data, missing required fields"
    )
    assert (
        served.query('global set-agent-groups {"mode":"append","data":[{"id":404,"groups":["web"]}]}')
        == "err An error occurred during the set of the groups"
    )
    assert (
        served.query('global set-agent-groups {"mode":"append","data":[{"id":1,"groups":["../etc"]}]}')
        == "err An error occurred during the set of the groups"
    )


def test_delete_group_sends_its_agents_back_to_default(served: Served) -> None:
    served.query(
        'global set-agent-groups {"mode":"override","data":[{"id":1,"groups":["web"]},{"id":2,"groups":["web","db"]}]}'
    )
    assert served.query("global delete-group web") == "ok"
    assert served.query("global select-group-belong 1") == 'ok ["default"]'
    assert served.query("global select-group-belong 2") == 'ok ["db"]'
    assert served.query("global find-group web") == "ok []"
    assert served.query("global delete-group default") == "err Error deleting group in global.db."


def test_group_listing_commands(served: Served) -> None:
    served.query(
        'global set-agent-groups {"mode":"append","data":[{"id":3,"groups":["web"]},{"id":5,"groups":["web"]}]}'
    )
    assert served.query("global select-groups") == 'ok [{"name":"default"},{"name":"web"}]'
    assert served.query("global find-group web") == 'ok [{"id":2}]'
    assert served.query("global get-group-agents web last_id 0") == "ok [3,5]"
    assert served.query("global get-group-agents web last_id 3") == "ok [5]"
    assert served.query("global get-group-agents web") == "err Invalid arguments, 'last_id' not found."
    assert served.query("global get-distinct-groups") == (
        'ok [{"group":"default","group_hash":"37a8eec1"},{"group":"default,web","group_hash":"5288d400"}]'
    )
    assert (
        served.query("global get-distinct-groups 37a8eec1")
        == 'ok [{"group":"default,web","group_hash":"5288d400"}]'
    )


def test_force_reconnect_tells_the_members_of_a_group(served: Served) -> None:
    served.query(
        'global set-agent-groups {"mode":"append","data":[{"id":2,"groups":["web"]},{"id":4,"groups":["web"]}]}'
    )
    assert served.query("remoted force-reconnect web") == 'ok {"group":"web","members":2,"sent":1}'
    assert served.sent == [([2, 4], FORCE_RECONNECT)]
    assert served.query("remoted force-reconnect nowhere") == "err Group 'nowhere' not found"

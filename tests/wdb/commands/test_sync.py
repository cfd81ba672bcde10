"""Cluster sync commands: set, then get what the cluster has not had."""

from __future__ import annotations

import json

from tests.wdb.served import Served


def test_sync_agent_info_set_then_get(served: Served) -> None:
    agent = {
        "id": 1,
        "name": "agent-00001",
        "ip": "10.0.0.1",
        "os_name": "Debian",
        "version": "Wazuh v4.14.7",
    }
    agent |= {"connection_status": "active", "labels": [{"id": 1, "key": "env", "value": "lab"}]}
    assert served.query("global sync-agent-info-set " + json.dumps([agent])) == "ok"
    row = served.rows("SELECT ip, os_name, connection_status, sync_status FROM agent WHERE id = 1")[0]
    assert tuple(row) == ("10.0.0.1", "Debian", "active", "synced")
    assert served.query("global get-labels 1") == 'ok [{"id":1,"key":"env","value":"lab"}]'
    served.query(
        'global update-keepalive {"id":2,"connection_status":"active","sync_status":"syncreq_keepalive"}'
    )
    (item,) = json.loads(served.query("global sync-agent-info-get").removeprefix("ok "))
    assert set(item) == {"id", "last_keepalive"} and item["id"] == 2
    assert served.query("global sync-agent-info-get") == "ok []"  # what was sent is marked synced

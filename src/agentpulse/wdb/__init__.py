"""The wazuh-db query socket, `queue/db/wdb` (reference section 7): a front end over the store.

- `protocol`: framing, request text, answer shapes and paging, shared by both ends.
- `client`: `WdbClient`, the blocking client of the CLIs and tests.
- `server`: `WdbServer`, the manager service: connections, their guards, dispatch.
- `commands`: the handlers, by what they touch (agents, statuses, groups, cluster sync, upkeep, sql).

Reads go through the store's `SqliteReader`, writes through the `Store` like remoted's; nothing here
writes SQL.
"""

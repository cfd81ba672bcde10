"""The wazuh-db query socket, `queue/db/wdb`, as Wazuh's wazuh-db serves it: a front end over the store.

`protocol` (framing, requests, answers, paging), `client` (`WdbClient`, blocking: CLIs and tests), `server`
(`WdbServer`, the manager service), `commands` (the handlers, by what they touch). Reads go through the
store's `SqliteReader`, writes through the `Store` like remoted's: nothing here writes SQL.
"""

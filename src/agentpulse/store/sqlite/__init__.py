"""The SQLite backend of the store: global.db and the per-agent databases, their schema, every SQL statement.

- `backend`: `SqliteBackend`, what the store's writer thread calls (`writes`, `maintenance`, `schema`).
- `reads`: `SqliteReader`, every read of global.db (and of the per-agent databases) made outside the writer.
- `sandbox`: the read-only ad-hoc SQL of `global sql`, refused anything but reading.
"""

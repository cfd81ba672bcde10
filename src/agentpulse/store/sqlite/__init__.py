"""The SQLite backend of the store.

- `reads`: `SqliteReader`, every read of global.db (and of the per-agent databases) made outside the writer.
- `sandbox`: the read-only ad-hoc SQL of `global sql`, refused anything but reading.
"""

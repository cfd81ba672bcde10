"""The SQLite backend of the store: global.db and the per-agent databases, their schema, every SQL statement."""

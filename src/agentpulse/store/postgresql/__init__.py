"""The PostgreSQL backend of the store: one shared database for every node, its schema, every SQL statement.

- `connect`: the libpq connection string from `<database>` (DSN, parts, password file).
- `schema`: the tables (Wazuh's v7 global tables, agentpulse's, the per-agent data as rows) and migrations.
- `backend`: `PostgresBackend`, what the store's writer thread calls (`writes`).
- `reads`: `PostgresReader`, the `Reader` of this backend, and the read-only ad-hoc SQL.
"""

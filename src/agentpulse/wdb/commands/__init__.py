"""The query socket's commands, grouped by what they touch.

- `context`: what every handler works with (`Context`) and the shape of a command (`Command`).
- `arguments`: how handlers read JSON arguments.
- `agents`, `status`, `groups`, `sync`, `maintenance`, `sql`: the handlers and their `COMMANDS`.
"""

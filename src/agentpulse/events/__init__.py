"""NATS events (design section 6): what the manager tells the world about its agents.

- `payloads`: the subjects and JSON bodies, pure functions (no I/O), size-capped.
- `publisher`: the outbox publisher (status events, JetStream, at-least-once + dedup by msg id, KV snapshot)
  and the keep-alive publisher (core NATS, at-most-once, batched).
- `embedded`: our own `nats-server` subprocess when `<nats>` names no URL.
- `service`: `EventsService`, the manager service that connects and wires the above to the store's hooks.

Status decisions are never made here: the store decides, this package only reports.
"""

"""NATS events: what the manager tells the world about its agents (docs/events.md is the schema).

`payloads` builds the subjects and JSON bodies (pure, size-capped); `publisher` sends status events from
the outbox (JetStream, at-least-once) and keep-alive events (core NATS, at-most-once); `embedded` runs our
own `nats-server` when `<nats>` names no URL; `service` wires them to the store's hooks. Status decisions
are never made here: the store decides, this package only reports.
"""

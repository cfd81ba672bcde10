"""What the metrics read from the parts beside them (events, enrolment): the few attributes, as protocols.

`metrics` sits beside `events` and `authd` in the layers and must not import them; the manager hands it
the live objects, and these protocols say exactly which attributes a scrape reads (and which observer
slots it fills). Remoted, the worker pool, the store and the sweeper sit below and are typed directly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from agentpulse.jetstream import StreamHealth

PublishObserver = Callable[[float, int], None]  # (seconds, events): as events/publisher.py calls it


class OutboxFigures(Protocol):
    """`events.publisher.OutboxPublisher`."""

    published: int
    on_published: PublishObserver | None

    @property
    def depth(self) -> int: ...


class KeepaliveEventFigures(Protocol):
    """`events.keepalives.KeepalivePublisher`."""

    published: int
    dropped: int
    on_published: PublishObserver | None


class LinkFigures(Protocol):
    """`events.publisher.NatsLink`."""

    @property
    def up(self) -> bool: ...


class StreamFigures(Protocol):
    """`events.streamwatch.StreamWatch`."""

    @property
    def health(self) -> Mapping[str, StreamHealth]: ...

    def readable(self) -> Mapping[str, bool]: ...


class EventsFigures(Protocol):
    """`events.service.EventsService`."""

    @property
    def link(self) -> LinkFigures: ...

    @property
    def outbox(self) -> OutboxFigures: ...

    @property
    def keepalives(self) -> KeepaliveEventFigures | None: ...

    @property
    def streams(self) -> StreamFigures: ...


class EnrolmentFigures(Protocol):
    """`authd.service.EnrolmentService`."""

    @property
    def enrolled(self) -> int: ...

    @property
    def refusals(self) -> Mapping[str, int]: ...

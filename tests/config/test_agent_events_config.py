"""`<nats><agent_events>`: defaults, sizes and times, and one clear error per bad value."""

from __future__ import annotations

import pytest

from agentpulse.config import ConfigError, parse_config


def parse(inner: str) -> object:
    text = f"<ossec_config><nats><enabled>yes</enabled><agent_events>{inner}</agent_events></nats></ossec_config>"
    return parse_config(text, "ossec.conf").nats.agent_events


def test_defaults_and_values() -> None:
    assert parse("").spool_max_bytes == 1 << 30  # type: ignore[attr-defined]
    events = parse(
        "<spool_max_bytes>512M</spool_max_bytes><max_age>2d</max_age><max_bytes>1G</max_bytes>"
        "<drop_when_full>yes</drop_when_full><max_eps_per_agent>100</max_eps_per_agent>"
        "<analysisd_socket>/var/ossec/queue/sockets/queue</analysisd_socket><stream>EV</stream>"
    )
    assert events.spool_max_bytes == 512 << 20  # type: ignore[attr-defined]
    assert events.max_age == 2 * 86400 and events.max_bytes == 1 << 30  # type: ignore[attr-defined]
    assert events.drop_when_full and events.max_eps_per_agent == 100  # type: ignore[attr-defined]
    assert events.analysisd_socket == "/var/ossec/queue/sockets/queue" and events.stream == "EV"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("inner", "message"),
    [
        ("<spool_max_bytes>10</spool_max_bytes>", "expected a size of at least 65536 bytes"),
        ("<spool_max_bytes>lots</spool_max_bytes>", "expected a size"),
        ("<max_eps_per_agent>-1</max_eps_per_agent>", "expected a number"),
        ("<bogus>1</bogus>", "unknown element"),
    ],
)
def test_bad_values(inner: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(inner)

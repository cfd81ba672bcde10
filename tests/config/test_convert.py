"""Option values: Wazuh's time syntax, and the error each refused value gives (element, value, line)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentpulse.config import parse_time
from tests.config.helpers import SECURE, assert_error, conf, error_of, in_sections

# ---------------------------------------------------------------------------------------------------------
# Time values


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("45", 45.0),
        ("45s", 45.0),
        ("15m", 900.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("1w", 604800.0),
        ("0.5", 0.5),
        ("1.5m", 90.0),
        (" 10m ", 600.0),
    ],
)
def test_parse_time_understands_wazuh_suffixes(text: str, seconds: float) -> None:
    assert parse_time(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "m", "-5", "5x", "5 m", "1e3", "inf", "nan", "5M", "١٢", "0x10", ".5", "5."]
)
def test_parse_time_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time(text)


def test_parse_time_refuses_a_value_too_large_to_be_finite() -> None:
    with pytest.raises(ValueError):
        parse_time("9" * 400 + "w")


@given(st.text(max_size=40))
def test_parse_time_raises_only_value_error(text: str) -> None:
    with contextlib.suppress(ValueError):
        parse_time(text)


# ---------------------------------------------------------------------------------------------------------
# Errors: each names the element, the value and the line


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("<remote><port>", "abc", "expected an integer 1-65535"),
        ("<remote><port>", "65536", "expected an integer 1-65535"),
        ("<remote><port>", "-1", "expected an integer 1-65535"),
        ("<remote><queue_size>", "0", "expected an integer >= 1"),
        ("<remote><workers>", "65", "expected auto or an integer 1-64"),
        ("<remote><protocol>", "sctp", "expected tcp, udp or tcp,udp"),
        ("<remote><local_ip>", "10.0.0.300", "expected an IP address"),
        ("<remote><connection_overtake_time>", "3601", "expected a time from 0 to 3600 seconds"),
        ("<remote><rids_closing_time>", "0", "expected a time greater than 0"),
        ("<remote><connection>", "insecure", "expected 'secure' or 'syslog'"),
        ("<global><agents_disconnection_time>", "0", "expected a time of at least 1 second"),
        ("<global><agents_disconnection_alert_time>", "-1", "expected a time of at least 0 seconds"),
        ("<global><node_name>", "two words", "expected a node name"),
        ("<cluster><node_name>", "", "expected a node name"),
        ("<nats><enabled>", "true", "expected yes or no"),
        ("<nats><subject_prefix>", "agent.*", "expected NATS subject tokens"),
        ("<nats><subject_prefix>", "agent.>", "expected NATS subject tokens"),
        ("<nats><subject_prefix>", "a..b", "expected NATS subject tokens"),
        ("<nats><stream>", "AGENT STATUS", "expected letters, digits"),
        ("<nats><kv_bucket>", "agent.status", "expected letters, digits"),
        ("<nats><url>", "http://nats:4222", "expected NATS URLs with scheme nats, tls, ws or wss"),
        ("<nats><url>", "nats://host:99999", "expected NATS URLs"),
        ("<nats><keepalive_events>", "some", "expected all or none"),
        ("<nats><token>", "", "expected a non-empty value"),
        ("<nats><replicas>", "6", "expected an integer 1-5"),
        ("<nats><replicas>", "0", "expected an integer 1-5"),
        ("<database><dsn>", "somewhere", "expected a PostgreSQL DSN"),
        ("<database><backend>", "mysql", "expected 'sqlite'"),
        ("<database><allow_sql>", "yes", "expected 'no' or 'read-only'"),
        ("<database><flush_interval>", "20", "expected a time from 0.05 to 10 seconds"),
        ("<database><flush_interval>", "0.01", "expected a time from 0.05 to 10 seconds"),
        ("<database><max_fragmentation>", "101", "expected a number 0-100"),
    ],
)
def test_invalid_value_is_an_error_naming_element_value_and_line(
    path: str, value: str, expected: str
) -> None:
    leaf = path[path.rindex("<") :]
    assert_error(in_sections(path, value), leaf, f"{path}: invalid value {value!r}: {expected}")


def test_bad_integer_message_reads_like_the_spec() -> None:
    text = conf(f"<remote>\n{SECURE}\n<port>abc</port>\n</remote>")
    assert (
        str(error_of(text))
        == "ossec.conf line 4: <remote><port>: invalid value 'abc': expected an integer 1-65535"
    )


@pytest.mark.parametrize("value", ["true", "Yes", "1", ""])
def test_boolean_other_than_yes_or_no_is_an_error(value: str) -> None:
    text = conf(f"<remote>{SECURE}\n<ipv6>{value}</ipv6></remote>")
    assert_error(text, "<ipv6>", f"<remote><ipv6>: invalid value '{value}': expected yes or no")


def test_bad_time_is_an_error() -> None:
    text = conf(
        f"<remote>{SECURE}<manager_keepalive>\n<interval>soon</interval></manager_keepalive></remote>"
    )
    assert_error(text, "<interval>", "<remote><manager_keepalive><interval>", "'soon'", "s, m, h, d or w")

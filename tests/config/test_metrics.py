"""`<metrics>`: off by default, on the loopback; bad values name their line."""

from __future__ import annotations

from agentpulse.config import DEFAULT_CONFIG_TEXT, parse_config
from agentpulse.config.metrics import DEFAULT_METRICS_PORT, MetricsConfig
from tests.config.helpers import assert_error, conf


def test_without_a_metrics_element_the_listener_is_off_on_the_loopback() -> None:
    assert parse_config(conf("")).metrics == MetricsConfig(False, "127.0.0.1", DEFAULT_METRICS_PORT)


def test_the_shipped_ossec_conf_keeps_the_defaults() -> None:
    assert parse_config(DEFAULT_CONFIG_TEXT).metrics == MetricsConfig()


def test_every_option_is_read() -> None:
    config = parse_config(conf("<metrics><enabled>yes</enabled><host>::1</host><port>9100</port></metrics>"))
    assert config.metrics == MetricsConfig(True, "::1", 9100)


def test_a_host_that_is_not_an_address_is_an_error() -> None:
    text = conf("<metrics>\n<host>localhost</host></metrics>")
    assert_error(text, "<host>", "<metrics><host>", "expected an IP address")


def test_an_unknown_element_is_an_error() -> None:
    text = conf("<metrics>\n<path>/m</path></metrics>")
    assert_error(text, "<path>", "<metrics><path>", "unknown element")

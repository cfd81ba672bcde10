"""The agent's side of ossec.conf: <client>, its <server>s and <labels>, with Wazuh's rules and errors."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from xml.sax.saxutils import escape as xml_escape

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentpulse.agent.config import (
    ClientConfig,
    EnrollmentConfig,
    ServerAddress,
    load_agent_config,
    parse_agent_config,
)
from agentpulse.config import ConfigError, default_config_text, parse_config
from tests.config.helpers import SECURE, SERVER, WAZUH_MANAGER_CONF, assert_error, conf, in_sections

# ---------------------------------------------------------------------------------------------------------
# The model


def test_server_address_defaults_are_wazuhs() -> None:
    assert ServerAddress("manager") == ServerAddress("manager", 1514, "tcp", 5, 10.0)


def test_client_section_and_labels_are_parsed() -> None:
    client = parse_agent_config(
        conf(
            """<client>
  <server>
    <address>10.0.0.5</address>
    <port>1514</port>
    <protocol>tcp</protocol>
    <max_retries>3</max_retries>
    <retry_interval>30</retry_interval>
  </server>
  <server>
    <address>manager-b.example.com</address>
    <protocol>udp</protocol>
  </server>
  <config-profile>ubuntu, ubuntu22</config-profile>
  <notify_time>10</notify_time>
  <time-reconnect>60</time-reconnect>
  <auto_restart>yes</auto_restart>
  <crypto_method>blowfish</crypto_method>
  <state_interval>15</state_interval>
  <enrollment><enabled>yes</enabled></enrollment>
</client>
<labels>
  <label key="aws.instance-id">i-052a1838c</label>
  <label key="installation" hidden="yes">January 1st, 2017</label>
</labels>"""
        )
    )
    assert client == ClientConfig(
        servers=(
            ServerAddress("10.0.0.5", 1514, "tcp", 3, 30.0),
            ServerAddress("manager-b.example.com", 1514, "udp"),
        ),
        notify_time=10.0,
        time_reconnect=60.0,
        crypto_method="blowfish",
        labels=(
            ("aws.instance-id", "i-052a1838c", False, False),
            ("installation", "January 1st, 2017", True, False),
        ),
        state_interval=15.0,
    )


def test_client_reconnect_time_not_above_notify_time_becomes_three_notify_times() -> None:
    text = conf(
        "<client><server><address>m</address></server>"
        "<notify_time>30</notify_time><time-reconnect>20</time-reconnect></client>"
    )
    client = parse_agent_config(text)
    assert client is not None
    assert client.time_reconnect == 90.0


def test_client_zero_notify_time_means_wazuhs_default_of_20_seconds() -> None:
    client = parse_agent_config(
        conf("<client><server><address>m</address></server><notify_time>0</notify_time></client>")
    )
    assert client is not None
    assert (client.notify_time, client.time_reconnect) == (20.0, 60.0)


def test_a_real_wazuh_agent_file_loads() -> None:
    text = """<ossec_config>
  <client>
    <server>
      <address>192.168.56.2</address>
      <port>1514</port>
      <protocol>tcp</protocol>
    </server>
    <config-profile>ubuntu, ubuntu22, ubuntu22.04</config-profile>
    <notify_time>20</notify_time>
    <time-reconnect>60</time-reconnect>
    <auto_restart>yes</auto_restart>
    <crypto_method>aes</crypto_method>
    <enrollment>
      <enabled>yes</enabled>
      <agent_name>web-01</agent_name>
    </enrollment>
  </client>

  <client_buffer>
    <disabled>no</disabled>
    <queue_size>5000</queue_size>
    <events_per_second>500</events_per_second>
  </client_buffer>
</ossec_config>
"""
    assert parse_agent_config(text) == ClientConfig(
        servers=(ServerAddress("192.168.56.2"),), enrollment=EnrollmentConfig(agent_name="web-01")
    )


def test_a_file_without_client_has_no_agent_configuration() -> None:
    assert parse_agent_config(conf("")) is None
    assert parse_agent_config(default_config_text()) is None
    assert parse_agent_config(WAZUH_MANAGER_CONF) is None


def test_the_manager_sections_of_an_agent_file_are_still_checked() -> None:
    text = conf(f"<client>{SERVER}</client>\n<remote>{SECURE}<port>abc</port></remote>")
    assert_error(text, "<remote>", "<remote><port>", "'abc'", parse=parse_agent_config)


def test_an_agent_file_the_manager_accepts_is_still_refused_for_a_bad_client() -> None:
    text = conf("<client>\n<server><port>1514</port></server></client>")
    parse_config(text)
    assert_error(text, "<server>", "<client><server>", "missing <address>", parse=parse_agent_config)


def test_load_agent_config_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "ossec.conf"
    path.write_text(conf(f"<client>{SERVER}</client>"), encoding="utf-8")
    assert load_agent_config(path) == ClientConfig(servers=(ServerAddress("manager"),))


def test_load_agent_config_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.conf"
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(missing))}: file not found$"):
        load_agent_config(missing)
    path = tmp_path / "ossec.conf"
    path.write_text(conf("<client>\n<server><port>x</port></server></client>"), encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))} line 3: <client><server><port>"):
        load_agent_config(path)


# ---------------------------------------------------------------------------------------------------------
# Errors


def test_client_without_server_is_an_error() -> None:
    text = conf("\n<client><notify_time>10</notify_time></client>")
    assert_error(text, "<client>", "<client>", "no <server>", parse=parse_agent_config)


def test_server_without_address_is_an_error() -> None:
    text = conf("<client>\n<server><port>1514</port></server></client>")
    assert_error(text, "<server>", "<client><server>", "missing <address>", parse=parse_agent_config)


def test_pre_4x_client_server_ip_is_an_error_that_says_what_to_use() -> None:
    text = conf("<client>\n<server-ip>10.0.0.1</server-ip></client>")
    assert_error(
        text, "<server-ip>", "<client><server-ip>", "<client><server><address>", parse=parse_agent_config
    )


def test_label_without_key_is_an_error() -> None:
    text = conf("<client><server><address>m</address></server></client>\n<labels>\n<label>x</label></labels>")
    assert_error(text, "<label>", "<labels><label>", "key", parse=parse_agent_config)


def test_label_hidden_attribute_must_be_yes_or_no() -> None:
    text = conf(
        '<client><server><address>m</address></server></client>\n<labels>\n<label key="k" hidden="maybe">x</label></labels>'
    )
    assert_error(text, "<label ", "<labels><label>[hidden]", "'maybe'", "yes or no", parse=parse_agent_config)


@pytest.mark.parametrize(
    "path",
    [
        "<client><prot>",
        "<client><server><prot>",
    ],
)
def test_unknown_element_in_client_or_server_is_an_error(path: str) -> None:
    assert_error(in_sections(path, "tcp"), "<prot>", f"{path}: unknown element", parse=parse_agent_config)


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("<client><crypto_method>", "des", "expected 'aes' or 'blowfish'"),
        ("<client><notify_time>", "often", "expected a time"),
        ("<client><server><protocol>", "sctp", "expected tcp or udp"),
        ("<client><server><address>", "a/b", "expected an IP address or host name"),
        ("<client><server><max_retries>", "0", "expected an integer >= 1"),
    ],
)
def test_invalid_value_is_an_error_naming_element_value_and_line(
    path: str, value: str, expected: str
) -> None:
    leaf = path[path.rindex("<") :]
    assert_error(
        in_sections(path, value),
        leaf,
        f"{path}: invalid value {value!r}: {expected}",
        parse=parse_agent_config,
    )


# ---------------------------------------------------------------------------------------------------------
# Any value of any option

LEAF_PATHS = [
    *(f"<client><{tag}>" for tag in ("notify_time", "time-reconnect", "crypto_method", "state_interval")),
    *(f"<client><server><{tag}>" for tag in ("address", "port", "protocol", "max_retries", "retry_interval")),
]


@given(st.sampled_from(LEAF_PATHS), st.text(max_size=30))
def test_any_value_of_any_option_gives_a_config_or_a_config_error(path: str, value: str) -> None:
    with contextlib.suppress(ConfigError):
        parse_agent_config(in_sections(path, xml_escape(value)))


@given(st.text(max_size=200))
def test_parse_agent_config_raises_only_config_error(text: str) -> None:
    with contextlib.suppress(ConfigError):
        parse_agent_config(text)


# ---------------------------------------------------------------------------------------------------------
# <enrollment> (reference 14.6)


def test_enrollment_is_on_by_default_without_the_element() -> None:
    client = parse_agent_config(conf(f"<client>{SERVER}</client>"))
    assert client is not None
    assert client.enrollment == EnrollmentConfig()
    assert (client.enrollment.enabled, client.enrollment.port) == (True, 1515)
    assert client.enrollment.delay_after_enrollment == 20.0
    assert client.enrollment.authorization_pass_path == "etc/authd.pass"


def test_every_enrollment_option() -> None:
    client = parse_agent_config(
        conf(
            f"""<client>{SERVER}<enrollment>
  <enabled>no</enabled>
  <manager_address>10.0.0.9</manager_address>
  <port>1600</port>
  <agent_name>web-01</agent_name>
  <groups>default,linux</groups>
  <agent_address>10.0.0.7</agent_address>
  <ssl_cipher>HIGH</ssl_cipher>
  <server_ca_path>etc/ca.pem</server_ca_path>
  <agent_certificate_path>etc/agent.cert</agent_certificate_path>
  <agent_key_path>etc/agent.key</agent_key_path>
  <authorization_pass_path>etc/pass</authorization_pass_path>
  <auto_method>yes</auto_method>
  <delay_after_enrollment>1</delay_after_enrollment>
  <interface_index>2</interface_index>
</enrollment></client>"""
        )
    )
    assert client is not None
    assert client.enrollment == EnrollmentConfig(
        enabled=False,
        manager_address="10.0.0.9",
        port=1600,
        agent_name="web-01",
        groups="default,linux",
        agent_address="10.0.0.7",
        ssl_cipher="HIGH",
        server_ca_path="etc/ca.pem",
        agent_certificate_path="etc/agent.cert",
        agent_key_path="etc/agent.key",
        authorization_pass_path="etc/pass",
        auto_method=True,
        delay_after_enrollment=1.0,
    )


def test_agent_address_and_use_source_ip_together_are_an_error() -> None:
    text = conf(
        f"<client>{SERVER}\n<enrollment><agent_address>10.0.0.7</agent_address>"
        "<use_source_ip>yes</use_source_ip></enrollment></client>"
    )
    assert_error(
        text,
        "<enrollment>",
        "<client><enrollment>",
        "Incompatible sender_ip options",
        parse=parse_agent_config,
    )


def test_delay_after_enrollment_must_be_above_zero() -> None:
    text = conf(
        f"<client>{SERVER}<enrollment>\n<delay_after_enrollment>0</delay_after_enrollment></enrollment></client>"
    )
    assert_error(text, "<delay_after_enrollment>", "greater than 0", parse=parse_agent_config)

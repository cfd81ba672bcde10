"""`<auth>` (reference section 14.5): Wazuh's defaults once the element exists, no enrolment without it,
the `<force>` block, the deprecated options, agentpulse's limits, and errors that name their line."""

from __future__ import annotations

import contextlib
from xml.sax.saxutils import escape as xml_escape

from hypothesis import given
from hypothesis import strategies as st

from agentpulse.config import DEFAULT_CONFIG_TEXT, AuthConfig, ConfigError, ForceOptions, parse_config
from tests.config.helpers import WAZUH_MANAGER_CONF, assert_error, conf, in_sections


def auth(body: str) -> AuthConfig:
    config = parse_config(conf(f"<auth>{body}</auth>")).auth
    assert config is not None
    return config


def test_without_an_auth_element_there_is_no_enrolment_port() -> None:
    assert parse_config(conf("")).auth is None


def test_an_empty_auth_element_gets_wazuhs_code_defaults() -> None:
    config = auth("")
    assert config == AuthConfig()
    assert config.listens
    assert (config.port, config.use_source_ip, config.purge, config.use_password) == (
        1515,
        False,
        False,
        False,
    )
    assert config.force == ForceOptions(
        enabled=True,
        key_mismatch=True,
        disconnected_time_enabled=True,
        disconnected_time=3600.0,
        after_registration_time=3600.0,
    )
    assert config.ciphers == "HIGH:!ADH:!EXP:!MD5:!RC4:!3DES:!CAMELLIA:@STRENGTH"
    assert (config.ssl_manager_cert, config.ssl_manager_key) == ("etc/sslmanager.cert", "etc/sslmanager.key")
    assert (config.ssl_agent_ca, config.ssl_verify_host, config.ssl_auto_negotiate) == (None, False, False)
    assert config.allow_higher_versions is False


def test_the_shipped_wazuh_block_and_ours_both_load() -> None:
    wazuh = parse_config(WAZUH_MANAGER_CONF).auth
    assert wazuh is not None and wazuh.purge and wazuh.listens
    ours = parse_config(DEFAULT_CONFIG_TEXT).auth
    assert ours is not None and ours.listens and ours.purge and ours.force == ForceOptions()


def test_disabled_or_no_remote_enrollment_keeps_the_port_closed() -> None:
    assert not auth("<disabled>yes</disabled>").listens
    assert not auth("<remote_enrollment>no</remote_enrollment>").listens


def test_every_option() -> None:
    config = auth(
        "<port>1600</port><ipv6>yes</ipv6><use_source_ip>yes</use_source_ip><purge>yes</purge>"
        "<use_password>yes</use_password><ciphers>HIGH</ciphers><ssl_agent_ca>/ca.pem</ssl_agent_ca>"
        "<ssl_verify_host>yes</ssl_verify_host><ssl_manager_cert>/c.pem</ssl_manager_cert>"
        "<ssl_manager_key>/k.pem</ssl_manager_key><ssl_auto_negotiate>yes</ssl_auto_negotiate>"
        "<agents><allow_higher_versions>yes</allow_higher_versions></agents>"
        "<local_ip>127.0.0.1</local_ip><max_connections>50</max_connections><source_rate>0</source_rate>"
        "<force><enabled>no</enabled><key_mismatch>no</key_mismatch>"
        '<disconnected_time enabled="no">2h</disconnected_time>'
        "<after_registration_time>0</after_registration_time></force>"
    )
    assert config == AuthConfig(
        port=1600,
        ipv6=True,
        use_source_ip=True,
        force=ForceOptions(False, False, False, 7200.0, 0.0),
        purge=True,
        use_password=True,
        ciphers="HIGH",
        ssl_agent_ca="/ca.pem",
        ssl_verify_host=True,
        ssl_manager_cert="/c.pem",
        ssl_manager_key="/k.pem",
        ssl_auto_negotiate=True,
        allow_higher_versions=True,
        local_ip="127.0.0.1",
        max_connections=50,
        source_rate=0,
    )


def test_disconnected_time_needs_its_enabled_attribute() -> None:
    text = conf("<auth><force>\n<disconnected_time>1h</disconnected_time></force></auth>")
    assert_error(text, "<disconnected_time>", "<auth><force><disconnected_time>", "Empty attribute")
    text = conf('<auth><force>\n<disconnected_time enabled="maybe">1h</disconnected_time></force></auth>')
    assert_error(text, "<disconnected_time", "[enabled]", "'maybe'", "yes or no")


def test_the_deprecated_force_options_still_mean_what_they_meant() -> None:
    assert auth("<force_insert>no</force_insert>").force.enabled is False
    assert auth("<force_time>0</force_time>").force.disconnected_time_enabled is False
    assert auth("<force_time>10m</force_time>").force == ForceOptions(disconnected_time=600.0)


def test_limit_maxagents_is_accepted_and_ignored_as_in_wazuh_4() -> None:
    assert auth("<limit_maxagents>yes</limit_maxagents>") == AuthConfig()


def test_an_unknown_element_is_an_error_at_its_line() -> None:
    text = conf("<auth>\n<prot>1515</prot></auth>")
    assert_error(text, "<prot>", "<auth><prot>", "unknown element", "<port>")


def test_a_bad_port_is_an_error() -> None:
    text = in_sections("<auth><port>", "0")
    assert_error(text, "<port>", "<auth><port>", "'0'", "1-65535")


LEAVES = [
    *(f"<auth><{tag}>" for tag in ("disabled", "port", "ipv6", "use_source_ip", "purge", "use_password")),
    *(f"<auth><{tag}>" for tag in ("ciphers", "ssl_agent_ca", "ssl_verify_host", "ssl_manager_cert")),
    *(f"<auth><{tag}>" for tag in ("ssl_auto_negotiate", "remote_enrollment", "local_ip", "max_connections")),
    "<auth><source_rate>",
    "<auth><agents><allow_higher_versions>",
    *(f"<auth><force><{tag}>" for tag in ("enabled", "key_mismatch", "after_registration_time")),
]


@given(st.sampled_from(LEAVES), st.text(max_size=30))
def test_any_value_gives_a_config_or_a_config_error(path: str, value: str) -> None:
    with contextlib.suppress(ConfigError):
        parse_config(in_sections(path, xml_escape(value)))

"""ossec.conf parsing: Wazuh's defaults and syntax, agentpulse's sections, and errors that name the line."""

from __future__ import annotations

import contextlib
import dataclasses
import re
from pathlib import Path
from xml.sax.saxutils import escape as xml_escape

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentpulse.config import (
    DEFAULT_CONFIG_TEXT,
    ClientConfig,
    Config,
    ConfigError,
    DatabaseConfig,
    GlobalConfig,
    ManagerKeepalive,
    NatsConfig,
    RemoteConfig,
    ServerAddress,
    default_config_text,
    load_config,
    parse_config,
    parse_time,
)


def conf(body: str) -> str:
    """`body` inside one <ossec_config>; the body's first line is line 2 of the file."""
    return f"<ossec_config>\n{body}\n</ossec_config>\n"


def line_of(text: str, needle: str) -> int:
    return text[: text.index(needle)].count("\n") + 1


def error_of(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    return info.value


def assert_error(text: str, needle: str, *fragments: str) -> ConfigError:
    """The error names the file, the line where `needle` is, and every fragment (element, value, ...)."""
    error = error_of(text)
    line = line_of(text, needle)
    message = str(error)
    assert message.startswith(f"ossec.conf line {line}: "), message
    assert error.line == line
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return error


SECURE = "<connection>secure</connection>"
SERVER = "<server><address>manager</address></server>"


def in_sections(path: str, value: str) -> str:
    """A file where the leaf of `path` (e.g. `<remote><port>`) holds `value`, alone on line 3.

    The enclosing sections get what they need to be valid otherwise (a secure connection, a server).
    """
    *sections, leaf = re.findall(r"<([^<>]+)>", path)
    opening = ""
    for index, tag in enumerate(sections):
        inner = ([*sections, leaf])[index + 1]
        filler = {"remote": SECURE, "client": SERVER, "server": "<address>manager</address>"}.get(tag, "")
        if (tag, inner) in {("remote", "connection"), ("client", "server"), ("server", "address")}:
            filler = ""
        opening += f"<{tag}>{filler}"
    closing = "".join(f"</{tag}>" for tag in reversed(sections))
    return conf(f"{opening}\n<{leaf}>{value}</{leaf}>{closing}")


# A Wazuh 4.x manager's ossec.conf as installed (abridged only where sections repeat themselves).
WAZUH_MANAGER_CONF = """\
<!--
  Wazuh - Manager - Default configuration for ubuntu 22.04
  More info at: https://documentation.wazuh.com
  Mailing list: https://groups.google.com/forum/#!forum/wazuh
-->

<ossec_config>
  <global>
    <jsonout_output>yes</jsonout_output>
    <alerts_log>yes</alerts_log>
    <logall>no</logall>
    <logall_json>no</logall_json>
    <email_notification>no</email_notification>
    <smtp_server>smtp.example.wazuh.com</smtp_server>
    <email_from>wazuh@example.wazuh.com</email_from>
    <email_to>recipient@example.wazuh.com</email_to>
    <email_maxperhour>12</email_maxperhour>
    <email_log_source>alerts.log</email_log_source>
    <agents_disconnection_time>10m</agents_disconnection_time>
    <agents_disconnection_alert_time>0</agents_disconnection_alert_time>
    <update_check>yes</update_check>
  </global>

  <alerts>
    <log_alert_level>3</log_alert_level>
    <email_alert_level>12</email_alert_level>
  </alerts>

  <!-- Choose between "plain", "json", or "plain,json" for the format of internal logs -->
  <logging>
    <log_format>plain</log_format>
  </logging>

  <remote>
    <connection>secure</connection>
    <port>1514</port>
    <protocol>tcp</protocol>
    <queue_size>131072</queue_size>
  </remote>

  <!-- Policy monitoring -->
  <rootcheck>
    <disabled>no</disabled>
    <check_files>yes</check_files>
    <check_trojans>yes</check_trojans>
    <frequency>43200</frequency>
    <skip_nfs>yes</skip_nfs>
  </rootcheck>

  <wodle name="cis-cat">
    <disabled>yes</disabled>
    <timeout>1800</timeout>
    <interval>1d</interval>
    <scan-on-start>yes</scan-on-start>
    <java_path>wodles/java</java_path>
    <ciscat_path>wodles/ciscat</ciscat_path>
  </wodle>

  <wodle name="syscollector">
    <disabled>no</disabled>
    <interval>1h</interval>
    <scan_on_start>yes</scan_on_start>
    <synchronization>
      <max_eps>10</max_eps>
    </synchronization>
  </wodle>

  <sca>
    <enabled>yes</enabled>
    <scan_on_start>yes</scan_on_start>
    <interval>12h</interval>
    <skip_nfs>yes</skip_nfs>
  </sca>

  <vulnerability-detection>
    <enabled>yes</enabled>
    <index-status>yes</index-status>
    <feed-update-interval>60m</feed-update-interval>
  </vulnerability-detection>

  <indexer>
    <enabled>yes</enabled>
    <hosts>
      <host>https://0.0.0.0:9200</host>
    </hosts>
    <ssl>
      <certificate_authorities>
        <ca>/etc/filebeat/certs/root-ca.pem</ca>
      </certificate_authorities>
      <certificate>/etc/filebeat/certs/filebeat.pem</certificate>
      <key>/etc/filebeat/certs/filebeat-key.pem</key>
    </ssl>
  </indexer>

  <syscheck>
    <disabled>no</disabled>
    <frequency>43200</frequency>
    <scan_on_start>yes</scan_on_start>
    <directories>/etc,/usr/bin,/usr/sbin</directories>
    <ignore>/etc/mtab</ignore>
    <ignore type="sregex">.log$|.swp$</ignore>
    <nodiff>/etc/ssl/private.key</nodiff>
    <skip_nfs>yes</skip_nfs>
    <synchronization>
      <enabled>yes</enabled>
      <interval>5m</interval>
    </synchronization>
  </syscheck>

  <global>
    <white_list>127.0.0.1</white_list>
    <white_list>^localhost.localdomain$</white_list>
    <white_list>127.0.0.53</white_list>
  </global>

  <command>
    <name>disable-account</name>
    <executable>disable-account</executable>
    <timeout_allowed>yes</timeout_allowed>
  </command>

  <active-response>
    <disabled>no</disabled>
    <command>firewall-drop</command>
    <location>local</location>
    <rules_id>5763</rules_id>
    <timeout>180</timeout>
  </active-response>

  <localfile>
    <log_format>command</log_format>
    <command>df -P</command>
    <frequency>360</frequency>
  </localfile>

  <localfile>
    <log_format>full_command</log_format>
    <command>netstat -tulpn | sed 's/\\([[:alnum:]]\\+\\)\\ \\+[[:digit:]]\\+\\ \\+[[:digit:]]\\+\\ \\+\\(.*\\):\\([[:digit:]]*\\)\\ \\+\\([0-9\\.\\:\\*]\\+\\).\\+\\ \\([[:digit:]]*\\/[[:alnum:]\\-]*\\).*/\\1 \\2 == \\3 == \\4 \\5/' | sort -k 4 -g | sed 's/ == \\(.*\\) ==/:\\1/' | sed 1,2d</command>
    <alias>netstat listening ports</alias>
    <frequency>360</frequency>
  </localfile>

  <ruleset>
    <decoder_dir>ruleset/decoders</decoder_dir>
    <rule_dir>ruleset/rules</rule_dir>
    <rule_exclude>0215-policy_rules.xml</rule_exclude>
    <list>etc/lists/audit-keys</list>
    <decoder_dir>etc/decoders</decoder_dir>
    <rule_dir>etc/rules</rule_dir>
  </ruleset>

  <rule_test>
    <enabled>yes</enabled>
    <threads>1</threads>
    <max_sessions>64</max_sessions>
    <session_timeout>15m</session_timeout>
  </rule_test>

  <auth>
    <disabled>no</disabled>
    <port>1515</port>
    <use_source_ip>no</use_source_ip>
    <purge>yes</purge>
    <use_password>no</use_password>
    <ciphers>HIGH:!ADH:!EXP:!MD5:!RC4:!3DES:!CAMELLIA:@STRENGTH</ciphers>
    <ssl_verify_host>no</ssl_verify_host>
    <ssl_manager_cert>etc/sslmanager.cert</ssl_manager_cert>
    <ssl_manager_key>etc/sslmanager.key</ssl_manager_key>
    <ssl_auto_negotiate>no</ssl_auto_negotiate>
  </auth>

  <cluster>
    <name>wazuh</name>
    <node_name>node01</node_name>
    <node_type>master</node_type>
    <key></key>
    <port>1516</port>
    <bind_addr>0.0.0.0</bind_addr>
    <nodes>
        <node>NODE_IP</node>
    </nodes>
    <hidden>no</hidden>
    <disabled>yes</disabled>
  </cluster>

</ossec_config>

<ossec_config>
  <localfile>
    <log_format>journald</log_format>
    <location>journald</location>
  </localfile>

  <localfile>
    <log_format>syslog</log_format>
    <location>/var/ossec/logs/active-responses.log</location>
  </localfile>
</ossec_config>
"""


# ---------------------------------------------------------------------------------------------------------
# Defaults


def test_remote_defaults_are_wazuhs() -> None:
    remote = dataclasses.asdict(RemoteConfig())
    assert {key: remote[key] for key in ("connection", "port", "protocols", "queue_size")} == {
        "connection": "secure",
        "port": 1514,
        "protocols": ("tcp",),
        "queue_size": 131072,
    }
    assert {
        key: remote[key] for key in ("local_ip", "ipv6", "rids_closing_time", "connection_overtake_time")
    } == {
        "local_ip": None,
        "ipv6": False,
        "rids_closing_time": 300.0,
        "connection_overtake_time": 60.0,
    }
    assert remote["allow_higher_versions"] is False


def test_agentpulse_remote_defaults() -> None:
    remote = RemoteConfig()
    assert remote.connection_grace == 10.0
    assert remote.verify_msg_id is False
    assert remote.keyupdate_interval == 10.0
    assert remote.workers == 0  # auto: one remoted process per core
    assert remote.manager_keepalive == ManagerKeepalive(enabled=True, interval=60.0, timeout=180.0)


def test_global_defaults_are_wazuhs() -> None:
    assert GlobalConfig() == GlobalConfig(
        agents_disconnection_time=900.0,
        agents_disconnection_alert_time=0.0,
        node_name="node01",
        manager_host=None,
    )


def test_nats_defaults_to_disabled_embedded_server_with_agent_subjects() -> None:
    nats = NatsConfig()
    assert (nats.enabled, nats.urls, nats.subject_prefix) == (False, (), "agent")
    assert (nats.stream, nats.kv_bucket) == ("AGENT_STATUS", "agent_status")
    assert (nats.user, nats.password, nats.token, nats.creds_file) == (None, None, None, None)
    assert (nats.keepalive_events, nats.start_without_nats) == (True, True)


def test_database_defaults() -> None:
    assert DatabaseConfig() == DatabaseConfig(
        backend="sqlite",
        path=None,
        allow_sql="no",
        max_fragmentation=90.0,
        fragmentation_check_interval=7200.0,
        purge_removed=True,
        flush_interval=1.0,
    )


def test_server_address_defaults_are_wazuhs() -> None:
    assert ServerAddress("manager") == ServerAddress("manager", 1514, "tcp", 5, 10.0)


def test_empty_ossec_config_gives_all_defaults() -> None:
    assert parse_config("<ossec_config></ossec_config>") == Config()


def test_manager_config_has_no_client_section() -> None:
    assert parse_config(conf("")).client is None


def test_config_is_frozen() -> None:
    config = parse_config(conf(""))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.remote = RemoteConfig()  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------------------
# The shipped default configuration


def test_default_config_text_is_the_packaged_file() -> None:
    assert default_config_text() == DEFAULT_CONFIG_TEXT
    assert "<ossec_config>" in DEFAULT_CONFIG_TEXT


def test_default_config_parses_to_the_documented_manager_settings() -> None:
    config = parse_config(default_config_text())
    assert config.remote == RemoteConfig()
    assert config.global_.agents_disconnection_time == 900.0
    assert config.global_.agents_disconnection_alert_time == 0.0
    assert config.nats.enabled is True
    assert config.nats.urls == ()
    assert config.nats.subject_prefix == "agent"
    assert config.database.backend == "sqlite"
    assert config.client is None


# ---------------------------------------------------------------------------------------------------------
# Sections


def test_remote_section_is_parsed() -> None:
    config = parse_config(
        conf(
            f"""<remote>
  {SECURE}
  <port>11514</port>
  <protocol>tcp,udp</protocol>
  <queue_size>1000</queue_size>
  <local_ip>10.0.0.1</local_ip>
  <ipv6>yes</ipv6>
  <rids_closing_time>10m</rids_closing_time>
  <connection_overtake_time>30</connection_overtake_time>
  <agents><allow_higher_versions>yes</allow_higher_versions></agents>
  <connection_grace>5</connection_grace>
  <verify_msg_id>yes</verify_msg_id>
  <keyupdate_interval>30s</keyupdate_interval>
  <workers>4</workers>
  <manager_keepalive>
    <enabled>no</enabled>
    <interval>30</interval>
    <timeout>2m</timeout>
  </manager_keepalive>
</remote>"""
        )
    )
    assert config.remote == RemoteConfig(
        connection="secure",
        port=11514,
        protocols=("tcp", "udp"),
        queue_size=1000,
        local_ip="10.0.0.1",
        ipv6=True,
        rids_closing_time=600.0,
        connection_overtake_time=30.0,
        allow_higher_versions=True,
        connection_grace=5.0,
        verify_msg_id=True,
        keyupdate_interval=30.0,
        workers=4,
        manager_keepalive=ManagerKeepalive(enabled=False, interval=30.0, timeout=120.0),
    )


@pytest.mark.parametrize(
    ("text", "protocols"),
    [("tcp", ("tcp",)), ("udp", ("udp",)), ("tcp,udp", ("tcp", "udp")), ("UDP, TCP", ("tcp", "udp"))],
)
def test_remote_protocol_is_a_comma_list_of_tcp_and_udp(text: str, protocols: tuple[str, ...]) -> None:
    config = parse_config(conf(f"<remote>{SECURE}<protocol>{text}</protocol></remote>"))
    assert config.remote.protocols == protocols


def test_syslog_remote_is_ignored_even_with_options_of_its_own() -> None:
    config = parse_config(
        conf(
            """<remote>
  <connection>syslog</connection>
  <port>514</port>
  <protocol>udp</protocol>
  <allowed-ips>192.168.0.0/24</allowed-ips>
</remote>
<remote><connection>secure</connection><port>1515</port></remote>"""
        )
    )
    assert config.remote.port == 1515
    assert config.remote.protocols == ("tcp",)


def test_global_section_is_parsed() -> None:
    config = parse_config(
        conf(
            """<global>
  <agents_disconnection_time>1h</agents_disconnection_time>
  <agents_disconnection_alert_time>2h</agents_disconnection_alert_time>
  <node_name>worker-2</node_name>
  <manager_host>manager.example.com</manager_host>
</global>"""
        )
    )
    assert config.global_ == GlobalConfig(3600.0, 7200.0, "worker-2", "manager.example.com")


def test_wazuh_global_options_agentpulse_does_not_use_are_ignored() -> None:
    config = parse_config(
        conf(
            """<global>
  <jsonout_output>yes</jsonout_output>
  <logall>no</logall>
  <email_notification>no</email_notification>
  <smtp_server>smtp.example.com</smtp_server>
  <white_list>127.0.0.1</white_list>
  <limits><eps><maximum>500</maximum></eps></limits>
</global>"""
        )
    )
    assert config.global_ == GlobalConfig()


def test_node_name_is_read_from_cluster_when_global_does_not_set_it() -> None:
    config = parse_config(conf("<cluster><name>wazuh</name><node_name>master-a</node_name></cluster>"))
    assert config.global_.node_name == "master-a"


def test_global_node_name_wins_over_cluster_node_name() -> None:
    text = conf(
        "<global><node_name>mine</node_name></global><cluster><node_name>theirs</node_name></cluster>"
    )
    assert parse_config(text).global_.node_name == "mine"


def test_nats_section_is_parsed() -> None:
    config = parse_config(
        conf(
            """<nats>
  <enabled>yes</enabled>
  <url>nats://nats-1:4222</url>
  <subject_prefix>xdr.agent</subject_prefix>
  <stream>XDR_STATUS</stream>
  <kv_bucket>xdr_status</kv_bucket>
  <user>agentpulse</user>
  <password>s3cret</password>
  <token>tok</token>
  <creds_file>/etc/nats/agentpulse.creds</creds_file>
  <tls_ca>/etc/nats/ca.pem</tls_ca>
  <tls_cert>/etc/nats/cert.pem</tls_cert>
  <tls_key>/etc/nats/key.pem</tls_key>
  <keepalive_events>none</keepalive_events>
  <start_without_nats>no</start_without_nats>
</nats>"""
        )
    )
    assert config.nats == NatsConfig(
        enabled=True,
        urls=("nats://nats-1:4222",),
        subject_prefix="xdr.agent",
        stream="XDR_STATUS",
        kv_bucket="xdr_status",
        user="agentpulse",
        password="s3cret",
        token="tok",
        creds_file="/etc/nats/agentpulse.creds",
        tls_ca="/etc/nats/ca.pem",
        tls_cert="/etc/nats/cert.pem",
        tls_key="/etc/nats/key.pem",
        keepalive_events=False,
        start_without_nats=False,
    )


def test_nats_urls_come_from_repeated_url_elements_and_comma_lists() -> None:
    config = parse_config(
        conf("<nats><url>nats://a:4222, tls://b:4222</url><url>c:4222</url><url>wss://d</url></nats>")
    )
    assert config.nats.urls == ("nats://a:4222", "tls://b:4222", "c:4222", "wss://d")


def test_nats_without_url_means_the_embedded_server() -> None:
    assert parse_config(conf("<nats><enabled>yes</enabled></nats>")).nats.urls == ()


def test_database_section_is_parsed() -> None:
    config = parse_config(
        conf(
            """<database>
  <backend>sqlite</backend>
  <path>/srv/agentpulse/db</path>
  <allow_sql>read-only</allow_sql>
  <max_fragmentation>75.5</max_fragmentation>
  <fragmentation_check_interval>1d</fragmentation_check_interval>
  <purge_removed>no</purge_removed>
  <flush_interval>0.25</flush_interval>
</database>"""
        )
    )
    assert config.database == DatabaseConfig(
        "sqlite", "/srv/agentpulse/db", "read-only", 75.5, 86400.0, False, 0.25
    )


def test_client_section_and_labels_are_parsed() -> None:
    config = parse_config(
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
    assert config.client == ClientConfig(
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
    client = parse_config(text).client
    assert client is not None
    assert client.time_reconnect == 90.0


def test_client_zero_notify_time_means_wazuhs_default_of_20_seconds() -> None:
    client = parse_config(
        conf("<client><server><address>m</address></server><notify_time>0</notify_time></client>")
    ).client
    assert client is not None
    assert (client.notify_time, client.time_reconnect) == (20.0, 60.0)


# ---------------------------------------------------------------------------------------------------------
# File structure


def test_several_ossec_config_blocks_are_merged() -> None:
    text = (
        f"<ossec_config><remote>{SECURE}<port>1600</port></remote></ossec_config>\n"
        "<ossec_config><global><node_name>n2</node_name></global></ossec_config>\n"
        "<ossec_config><nats><enabled>yes</enabled></nats></ossec_config>\n"
    )
    config = parse_config(text)
    assert (config.remote.port, config.global_.node_name, config.nats.enabled) == (1600, "n2", True)


def test_a_repeated_option_takes_the_last_value_like_wazuh() -> None:
    text = conf(
        "<global><agents_disconnection_time>10m</agents_disconnection_time></global>\n"
        "<global><agents_disconnection_time>1d</agents_disconnection_time></global>"
    )
    assert parse_config(text).global_.agents_disconnection_time == 86400.0


def test_a_real_wazuh_manager_file_loads() -> None:
    config = parse_config(WAZUH_MANAGER_CONF)
    assert config.remote == RemoteConfig()
    assert config.global_.agents_disconnection_time == 600.0
    assert config.global_.node_name == "node01"
    assert config.nats == NatsConfig()
    assert config.client is None


def test_xml_declaration_and_byte_order_mark_are_accepted_and_lines_stay_right() -> None:
    text = '\ufeff<?xml version="1.0" encoding="UTF-8"?>\n' + conf(
        f"<remote>{SECURE}\n<port>0</port></remote>"
    )
    assert_error(text, "<port>0", "<remote><port>", "'0'")


def test_comments_are_ignored() -> None:
    text = conf(f"<!-- <remote> -->\n<remote>{SECURE}<!-- <port>x</port> --><port>2000</port></remote>")
    assert parse_config(text).remote.port == 2000


def test_load_config_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "ossec.conf"
    path.write_text(conf(f"<remote>{SECURE}<port>1600</port></remote>"), encoding="utf-8")
    assert load_config(path).remote.port == 1600


def test_load_config_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "ossec.conf"
    path.write_text(conf(f"<remote>{SECURE}\n<port>abc</port></remote>"), encoding="utf-8")
    with pytest.raises(
        ConfigError, match=rf"^{re.escape(str(path))} line 3: <remote><port>: invalid value 'abc'"
    ):
        load_config(path)


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
    assert parse_config(text).client == ClientConfig(servers=(ServerAddress("192.168.56.2"),))


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


@given(st.text(max_size=200))
def test_parse_config_raises_only_config_error(text: str) -> None:
    with contextlib.suppress(ConfigError):
        parse_config(text)


@given(st.text(alphabet="<>/!-?&;= \n\"'abc[]", max_size=120))
def test_parse_config_raises_only_config_error_on_markup_soup(text: str) -> None:
    with contextlib.suppress(ConfigError):
        parse_config(f"<ossec_config>{text}</ossec_config>")


LEAF_PATHS = [
    *(
        f"<remote><{tag}>"
        for tag in ("port", "protocol", "queue_size", "local_ip", "ipv6", "rids_closing_time")
    ),
    *(f"<remote><{tag}>" for tag in ("connection_overtake_time", "connection_grace", "verify_msg_id")),
    *(f"<remote><{tag}>" for tag in ("keyupdate_interval", "workers", "connection")),
    *(f"<remote><manager_keepalive><{tag}>" for tag in ("enabled", "interval", "timeout")),
    "<remote><agents><allow_higher_versions>",
    *(f"<global><{tag}>" for tag in ("agents_disconnection_time", "agents_disconnection_alert_time")),
    *(f"<global><{tag}>" for tag in ("node_name", "manager_host")),
    *(
        f"<nats><{tag}>"
        for tag in ("enabled", "url", "subject_prefix", "stream", "kv_bucket", "user", "token")
    ),
    *(f"<nats><{tag}>" for tag in ("keepalive_events", "start_without_nats")),
    *(f"<database><{tag}>" for tag in ("backend", "path", "allow_sql", "max_fragmentation")),
    *(f"<database><{tag}>" for tag in ("fragmentation_check_interval", "purge_removed", "flush_interval")),
    *(f"<client><{tag}>" for tag in ("notify_time", "time-reconnect", "crypto_method", "state_interval")),
    *(f"<client><server><{tag}>" for tag in ("address", "port", "protocol", "max_retries", "retry_interval")),
]


@given(st.sampled_from(LEAF_PATHS), st.text(max_size=30))
def test_any_value_of_any_option_gives_a_config_or_a_config_error(path: str, value: str) -> None:
    with contextlib.suppress(ConfigError):
        parse_config(in_sections(path, xml_escape(value)))


# ---------------------------------------------------------------------------------------------------------
# Errors: each names the element, the value and the line


@pytest.mark.parametrize(
    "path",
    [
        "<remote><prot>",
        "<remote><manager_keepalive><prot>",
        "<remote><agents><prot>",
        "<global><prot>",
        "<nats><prot>",
        "<database><prot>",
        "<client><prot>",
        "<client><server><prot>",
    ],
)
def test_unknown_element_in_a_section_we_read_is_an_error(path: str) -> None:
    assert_error(in_sections(path, "tcp"), "<prot>", f"{path}: unknown element")


def test_unknown_element_error_does_not_repeat_its_value() -> None:
    error = assert_error(conf("<nats>\n<pasword>hunter2</pasword></nats>"), "<pasword>", "<nats><pasword>")
    assert "hunter2" not in str(error)


def test_sections_agentpulse_does_not_know_are_ignored() -> None:
    assert parse_config(conf("<made_up_section><anything>at all</anything></made_up_section>")) == Config()


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
        ("<database><backend>", "postgresql", "postgresql is not yet supported"),
        ("<database><backend>", "mysql", "expected 'sqlite'"),
        ("<database><allow_sql>", "yes", "expected 'no' or 'read-only'"),
        ("<database><flush_interval>", "20", "expected a time from 0.05 to 10 seconds"),
        ("<database><flush_interval>", "0.01", "expected a time from 0.05 to 10 seconds"),
        ("<database><max_fragmentation>", "101", "expected a number 0-100"),
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


def test_keepalive_timeout_not_above_interval_is_an_error_at_the_timeout() -> None:
    text = conf(
        f"<remote>{SECURE}<manager_keepalive>\n<interval>1m</interval>\n<timeout>60</timeout>"
        "</manager_keepalive></remote>"
    )
    assert_error(text, "<timeout>", "<remote><manager_keepalive><timeout>", "'60'", "greater than <interval>")


def test_keepalive_interval_above_the_default_timeout_is_an_error_at_the_interval() -> None:
    text = conf(f"<remote>{SECURE}<manager_keepalive>\n<interval>5m</interval></manager_keepalive></remote>")
    assert_error(
        text, "<interval>", "<remote><manager_keepalive><interval>", "'5m'", "less than <timeout> (180 s)"
    )


def test_keepalive_interval_of_zero_is_an_error() -> None:
    text = conf(f"<remote>{SECURE}<manager_keepalive>\n<interval>0</interval></manager_keepalive></remote>")
    assert_error(text, "<interval>", "<remote><manager_keepalive><interval>", "'0'", "greater than 0")


def test_value_element_with_child_elements_is_an_error() -> None:
    text = conf(f"<remote>{SECURE}\n<port><number>1514</number></port></remote>")
    assert_error(text, "<port>", "<remote><port>", "expected a value")


def test_two_secure_remote_blocks_are_an_error_at_the_second() -> None:
    text = conf(f"<remote>{SECURE}</remote>\n<remote>{SECURE}<port>1600</port></remote>")
    assert_error(text, f"<remote>{SECURE}<port>", "<remote>", "second secure", "the first is at line 2")


def test_remote_without_connection_is_an_error() -> None:
    text = conf("\n<remote><port>1514</port></remote>")
    assert_error(text, "<remote>", "<remote>", "missing <connection>")


def test_nats_user_without_password_is_an_error() -> None:
    text = conf("<nats>\n<user>agentpulse</user></nats>")
    assert_error(text, "<user>", "<nats><user>", "without <nats><password>")


def test_nats_tls_key_without_certificate_is_an_error() -> None:
    text = conf("<nats>\n<tls_key>/k.pem</tls_key></nats>")
    assert_error(text, "<tls_key>", "<nats><tls_key>", "without <nats><tls_cert>")


def test_client_without_server_is_an_error() -> None:
    text = conf("\n<client><notify_time>10</notify_time></client>")
    assert_error(text, "<client>", "<client>", "no <server>")


def test_server_without_address_is_an_error() -> None:
    text = conf("<client>\n<server><port>1514</port></server></client>")
    assert_error(text, "<server>", "<client><server>", "missing <address>")


def test_pre_4x_client_server_ip_is_an_error_that_says_what_to_use() -> None:
    text = conf("<client>\n<server-ip>10.0.0.1</server-ip></client>")
    assert_error(text, "<server-ip>", "<client><server-ip>", "<client><server><address>")


def test_label_without_key_is_an_error() -> None:
    text = conf("<client><server><address>m</address></server></client>\n<labels>\n<label>x</label></labels>")
    assert_error(text, "<label>", "<labels><label>", "key")


def test_label_hidden_attribute_must_be_yes_or_no() -> None:
    text = conf(
        '<client><server><address>m</address></server></client>\n<labels>\n<label key="k" hidden="maybe">x</label></labels>'
    )
    assert_error(text, "<label ", "<labels><label>[hidden]", "'maybe'", "yes or no")


# ---------------------------------------------------------------------------------------------------------
# Errors: the file itself


def test_mismatched_tag_is_an_error_with_the_parsers_line() -> None:
    text = "<ossec_config>\n  <remote>\n    <port>1514</prot>\n  </remote>\n</ossec_config>\n"
    assert_error(text, "</prot>", "malformed XML: mismatched tag", "<port> opened at line 3")


def test_unclosed_ossec_config_is_an_error() -> None:
    error = error_of("<ossec_config>\n  <global>\n  </global>\n")
    assert "malformed XML" in str(error)
    assert "<ossec_config> opened at line 1 is not closed" in str(error)


def test_invalid_xml_character_is_an_error_with_its_line() -> None:
    text = conf("<global>\n<node_name>a\x01b</node_name></global>")
    assert_error(text, "\x01", "malformed XML")


def test_undefined_entity_reference_is_an_error() -> None:
    text = conf("<global>\n<node_name>&xxe;</node_name></global>")
    assert_error(text, "&xxe;", "malformed XML", "undefined entity")


def test_entity_expansion_attack_is_refused_before_any_expansion() -> None:
    text = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<ossec_config><global><node_name>&lol3;</node_name></global></ossec_config>
"""
    assert_error(text, "<!DOCTYPE", "<!DOCTYPE>", "DTD and entity declarations are refused")


def test_external_entity_is_refused() -> None:
    text = (
        '<!DOCTYPE ossec_config [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
        "<ossec_config><global><node_name>&xxe;</node_name></global></ossec_config>"
    )
    assert_error(text, "<!DOCTYPE", "DTD and entity declarations are refused")


def test_text_outside_ossec_config_is_an_error() -> None:
    text = "<ossec_config></ossec_config>\n\n  stray words\n"
    assert_error(text, "stray", "'stray words'", "outside <ossec_config>")


def test_root_element_other_than_ossec_config_is_an_error() -> None:
    text = "<ossec_config></ossec_config>\n<agent_config></agent_config>\n"
    assert_error(text, "<agent_config>", "<agent_config>", "expected <ossec_config>")


def test_file_without_ossec_config_is_an_error() -> None:
    with pytest.raises(ConfigError, match="no <ossec_config>"):
        parse_config("<!-- nothing here -->\n")


def test_missing_file_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "missing.conf"
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: file not found$"):
        load_config(path)


def test_unreadable_path_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(tmp_path))}: cannot read"):
        load_config(tmp_path)


def test_file_that_is_not_utf8_is_an_error_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "ossec.conf"
    path.write_bytes(b"<ossec_config>\n<global>\n<node_name>caf\xe9</node_name></global></ossec_config>")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))} line 3: .*UTF-8"):
        load_config(path)

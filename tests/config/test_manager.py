"""The manager's sections of ossec.conf: Wazuh's defaults, agentpulse's options, and errors across options."""

from __future__ import annotations

import contextlib
import dataclasses
from xml.sax.saxutils import escape as xml_escape

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentpulse.config import (
    DEFAULT_CONFIG_TEXT,
    Config,
    ConfigError,
    DatabaseConfig,
    GlobalConfig,
    ManagerKeepalive,
    NatsConfig,
    RemoteConfig,
    default_config_text,
    parse_config,
)
from tests.config.helpers import SECURE, WAZUH_MANAGER_CONF, assert_error, conf, in_sections

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
    assert (remote.keys_reload_max_removed, remote.keys_reload_max_removed_percent) == (100, 10.0)
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
    assert nats.replicas == 1  # one server; a 3-server NATS cluster wants <replicas>3</replicas>


def test_database_defaults() -> None:
    assert DatabaseConfig() == DatabaseConfig(
        backend="sqlite",
        path=None,
        allow_sql="no",
        max_fragmentation=90.0,
        fragmentation_check_interval=7200.0,
        purge_removed=True,
        flush_interval=1.0,
        wdb_max_clients=64,
        wdb_idle_timeout=5.0,
    )


def test_empty_ossec_config_gives_all_defaults() -> None:
    assert parse_config("<ossec_config></ossec_config>") == Config()


def test_the_manager_leaves_client_and_labels_to_the_agent() -> None:
    # <client> and <labels> are the agent's (agentpulse.agent.config): the manager skips them unread.
    assert "client" not in {field.name for field in dataclasses.fields(Config)}
    text = conf("<client><made_up>x</made_up></client><labels><made_up/></labels>")
    assert parse_config(text) == Config()


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
  <keys_reload_max_removed>500</keys_reload_max_removed>
  <keys_reload_max_removed_percent>2.5</keys_reload_max_removed_percent>
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
        keys_reload_max_removed=500,
        keys_reload_max_removed_percent=2.5,
        workers=4,
        manager_keepalive=ManagerKeepalive(enabled=False, interval=30.0, timeout=120.0),
    )


def test_limits_before_authentication_default_to_the_documented_values() -> None:
    remote = RemoteConfig()
    assert (remote.frame_timeout, remote.max_unauthenticated_frame) == (10.0, 16384)
    assert (remote.max_unauthenticated_per_ip, remote.max_unauthenticated) == (64, 4096)
    assert remote.max_connections == 0  # auto: from the open-file limit


def test_limits_before_authentication_are_parsed() -> None:
    config = parse_config(
        conf(
            f"""<remote>
  {SECURE}
  <frame_timeout>2.5</frame_timeout>
  <max_unauthenticated_per_ip>16</max_unauthenticated_per_ip>
  <max_unauthenticated>200</max_unauthenticated>
  <max_connections>5000</max_connections>
  <max_unauthenticated_frame>4096</max_unauthenticated_frame>
</remote>"""
        )
    )
    assert (config.remote.frame_timeout, config.remote.max_unauthenticated_frame) == (2.5, 4096)
    assert (config.remote.max_unauthenticated_per_ip, config.remote.max_unauthenticated) == (16, 200)
    assert config.remote.max_connections == 5000


@pytest.mark.parametrize(("value", "nice"), [(None, 5), ("0", 0), ("19", 19)])
def test_worker_nice_defaults_to_5_and_is_parsed(value: str | None, nice: int) -> None:
    element = "" if value is None else f"<worker_nice>{value}</worker_nice>"
    assert parse_config(conf(f"<remote>{SECURE}{element}</remote>")).remote.worker_nice == nice


@pytest.mark.parametrize("value", ["-1", "20", "low"])
def test_worker_nice_out_of_range_is_an_error(value: str) -> None:
    text = conf(f"<remote>{SECURE}\n<worker_nice>{value}</worker_nice></remote>")
    assert_error(text, "<worker_nice>", "<remote><worker_nice>", f"'{value}'", "an integer 0-19")


def test_max_connections_auto_is_zero() -> None:
    config = parse_config(conf(f"<remote>{SECURE}<max_connections>auto</max_connections></remote>"))
    assert config.remote.max_connections == 0


@pytest.mark.parametrize(
    ("tag", "value", "expected"),
    [
        ("frame_timeout", "0", "from 0.1 to 3600 seconds"),
        ("frame_timeout", "2h", "from 0.1 to 3600 seconds"),
        ("max_unauthenticated_per_ip", "0", "an integer >= 1"),
        ("max_unauthenticated", "-5", "an integer >= 1"),
        ("max_connections", "0", "auto or an integer >= 1"),
        ("max_connections", "lots", "auto or an integer >= 1"),
        ("max_unauthenticated_frame", "100", "an integer 256-65536"),
        ("max_unauthenticated_frame", "65537", "an integer 256-65536"),
    ],
)
def test_limits_before_authentication_out_of_range_are_errors(tag: str, value: str, expected: str) -> None:
    text = conf(f"<remote>{SECURE}\n<{tag}>{value}</{tag}></remote>")
    assert_error(text, f"<{tag}>", f"<remote><{tag}>", f"'{value}'", expected)


@pytest.mark.parametrize(
    ("text", "protocols"),
    [("tcp", ("tcp",)), ("udp", ("udp",)), ("tcp,udp", ("tcp", "udp")), ("UDP, TCP", ("tcp", "udp"))],
)
def test_remote_protocol_is_a_comma_list_of_tcp_and_udp(text: str, protocols: tuple[str, ...]) -> None:
    config = parse_config(conf(f"<remote>{SECURE}<protocol>{text}</protocol></remote>"))
    assert config.remote.protocols == protocols


@pytest.mark.parametrize(
    ("tag", "value", "expected"),
    [
        ("keys_reload_max_removed", "-1", "expected an integer >= 0"),
        ("keys_reload_max_removed", "ten", "expected an integer >= 0"),
        ("keys_reload_max_removed_percent", "101", "expected a number 0-100"),
        ("keys_reload_max_removed_percent", "-5", "expected a number 0-100"),
    ],
)
def test_keys_reload_limits_are_checked(tag: str, value: str, expected: str) -> None:
    text = conf(f"<remote>{SECURE}\n<{tag}>{value}</{tag}></remote>")
    assert_error(text, f"<{tag}>", f"<remote><{tag}>", value, expected)


def test_keys_reload_limits_of_zero_are_allowed() -> None:
    text = conf(
        f"<remote>{SECURE}<keys_reload_max_removed>0</keys_reload_max_removed>"
        "<keys_reload_max_removed_percent>0</keys_reload_max_removed_percent></remote>"
    )
    remote = parse_config(text).remote
    assert (remote.keys_reload_max_removed, remote.keys_reload_max_removed_percent) == (0, 0.0)


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


def test_cluster_lease_ttl_is_read_and_checked() -> None:
    assert parse_config(conf("")).global_.lease_ttl == 3.0
    text = conf("<cluster><node_name>a</node_name><lease_ttl>10s</lease_ttl></cluster>")
    assert parse_config(text).global_.lease_ttl == 10.0
    for bad in ("1", "2m", "soon"):
        with pytest.raises(ConfigError, match=r"<cluster><lease_ttl>.*expected a time from 2 to 60 seconds"):
            parse_config(conf(f"<cluster><lease_ttl>{bad}</lease_ttl></cluster>"))


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
  <replicas>3</replicas>
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
        replicas=3,
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


def test_query_socket_limits_are_parsed() -> None:
    config = parse_config(
        conf(
            "<database><wdb_max_clients>8</wdb_max_clients><wdb_idle_timeout>2m</wdb_idle_timeout></database>"
        )
    )
    assert (config.database.wdb_max_clients, config.database.wdb_idle_timeout) == (8, 120.0)


@pytest.mark.parametrize(
    ("element", "value", "expected"),
    [
        ("wdb_max_clients", "0", "expected an integer 1-4096"),
        ("wdb_max_clients", "5000", "expected an integer 1-4096"),
        ("wdb_idle_timeout", "0.1", "expected a time from 0.5 to 3600 seconds"),
        ("wdb_idle_timeout", "2h", "expected a time from 0.5 to 3600 seconds"),
    ],
)
def test_query_socket_limits_out_of_range_are_errors(element: str, value: str, expected: str) -> None:
    text = conf(f"<database>\n<{element}>{value}</{element}></database>")
    assert_error(text, f"<{element}>", f"<database><{element}>", f"'{value}'", expected)


def test_a_real_wazuh_manager_file_loads() -> None:
    config = parse_config(WAZUH_MANAGER_CONF)
    assert config.remote == RemoteConfig()
    assert config.global_.agents_disconnection_time == 600.0
    assert config.global_.node_name == "node01"
    assert config.nats == NatsConfig()


# ---------------------------------------------------------------------------------------------------------
# Any value of any option


LEAF_PATHS = [
    *(
        f"<remote><{tag}>"
        for tag in ("port", "protocol", "queue_size", "local_ip", "ipv6", "rids_closing_time")
    ),
    *(f"<remote><{tag}>" for tag in ("connection_overtake_time", "connection_grace", "verify_msg_id")),
    *(f"<remote><{tag}>" for tag in ("keyupdate_interval", "workers", "connection")),
    *(f"<remote><{tag}>" for tag in ("keys_reload_max_removed", "keys_reload_max_removed_percent")),
    *(f"<remote><{tag}>" for tag in ("frame_timeout", "max_unauthenticated_per_ip", "max_unauthenticated")),
    *(f"<remote><{tag}>" for tag in ("max_connections", "max_unauthenticated_frame")),
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
    *(f"<database><{tag}>" for tag in ("wdb_max_clients", "wdb_idle_timeout")),
]


@given(st.sampled_from(LEAF_PATHS), st.text(max_size=30))
def test_any_value_of_any_option_gives_a_config_or_a_config_error(path: str, value: str) -> None:
    with contextlib.suppress(ConfigError):
        parse_config(in_sections(path, xml_escape(value)))


# ---------------------------------------------------------------------------------------------------------
# Errors across options


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


def test_the_api_block_defaults_and_its_absence() -> None:
    from agentpulse.config import ApiConfig

    assert parse_config(default_config_text()).api == ApiConfig()
    assert parse_config("<ossec_config><global/></ossec_config>").api is None
    config = parse_config(
        "<ossec_config><api><port>8443</port><https><enabled>no</enabled></https>"
        "<auth_token_exp_timeout>1h</auth_token_exp_timeout><metrics_auth>yes</metrics_auth></api></ossec_config>"
    )
    assert config.api is not None
    assert (
        config.api.port,
        config.api.https,
        config.api.auth_token_exp_timeout,
        config.api.metrics_auth,
    ) == (
        8443,
        False,
        3600.0,
        True,
    )
    with pytest.raises(ConfigError, match="unknown element"):
        parse_config("<ossec_config><api><prot>1</prot></api></ossec_config>")
    with pytest.raises(ConfigError, match="invalid value"):
        parse_config("<ossec_config><api><host>not-an-ip</host></api></ossec_config>")

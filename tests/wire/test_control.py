"""Control messages in both directions, as the Wazuh 4.x protocol has them (docs/protocol.md)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentpulse.wire import control
from agentpulse.wire.errors import Reason, WireError


def test_startup_with_version_json() -> None:
    assert control.parse_from_agent(b'#!-agent startup {"version":"v4.14.7"}') == control.Startup("v4.14.7")


def test_bare_startup_of_a_pre_46_agent_is_a_plain_startup() -> None:
    assert control.parse_from_agent(b"#!-agent startup ") == control.Startup(None)


def test_startup_version_keeps_its_control_characters_but_no_lone_surrogate() -> None:
    # A JSON `\ud800` escape decodes to a string no UTF-8 writer accepts: U+FFFD takes its place, as for
    # undecodable bytes; everything else (escape sequences included) is stored as sent.
    payload = b'#!-agent startup {"version":"v4.14.7\\u001b[2J\\n\\udfff\\ud83d\\ude00"}'
    assert control.parse_from_agent(payload) == control.Startup("v4.14.7\x1b[2J\n\ufffd\U0001f600")


def test_startup_json_without_version_is_flagged() -> None:
    assert control.parse_from_agent(b'#!-agent startup {"v":1}') == control.Startup(
        None, version_missing=True
    )


def test_startup_with_unparsable_json_counts_as_a_plain_startup() -> None:
    assert control.parse_from_agent(b"#!-agent startup {oops") == control.Startup(None)


def test_startup_with_deeply_nested_json_is_refused_as_json_limit() -> None:
    payload = control.HC_STARTUP + b'{"version":' + b"[" * 5_000 + b"}"  # json.loads: RecursionError
    with pytest.raises(WireError) as caught:
        control.parse_from_agent(control.CONTROL_HEADER + payload)
    assert caught.value.reason is Reason.JSON_LIMIT
    assert "nested deeper than 32" in str(caught.value)


def test_error_reply_with_deeply_nested_json_is_kept_as_text() -> None:
    text = '{"message":' + "[" * 50_000
    assert control.parse_from_manager(control.CONTROL_HEADER + control.HC_ERROR + text.encode()) == (
        control.ErrorReply(text)
    )


def test_shutdown_with_its_trailing_space() -> None:
    assert control.parse_from_agent(control.SHUTDOWN) == control.Shutdown()


def test_keepalive_without_newline_is_rejected() -> None:
    with pytest.raises(WireError) as caught:
        control.parse_from_agent(b"#!-Linux |h |5 |#1 |x86_64 - Wazuh v4.14.7")
    assert caught.value.reason is Reason.BAD_CONTROL


def test_keepalive_built_and_parsed_round_trips() -> None:
    body = control.build_keepalive(
        "Linux |web |6.1.0 |#1 SMP |aarch64 [Debian GNU/Linux|debian: 12 (bookworm)] - Wazuh v4.14.7",
        merged_sum=None,
        labels=(('"env"', "prod"), ('!"secret"', "x")),
        agent_ip="10.1.2.3",
        config_sum="ab" * 16,
    )
    parsed = control.parse_from_agent(body)
    assert parsed == control.Keepalive(
        uname="Linux |web |6.1.0 |#1 SMP |aarch64",
        version="Wazuh v4.14.7",
        config_sum="ab" * 16,
        merged_sum="x",
        agent_ip="10.1.2.3",
        labels=(('"env"', "prod"), ('!"secret"', "x")),
        os_name="Debian GNU/Linux",
        os_platform="debian",
        os_version="12",
        os_codename="bookworm",
        os_major="12",
        os_minor=None,
        os_arch="aarch64",
    )


def test_keepalive_text_matches_run_notify_layout() -> None:
    body = control.build_keepalive(
        "U - Wazuh v4.14.7", merged_sum="m" * 32, labels=(('"a"', "b"),), agent_ip="1.2.3.4"
    )
    assert body == b'#!-U - Wazuh v4.14.7\n"a":b\n' + b"m" * 32 + b' merged.mg\n#"_agent_ip":1.2.3.4\n'


def test_windows_uname_gives_name_and_version() -> None:
    parsed = control.parse_keepalive(
        b"Microsoft Windows 10 Pro [Ver: 10.0.19045] |DESKTOP |x86_64 - Wazuh v4.14.7\nx merged.mg\n"
    )
    assert isinstance(parsed, control.Keepalive)
    assert (parsed.os_name, parsed.os_version, parsed.os_major, parsed.os_minor) == (
        "Microsoft Windows 10 Pro",
        "10.0.19045",
        "10",
        "0",
    )


def test_oversized_label_values_are_capped() -> None:
    parsed = control.parse_keepalive(b'U - Wazuh v4\n"k":' + b"v" * 5000 + b"\n")
    assert len(parsed.labels[0][1]) == control.FIELD_CAP


def test_request_reply_from_agent() -> None:
    assert control.parse_from_agent(b'#!-req 1a2b {"error":0}') == control.RequestReply("1a2b", '{"error":0}')


def test_event_is_not_a_control_message() -> None:
    assert control.parse_from_agent(b"1:/var/log/syslog:hello") == control.AgentEvent(
        b"1:/var/log/syslog:hello"
    )


def test_ack_is_recognised_only_with_its_trailing_space() -> None:
    assert control.parse_from_manager(control.ACK) == control.Ack()
    assert control.parse_from_manager(b"#!-agent ack") != control.Ack()


def test_version_error_reply_round_trips() -> None:
    built = control.build_error(control.ERR_NEWER_VERSION)
    assert built == b'#!-err {"message":"Agent version must be lower or equal to manager version"}'
    assert control.parse_from_manager(built) == control.ErrorReply(control.ERR_NEWER_VERSION)


def test_getstate_request_round_trips() -> None:
    built = control.build_request("ff01", "agent", control.GETSTATE)
    assert built == b"#!-req ff01 agent getstate"
    assert control.parse_from_manager(built) == control.Request("ff01", "agent", "getstate")


def test_force_reconnect() -> None:
    assert control.parse_from_manager(control.FORCE_RECONNECT) == control.ForceReconnect()


@pytest.mark.parametrize(
    ("agent", "manager", "newer"),
    [
        ("v4.14.7", "v4.14.7", False),
        ("v4.9.0", "v4.14.7", False),
        ("v4.15.0", "v4.14.7", True),
        ("v5.0.0", "v4.14.7", True),
        ("4.15.0", "v4.14.7", True),  # the v is optional
        ("v4.14", "v4.14.7", False),
    ],
)
def test_version_comparison_is_numeric(agent: str, manager: str, newer: bool) -> None:
    assert control.is_newer(agent, manager) is newer


@pytest.mark.parametrize("agent", ["v4.14.8", "v4.14.9", "v4.14.99", "v4.14.0", "4.14.8"])
def test_only_major_and_minor_count_so_a_newer_patch_release_is_not_newer(agent: str) -> None:
    # compare_wazuh_versions(manager, agent, false): remoted's startup check and authd's V: check.
    assert control.is_newer(agent, "v4.14.7") is False


def test_a_version_without_numbers_is_never_newer() -> None:
    assert control.is_newer("unknown", "v4.14.7") is False


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=500))
def test_arbitrary_payloads_raise_only_wire_error(data: bytes) -> None:
    for parse in (control.parse_from_agent, control.parse_from_manager):
        try:
            parse(data)
            parse(b"#!-" + data)
        except WireError:
            pass

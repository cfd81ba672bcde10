"""The enrolment request and reply (reference sections 14.2, 14.3, 14.7), byte for byte: every row of the
parse table with its exact error text, the replies, and the agent's side of both.

The codec is `agentpulse.wire.enrolment` (the agent builds and parses with it too); authd uses it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentpulse.wire import enrolment as e
from agentpulse.wire.enrolment import EnrolmentError, EnrolRequest, parse_request

MANAGER = "v4.14.7"
EXAMPLE_REQUEST = bytes.fromhex(
    "4f5353454320504153533a20746f70736563726574204f5353454320413a2777"
    "65622d30312720563a2776342e31342e372720473a2764656661756c742c6c69"
    "6e7578270a"
)
EXAMPLE_KEY = "0f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0"
AGENT_01_KEY = "9a1b8c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b"
REENROLMENT = b"OSSEC A:'agent-01' V:'v4.14.7' K:'e089b431998f81c0476046bfcada2b5594c9a03b'\n"


def refused(line: bytes, **options: str | None) -> str:
    options.setdefault("manager_version", MANAGER)
    with pytest.raises(EnrolmentError) as caught:
        parse_request(line, **options)
    return caught.value.response


# -- the worked example (14.7) ---------------------------------------------------------------------------


def test_the_worked_example_request_is_69_bytes_and_parses_with_its_password() -> None:
    assert EXAMPLE_REQUEST == b"OSSEC PASS: topsecret OSSEC A:'web-01' V:'v4.14.7' G:'default,linux'\n"
    assert len(EXAMPLE_REQUEST) == 69
    request = parse_request(EXAMPLE_REQUEST, password="topsecret", manager_version=MANAGER)
    assert request == EnrolRequest("web-01", "v4.14.7", ("default", "linux"), None, None)


def test_the_agent_builds_the_worked_example_byte_for_byte() -> None:
    built = e.build_request("web-01", password="topsecret", version="v4.14.7", groups="default,linux")
    assert built == EXAMPLE_REQUEST


def test_the_worked_example_reply_is_89_bytes_without_a_newline() -> None:
    reply = e.build_key_reply("002", "web-01", "any", EXAMPLE_KEY)
    assert reply == f"OSSEC K:'002 web-01 any {EXAMPLE_KEY}'".encode()
    assert len(reply) == 89
    key = e.parse_reply(reply)
    assert key.line() == f"002 web-01 any {EXAMPLE_KEY}"


def test_the_re_enrolment_example_carries_the_sha1_of_id_name_and_key() -> None:
    assert e.key_hash("001", "agent-01", AGENT_01_KEY) == "e089b431998f81c0476046bfcada2b5594c9a03b"
    built = e.build_request(
        "agent-01", version="v4.14.7", key_hash=e.key_hash("001", "agent-01", AGENT_01_KEY)
    )
    assert built == REENROLMENT and len(built) == 76
    request = parse_request(REENROLMENT, manager_version=MANAGER)
    assert request.key_hash == "e089b431998f81c0476046bfcada2b5594c9a03b"


def test_every_part_in_its_fixed_order() -> None:
    built = e.build_request(
        "db-01", password="pw", version="v4.9.0", groups="a", ip=e.SOURCE_IP, key_hash="ab" * 20
    )
    assert built == f"OSSEC PASS: pw OSSEC A:'db-01' V:'v4.9.0' G:'a' IP:'src' K:'{'ab' * 20}'\n".encode()
    assert parse_request(built, password="pw", manager_version=MANAGER) == EnrolRequest(
        "db-01", "v4.9.0", ("a",), "src", "ab" * 20
    )


# -- password ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        b"OSSEC A:'web-01'\n",  # none sent
        b"OSSEC PASS: wrong OSSEC A:'web-01'\n",
        b"OSSEC PASS: topsecretOSSEC A:'web-01'\n",  # no space after it
        b"OSSEC PASS: topsecre OSSEC A:'web-01'\n",  # a prefix of it
        b"OSSEC PASS: topsecret",  # nothing after it
        b"OSSEC PASS:topsecret OSSEC A:'web-01'\n",
    ],
)
def test_a_wrong_or_missing_password_is_refused(line: bytes) -> None:
    assert refused(line, password="topsecret") == "ERROR: Invalid password"


def test_a_password_sent_to_a_manager_without_one_is_an_invalid_request() -> None:
    assert refused(b"OSSEC PASS: topsecret OSSEC A:'web-01'\n") == "ERROR: Invalid request for new agent"


# -- name --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line", [b"", b"\n", b"HELLO\n", b"OSSEC A:web-01\n", b"OSSEC A:'web-01\n", b"ossec A:'x'\n"]
)
def test_a_line_without_a_quoted_name_is_an_invalid_request(line: bytes) -> None:
    assert refused(line) == "ERROR: Invalid request for new agent"


@pytest.mark.parametrize("name", ["", "a", ".hidden", "web 01", "web/01", "wéb", "x" * 128])
def test_an_invalid_name_is_refused_and_echoed(name: str) -> None:
    line = f"OSSEC A:'{name}'\n".encode("latin-1")
    assert refused(line) == f"ERROR: Invalid agent name: {name}"


@pytest.mark.parametrize("name", ["ab", "web-01", "a.b_c-D9", "x" * 127])
def test_valid_names(name: str) -> None:
    assert parse_request(f"OSSEC A:'{name}'".encode(), manager_version=MANAGER).name == name


def test_the_line_ends_at_the_first_newline_or_nul() -> None:
    assert parse_request(b"OSSEC A:'web-01'\n V:'v9.0.0'", manager_version=MANAGER).version is None
    assert parse_request(b"OSSEC A:'web-01'\0 V:'v9.0.0'\n", manager_version=MANAGER).version is None


# -- version -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line", [b"OSSEC A:'web-01' V:'v4.14.7\n", b"OSSEC A:'web-01' V:'" + b"9" * 2049 + b"'\n"]
)
def test_an_unterminated_or_overlong_version_is_refused(line: bytes) -> None:
    assert refused(line) == "ERROR: Unterminated version field"


def test_a_newer_minor_version_is_refused_and_a_newer_patch_is_not() -> None:
    assert refused(b"OSSEC A:'web-01' V:'v4.15.0'\n") == (
        "ERROR: Agent version must be lower or equal to manager version"
    )
    assert parse_request(b"OSSEC A:'web-01' V:'v4.14.9'\n", manager_version=MANAGER).version == "v4.14.9"
    assert parse_request(b"OSSEC A:'web-01' V:'v5.0.0'\n", manager_version=None).version == "v5.0.0"


def test_an_empty_version_is_accepted_as_wazuh_reads_it() -> None:
    assert parse_request(b"OSSEC A:'web-01' V:''\n", manager_version=MANAGER).version == ""


# -- groups ------------------------------------------------------------------------------------------------


def test_groups_lose_their_duplicates_and_keep_their_order() -> None:
    request = parse_request(b"OSSEC A:'web-01' G:'linux,default,linux'\n", manager_version=MANAGER)
    assert request.groups == ("linux", "default")


@pytest.mark.parametrize(
    ("groups", "response"),
    [
        ("", "ERROR: Invalid group name: Empty Group"),
        ("g" * 256, f"ERROR: Invalid group name: {'g' * 255}... group is too large"),
        ("a,b c", "ERROR: Invalid group name: a,b c... white spaces are not allowed"),
        ("a," + "g" * 256, f"ERROR: Invalid group name: {'g' * 255}... group is too large"),
        ("a,,b", "ERROR: Invalid group name: a,,b... consecutive ',' are not allowed"),
        (",a", "ERROR: Invalid group name: ,a... cannot start or end with ','"),
        ("a,", "ERROR: Invalid group name: a,... cannot start or end with ','"),
        (",", "ERROR: Invalid group name: ,... characters '\\/:*?\"<>|,' are prohibited"),
        ("a/b", "ERROR: Invalid group name: a/b... characters '\\/:*?\"<>|,' are prohibited"),
        ("a b", "ERROR: Invalid group name: a b... characters '\\/:*?\"<>|,' are prohibited"),
    ],
)
def test_each_group_text_refusal(groups: str, response: str) -> None:
    assert refused(f"OSSEC A:'web-01' G:'{groups}'\n".encode()) == response


def test_a_multigroup_over_65535_characters_is_too_large() -> None:
    groups = ",".join(["g" * 200] * 330)  # 66,329 characters: read up to 65,536 of them, then no quote
    assert refused(f"OSSEC A:'web-01' G:'{groups}'\n".encode()) == "ERROR: Unterminated group field"
    groups = groups[:65536]
    response = refused(f"OSSEC A:'web-01' G:'{groups}'\n".encode())
    assert response == f"ERROR: Invalid group name: {groups[:255]}... multigroup is too large"


def test_an_unterminated_group_field_is_refused() -> None:
    assert refused(b"OSSEC A:'web-01' G:'default\n") == "ERROR: Unterminated group field"


@pytest.mark.parametrize(
    ("groups", "response"),
    [
        (["default", "linux"], None),
        (["default", "nope"], "ERROR: Invalid group: nope"),
        (["a:b"], "ERROR: Invalid group name: a:b"),
        ([".."], "ERROR: Invalid group name: .."),
        (["nope", "a:b"], "ERROR: Invalid group: nope"),  # one group at a time, in order
        ([f"g{n}" for n in range(129)], "ERROR: Maximum multigroup reached: Limit is 128"),
    ],
)
def test_groups_must_be_plain_names_of_existing_groups(groups: list[str], response: str | None) -> None:
    exists = {"default", "linux", *(f"g{n}" for n in range(200))}.__contains__
    assert e.validate_groups(groups, exists) == response


# -- IP and key --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("part", "ip"),
    [
        ("IP:'src'", "src"),
        ("IP:'srcanything'", "src"),
        ("IP:'10.0.0.7'", "10.0.0.7"),
        ("IP:'10.0.0.0/24'", "10.0.0.0/24"),
        ("IP:'any'", "any"),
        ("IP:'::1'", "::1"),
    ],
)
def test_the_ip_part(part: str, ip: str) -> None:
    assert parse_request(f"OSSEC A:'web-01' {part}\n".encode(), manager_version=MANAGER).ip == ip


@pytest.mark.parametrize(("value", "shown"), [("10.0.0.300", "10.0.0.300"), ("", ""), ("host", "host")])
def test_an_invalid_ip_is_refused_and_echoed(value: str, shown: str) -> None:
    assert refused(f"OSSEC A:'web-01' IP:'{value}'\n".encode()) == f"ERROR: Invalid IP: {shown}"


@pytest.mark.parametrize("part", ["IP:'10.0.0.7", "IP:'10.0.0.7 x'", "IP:'" + "1" * 47 + "'"])
def test_an_unterminated_ip_is_refused(part: str) -> None:
    assert refused(f"OSSEC A:'web-01' {part}\n".encode()) == "ERROR: Unterminated IP field"


@pytest.mark.parametrize("part", ["K:'abc", "K:'" + "a" * 41 + "'"])
def test_an_unterminated_key_hash_is_refused(part: str) -> None:
    assert refused(f"OSSEC A:'web-01' {part}\n".encode()) == "ERROR: Unterminated key field"


def test_parts_out_of_order_are_not_read_as_wazuh_does_not() -> None:
    request = parse_request(b"OSSEC A:'web-01' G:'linux' V:'v9.0.0'\n", manager_version=MANAGER)
    assert (request.groups, request.version) == (("linux",), None)


# -- replies -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "reply"),
    [
        ("ERROR: Duplicate agent name: web-01", b"ERROR: Duplicate agent name: web-01. Unable to add agent"),
        ("ERROR: Invalid password", b"ERROR: Invalid password. Unable to add agent"),
        ("ERROR: Duplicate IP: 10.0.0.7", b"ERROR: Duplicate IP: 10.0.0.7. Unable to add agent"),
    ],
)
def test_error_replies(response: str, reply: bytes) -> None:
    assert e.build_error_reply(response) == reply


def test_an_error_reply_keeps_the_2047_bytes_of_wazuh_s_buffer() -> None:
    name = "x" * 5000
    response = refused(f"OSSEC A:'{name}'\n".encode())
    reply = e.build_error_reply(response)
    assert reply == (f"ERROR: Invalid agent name: {name}"[:2047] + ". Unable to add agent").encode()


def test_the_agent_reads_an_error_reply_as_the_text_after_error() -> None:
    with pytest.raises(EnrolmentError) as caught:
        e.parse_reply(b"ERROR: Duplicate agent name: web-01. Unable to add agent")
    assert caught.value.response == "Duplicate agent name: web-01. Unable to add agent"


@pytest.mark.parametrize(
    "reply",
    [
        b"OSSEC K:'002 web-01 any'",
        b"OSSEC K:'abc web-01 any 0123456789'",
        b"OSSEC K:'123456789 web-01 any 0123456789'",
        b"OSSEC K:'002 web/01 any 0123456789'",
        b"OSSEC K:'002 web-01 nowhere 0123456789'",
        b"OSSEC K:'002 web-01 any key with spaces'",
    ],
)
def test_the_agent_refuses_a_key_without_a_valid_format(reply: bytes) -> None:
    with pytest.raises(EnrolmentError) as caught:
        e.parse_reply(reply)
    assert caught.value.response == "One of the received key parameters does not have a valid format"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([None, "topsecret"]))
def test_arbitrary_lines_raise_only_enrolment_error(line: bytes, password: str | None) -> None:
    for candidate in (line, b"OSSEC A:'web-01'" + line, b"OSSEC PASS: topsecret OSSEC A:'ab' V:'" + line):
        try:
            parse_request(candidate, password=password, manager_version=MANAGER)
        except EnrolmentError as error:
            assert error.response.startswith("ERROR: ")

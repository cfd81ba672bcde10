"""Enrolment (reference section 14): the one line an agent sends to port 1515 inside TLS, and the one
reply the manager writes before it closes. Both directions: the manager (`agentpulse.authd`) parses
requests and builds replies, the agent builds requests and parses replies.

The request is positional, read the way `w_auth_parse_data()` reads it, quirks included:

    [OSSEC PASS: <password> ]OSSEC A:'<name>'[ V:'<version>'][ G:'<g1,g2>'][ IP:'<ip>|src'][ K:'<sha1>']

A refusal is an `EnrolmentError` whose `response` is Wazuh's exact `ERROR: ...` text; the reply adds
`. Unable to add agent`. The danger is that all of this runs before anyone is authenticated: the reader
caps the line (`MAX_REQUEST`) before it gets here, each field keeps Wazuh's own cap, the parse is one pass
over the text, and the password is compared in constant time. Bytes are read as Latin-1, so any byte
round-trips into a reply (`ERROR: Invalid agent name: <name>` echoes what came) unchanged.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from agentpulse.wire.control import is_newer
from agentpulse.wire.keys import NAME_MAX, NAME_MIN, AgentKey, parse_ip

MAX_REQUEST: Final = 65536 + 4096  # MAX_SSL_MSG_SIZE: the whole line, "\n" included
TERMINATOR: Final = b"\n"
PASS_HEAD: Final = "OSSEC PASS: "
NAME_HEAD: Final = "OSSEC A:'"
KEY_HEAD: Final = "OSSEC K:'"
ERROR_HEAD: Final = "ERROR: "
UNABLE: Final = ". Unable to add agent"
SOURCE_IP: Final = "src"  # IP:'src': the manager keeps the connection's source address
VERSION_TOKEN, GROUPS_TOKEN, IP_TOKEN, KEY_TOKEN = " V:", " G:", " IP:", " K:"
VERSION_MAX: Final = 2048  # sscanf %2048[^']
GROUPS_MAX: Final = 65536
IP_MAX: Final = 46  # IPSIZE (INET6_ADDRSTRLEN)
KEY_HASH_MAX: Final = 40  # sizeof(os_sha1) - 1
RESPONSE_MAX: Final = 2047  # the response buffer is OS_SIZE_2048 (snprintf keeps 2047 bytes)
GROUP_NAME_MAX: Final = 255  # MAX_GROUP_NAME
MULTIGROUP_MAX: Final = 65535
MAX_GROUPS: Final = 128  # MAX_GROUPS_PER_MULTIGROUP
ID_MAX_DIGITS: Final = 8  # OS_IsValidID

ERR_INVALID_PASSWORD: Final = "ERROR: Invalid password"
ERR_INVALID_REQUEST: Final = "ERROR: Invalid request for new agent"
ERR_INVALID_NAME: Final = "ERROR: Invalid agent name: {name}"
ERR_UNTERMINATED_VERSION: Final = "ERROR: Unterminated version field"
ERR_NEWER_VERSION: Final = "ERROR: Agent version must be lower or equal to manager version"
ERR_UNTERMINATED_GROUPS: Final = "ERROR: Unterminated group field"
ERR_UNTERMINATED_IP: Final = "ERROR: Unterminated IP field"
ERR_INVALID_IP: Final = "ERROR: Invalid IP: {ip}"
ERR_UNTERMINATED_KEY: Final = "ERROR: Unterminated key field"
ERR_GROUP_EMPTY: Final = "ERROR: Invalid group name: Empty Group"
ERR_GROUP: Final = "ERROR: Invalid group name: {group:.255}... {reason}"
GROUP_TOO_LARGE: Final = "group is too large"
MULTIGROUP_TOO_LARGE: Final = "multigroup is too large"
GROUP_SPACES: Final = "white spaces are not allowed"
GROUP_DOUBLE_COMMA: Final = "consecutive ',' are not allowed"
GROUP_EDGE_COMMA: Final = "cannot start or end with ','"
GROUP_PROHIBITED: Final = "characters '\\/:*?\"<>|,' are prohibited"
ERR_MAX_GROUPS: Final = f"ERROR: Maximum multigroup reached: Limit is {MAX_GROUPS}"
ERR_GROUP_NAME: Final = "ERROR: Invalid group name: {group}"
ERR_GROUP_MISSING: Final = "ERROR: Invalid group: {group}"
ERR_DUPLICATE_IP: Final = "ERROR: Duplicate IP: {ip}"
ERR_DUPLICATE_NAME: Final = "ERROR: Duplicate agent name: {name}"
ERR_INTERNAL: Final = "ERROR: Internal manager error adding agent: {name}"
ERR_BAD_KEY_REPLY: Final = "One of the received key parameters does not have a valid format"

_NAME_RE: Final = re.compile(r"[A-Za-z0-9._-]+")
_GROUP_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.:;_-=+!@()")
_GROUP_RE: Final = re.compile(r"[a-zA-Z0-9_.\-]+")  # w_auth_validate_groups(): a directory name


class EnrolmentError(Exception):
    """A refused request (`response`: Wazuh's exact `ERROR: ...` text), or, on the agent side, a reply
    that is an error or no valid key (`response`: what the agent logs)."""

    def __init__(self, response: str, *, detail: str | None = None) -> None:
        super().__init__(response)
        self.response = response
        self.detail = detail  # for the manager's log: why, when the response does not say it


@dataclass(frozen=True, slots=True)
class EnrolRequest:
    """One request. `ip` is None without an `IP:` part, `SOURCE_IP` for `IP:'src'`, else the address
    given; `groups` lost their duplicates, in order; `key_hash` is the `K:` of an agent that has a key."""

    name: str
    version: str | None = None
    groups: tuple[str, ...] = ()
    ip: str | None = None
    key_hash: str | None = None


# --------------------------------------------------------------------------------------------------------
# Manager side


def parse_request(
    line: bytes, *, password: str | None = None, manager_version: str | None = None
) -> EnrolRequest:
    """The request line (its `\\n` optional) as authd reads it; raises `EnrolmentError`.

    `password`: authd's own (None: none is required, and then a line that sends one is refused).
    `manager_version`: refuse agents whose major.minor is newer (None: `allow_higher_versions`).
    """
    text = line.split(b"\n", 1)[0].split(b"\0", 1)[0].decode("latin-1")  # a C string ends at NUL
    at = 0
    if password is not None:
        at = _check_password(text, password)
    if not text.startswith(NAME_HEAD, at):
        raise EnrolmentError(ERR_INVALID_REQUEST)
    end = text.find("'", at + len(NAME_HEAD))
    if end < 0:
        raise EnrolmentError(ERR_INVALID_REQUEST)
    name = text[at + len(NAME_HEAD) : end]
    at = end + 1
    if not valid_name(name):
        raise EnrolmentError(ERR_INVALID_NAME.format(name=name))
    version: str | None = None
    if text.startswith(VERSION_TOKEN, at):
        version, at = _field(text, at, VERSION_TOKEN, VERSION_MAX, "'", ERR_UNTERMINATED_VERSION)
        if manager_version is not None and is_newer(version, manager_version):
            raise EnrolmentError(ERR_NEWER_VERSION)
    groups: tuple[str, ...] = ()
    if text.startswith(GROUPS_TOKEN, at):
        group_text, at = _field(text, at, GROUPS_TOKEN, GROUPS_MAX, "'", ERR_UNTERMINATED_GROUPS)
        check_group_text(group_text)
        groups = tuple(dict.fromkeys(group_text.split(",")))
    ip: str | None = None
    if text.startswith(IP_TOKEN, at):
        ip, at = _field(text, at, IP_TOKEN, IP_MAX, "' ", ERR_UNTERMINATED_IP)
        if ip.startswith(SOURCE_IP):  # strncmp(ip, "src", 3): anything starting so
            ip = SOURCE_IP
        else:
            try:
                parse_ip(ip)
            except ValueError:
                raise EnrolmentError(ERR_INVALID_IP.format(ip=ip)) from None
    key_hash: str | None = None
    if text.startswith(KEY_TOKEN, at):
        key_hash, at = _field(text, at, KEY_TOKEN, KEY_HASH_MAX, "'", ERR_UNTERMINATED_KEY)
    return EnrolRequest(name, version, groups, ip, key_hash)


def _check_password(text: str, password: str) -> int:
    """Where the name part starts once `OSSEC PASS: <password> ` matched, in constant time."""
    start = len(PASS_HEAD)
    given = text[start : start + len(password)].encode("latin-1")
    matches = hmac.compare_digest(given, password.encode("latin-1"))
    after = start + len(password)
    if not (text.startswith(PASS_HEAD) and matches and len(text) > after and text[after] == " "):
        raise EnrolmentError(ERR_INVALID_PASSWORD)
    return after + 1


def _field(text: str, at: int, token: str, limit: int, stops: str, error: str) -> tuple[str, int]:
    """`<token>'<value>'` at `at`, as `sscanf(" X:'%<limit>[^<stops>]")` then `buf[len + n] == '\\''`
    read it: at most `limit` characters, and the quote must follow them. Returns (value, after it)."""
    start = at + len(token) + 1
    value = ""
    if text.startswith("'", start - 1):
        end = start
        stop = min(len(text), start + limit)
        while end < stop and text[end] not in stops:
            end += 1
        value = text[start:end]
    close = start + len(value)
    if close >= len(text) or text[close] != "'":
        raise EnrolmentError(error)
    return value, close + 1


def valid_name(name: str) -> bool:
    """OS_IsValidName: 2 to 127 of `[A-Za-z0-9._-]`, not starting with a dot (128 would not fit a
    client.keys field, so agentpulse stops at the 127 characters Wazuh's own reader keeps)."""
    return NAME_MIN <= len(name) <= NAME_MAX and _NAME_RE.fullmatch(name) is not None and name[0] != "."


def check_group_text(groups: str) -> None:
    """w_validate_group_name(): the `G:` text as sent, in Wazuh's order of checks; raises EnrolmentError."""
    if not groups:
        raise EnrolmentError(ERR_GROUP_EMPTY)
    multigroup = "," in groups
    if not multigroup and len(groups) > GROUP_NAME_MAX:
        raise EnrolmentError(ERR_GROUP.format(group=groups, reason=GROUP_TOO_LARGE))
    if multigroup and len(groups) > MULTIGROUP_MAX:
        raise EnrolmentError(ERR_GROUP.format(group=groups, reason=MULTIGROUP_TOO_LARGE))
    if multigroup:
        for group in filter(None, groups.split(",")):
            if " " in group:
                raise EnrolmentError(ERR_GROUP.format(group=groups, reason=GROUP_SPACES))
            if len(group) > GROUP_NAME_MAX:
                raise EnrolmentError(ERR_GROUP.format(group=group, reason=GROUP_TOO_LARGE))
        if ",," in groups:
            raise EnrolmentError(ERR_GROUP.format(group=groups, reason=GROUP_DOUBLE_COMMA))
    if groups.count(",") == len(groups):
        raise EnrolmentError(ERR_GROUP.format(group=groups, reason=GROUP_PROHIBITED))
    if groups[0] == "," or groups[-1] == ",":
        raise EnrolmentError(ERR_GROUP.format(group=groups, reason=GROUP_EDGE_COMMA))
    allowed = _GROUP_CHARS | {","} if multigroup else _GROUP_CHARS
    if not set(groups) <= allowed:
        raise EnrolmentError(ERR_GROUP.format(group=groups, reason=GROUP_PROHIBITED))


def validate_groups(groups: Iterable[str], exists: Callable[[str], bool]) -> str | None:
    """w_auth_validate_groups(): per group, in order, at most 128 of them, each a plain directory name
    that `exists`. The first refusal (`ERROR: ...`), or None."""
    for count, group in enumerate(groups, start=1):
        if count > MAX_GROUPS:
            return ERR_MAX_GROUPS
        if _GROUP_RE.fullmatch(group) is None or group in (".", ".."):
            return ERR_GROUP_NAME.format(group=group)
        if not exists(group):
            return ERR_GROUP_MISSING.format(group=group)
    return None


def build_key_reply(agent_id: str, name: str, ip: str, key: str) -> bytes:
    """The success reply: `OSSEC K:'<id> <name> <ip> <key>'`, no newline."""
    return f"{KEY_HEAD}{agent_id} {name} {ip} {key}'".encode("latin-1")


def build_error_reply(response: str) -> bytes:
    """`<response>. Unable to add agent`, the response cut to the 2047 bytes of Wazuh's buffer."""
    return (response[:RESPONSE_MAX] + UNABLE).encode("latin-1")


# --------------------------------------------------------------------------------------------------------
# Agent side


def key_hash(agent_id: str, name: str, raw_key: str) -> str:
    """`K:` of an agent that has a key: sha1hex(id + name + raw key), lowercase (`w_get_key_hash()`)."""
    return hashlib.sha1(f"{agent_id}{name}{raw_key}".encode(), usedforsecurity=False).hexdigest()


def build_request(
    name: str,
    *,
    password: str | None = None,
    version: str | None = None,
    groups: str | None = None,
    ip: str | None = None,
    key_hash: str | None = None,
) -> bytes:
    """`w_enrollment_send_message()`: the parts in their fixed order, one space before each, then `\\n`.
    `ip` is an address (`<agent_address>`) or `SOURCE_IP` (`<use_source_ip>yes`)."""
    parts = [f"{PASS_HEAD}{password} " if password else "", f"{NAME_HEAD}{name}'"]
    for token, value in (
        (VERSION_TOKEN, version),
        (GROUPS_TOKEN, groups),
        (IP_TOKEN, ip),
        (KEY_TOKEN, key_hash),
    ):
        if value is not None:
            parts.append(f"{token}'{value}'")
    return "".join(parts).encode("latin-1") + TERMINATOR


def parse_reply(data: bytes) -> AgentKey:
    """`w_enrollment_process_response()`: the key the manager sent, checked as the agent checks it.

    Raises `EnrolmentError` with the manager's text after `ERROR: ` (the agent logs it with
    `(from manager)`), or with `ERR_BAD_KEY_REPLY` for a key that does not have a valid format.
    """
    text = data.decode("latin-1")
    if text.startswith(ERROR_HEAD):
        raise EnrolmentError(text[len(ERROR_HEAD) :])
    if not text.startswith(KEY_HEAD):
        raise EnrolmentError(f"unexpected reply from the manager: {text[:64]!r}")
    body = text[len(KEY_HEAD) :].split("'", 1)[0]
    fields = body.split(" ", 3)
    if len(fields) != 4:
        raise EnrolmentError(ERR_BAD_KEY_REPLY)
    agent_id, name, ip, key = fields
    try:
        ip_range = parse_ip(ip)
    except ValueError:
        raise EnrolmentError(ERR_BAD_KEY_REPLY) from None
    if not (agent_id.isdigit() and len(agent_id) <= ID_MAX_DIGITS and valid_name(name) and valid_name(key)):
        raise EnrolmentError(ERR_BAD_KEY_REPLY)
    return AgentKey(agent_id, name, ip_range, key)

"""Control messages (docs/protocol.md): what agent and manager say to each other inside secure messages.

`parse_from_agent()` and `parse_from_manager()` turn a decrypted payload into one small immutable event;
the `build_*` functions do the reverse. The two directions differ only for `#!-req`: the manager sends
`#!-req <counter> <target> <payload>`, the agent answers `#!-req <counter> <response>`.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass

from agentpulse.wire import boundedjson
from agentpulse.wire.errors import Reason, WireError

CONTROL_HEADER = b"#!-"
HC_STARTUP = b"agent startup "
HC_SHUTDOWN = b"agent shutdown "
HC_ACK = b"agent ack "
HC_REQUEST = b"req "
HC_ERROR = b"err "
HC_FORCE_RECONNECT = b"force_reconnect"
FILE_UPDATE_HEADER = b"up file "  # `#!-up file <md5> <name>\n`: a shared file follows (reference 15.4)
FILE_CLOSE_HEADER = b"close file "
ACK = CONTROL_HEADER + HC_ACK
SHUTDOWN = CONTROL_HEADER + HC_SHUTDOWN
FORCE_RECONNECT = CONTROL_HEADER + HC_FORCE_RECONNECT
FILE_CLOSE = CONTROL_HEADER + FILE_CLOSE_HEADER
MD5_HEX_LEN = 32
MERGED_SUFFIX = " merged.mg"
AGENT_IP_LABEL = '#"_agent_ip"'
ERR_NEWER_VERSION = "Agent version must be lower or equal to manager version"
ERR_NO_VERSION = "Couldn't retrieve version"
GETSTATE = "getstate"
AGENT_TARGET = "agent"  # `#!-req` target handled by agentd itself (agcom); other targets are module sockets
REQUEST_ACK = "ack"  # UDP only: `#!-req <counter> ack` before the answer
ERR_UNRECOGNIZED = "err Unrecognized command"

# Agent-supplied text is stored and published: cap it so one agent cannot bloat every row and event.
FIELD_CAP = 1024
LABELS_CAP = 128
ARCHITECTURES = (
    "x86_64",
    "i386",
    "i686",
    "sparc",
    "amd64",
    "i86pc",
    "ia64",
    "AIX",
    "armv6",
    "armv7",
    "aarch64",
    "arm64",
)
_MAJOR_MINOR = re.compile(r"^(\d+)(?:\.(\d+))?")
# What JSON's `\ud800` escapes can leave in a string: no UTF-8 writer (SQLite, a log) accepts one.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class Startup:
    """`version` is None for a bare (pre-4.6) startup; `version_missing` when JSON came without a version."""

    version: str | None
    version_missing: bool = False


@dataclass(frozen=True, slots=True)
class Keepalive:
    uname: str | None = None  # the os_uname column: the uname text before " ["
    version: str | None = None  # "Wazuh v4.14.7"
    config_sum: str | None = None
    merged_sum: str | None = None
    agent_ip: str | None = None
    labels: tuple[tuple[str, str], ...] = ()  # keys keep their '#', '!' and quotes
    os_name: str | None = None
    os_platform: str | None = None
    os_version: str | None = None
    os_codename: str | None = None
    os_major: str | None = None
    os_minor: str | None = None
    os_arch: str | None = None


_KEEPALIVE_FIELDS = tuple(Keepalive.__dataclass_fields__)


@dataclass(frozen=True, slots=True)
class Shutdown:
    pass


@dataclass(frozen=True, slots=True)
class Ack:
    pass


@dataclass(frozen=True, slots=True)
class ErrorReply:
    message: str


@dataclass(frozen=True, slots=True)
class Request:
    """Manager to agent: `#!-req <counter> <target> <payload>`."""

    counter: str
    target: str
    payload: str


@dataclass(frozen=True, slots=True)
class RequestReply:
    """Agent to manager: `#!-req <counter> <response>`."""

    counter: str
    response: str


@dataclass(frozen=True, slots=True)
class ForceReconnect:
    pass


@dataclass(frozen=True, slots=True)
class FileUpdate:
    """Manager to agent: a shared file follows, in messages without `#!-`, until `FileClose`."""

    md5: str
    name: str


@dataclass(frozen=True, slots=True)
class FileClose:
    pass


@dataclass(frozen=True, slots=True)
class OtherControl:
    """A control message this side does not act on (file pushes, active responses)."""

    text: str


@dataclass(frozen=True, slots=True)
class AgentEvent:
    """Not a control message: an event for analysis, `<queue char>:<location>:<text>`."""

    payload: bytes


FromAgent = Startup | Keepalive | Shutdown | RequestReply | OtherControl | AgentEvent
FromManager = Ack | ErrorReply | Request | ForceReconnect | FileUpdate | FileClose | OtherControl | AgentEvent


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def parse_from_agent(payload: bytes) -> FromAgent:
    """Classify a decrypted payload an agent sent. Raises WireError(BAD_CONTROL) for a keep-alive w/o newline."""
    if not payload.startswith(CONTROL_HEADER):
        return AgentEvent(payload)
    body = payload[len(CONTROL_HEADER) :]
    if body.startswith(HC_STARTUP.rstrip()):
        return parse_startup(body[len(HC_STARTUP) :])
    if body.startswith(HC_SHUTDOWN.rstrip()):
        return Shutdown()
    if body.startswith(HC_REQUEST):
        counter, _, response = _text(body[len(HC_REQUEST) :]).partition(" ")
        if not counter:
            raise WireError(Reason.BAD_CONTROL, "request reply without a counter")
        return RequestReply(counter, response)
    if body.startswith((b"up file ", b"close file ")):
        return OtherControl(_text(body))
    return parse_keepalive(body)


def parse_from_manager(payload: bytes) -> FromManager:
    if not payload.startswith(CONTROL_HEADER):
        return AgentEvent(payload)
    body = payload[len(CONTROL_HEADER) :]
    if body == HC_ACK:
        return Ack()
    if body.startswith(HC_ERROR):
        text = _text(body[len(HC_ERROR) :])
        try:
            decoded = boundedjson.loads(text)
        except (ValueError, WireError):
            return ErrorReply(text)
        message = decoded.get("message") if isinstance(decoded, dict) else None
        return ErrorReply(message if isinstance(message, str) else text)
    if body.startswith(HC_REQUEST):
        counter, _, rest = _text(body[len(HC_REQUEST) :]).partition(" ")
        target, _, request_payload = rest.partition(" ")
        if not counter or not target:
            raise WireError(Reason.BAD_CONTROL, "request without counter or target")
        return Request(counter, target, request_payload)
    if body.startswith(HC_FORCE_RECONNECT):
        return ForceReconnect()
    if body.startswith(FILE_UPDATE_HEADER):
        return parse_file_update(body[len(FILE_UPDATE_HEADER) :])
    if body.startswith(FILE_CLOSE_HEADER):
        return FileClose()
    return OtherControl(_text(body))


def parse_file_update(rest: bytes) -> FileUpdate:
    """`<md5> <name>\n` (receive_msg(): the first 32 characters are the md5, the name follows a space)."""
    line = _text(rest).split("\n", 1)[0]
    md5, _, name = line.partition(" ")
    if len(md5) != MD5_HEX_LEN or not name:
        raise WireError(Reason.BAD_CONTROL, "file update without an md5 and a name")
    return FileUpdate(md5, name)


def parse_startup(rest: bytes) -> Startup:
    """JSON with a string `version`, or anything else that counts as a plain (pre-4.6) startup.
    Raises WireError(JSON_LIMIT) for JSON too long or too deeply nested to parse safely."""
    text = _text(rest).strip()
    if not text.startswith("{"):
        return Startup(None)
    try:
        decoded = boundedjson.loads(text)
    except ValueError:
        return Startup(None)
    version = decoded.get("version") if isinstance(decoded, dict) else None
    if not isinstance(version, str):
        return Startup(None, version_missing=True)
    # U+FFFD for a lone surrogate, as _text() gives for undecodable bytes: the rest is kept as sent.
    return Startup(_LONE_SURROGATE.sub("\ufffd", version[:FIELD_CAP]))


def parse_keepalive(body: bytes) -> Keepalive:
    """The text keep-alive an agent sends every notify_time (without its `#!-`)."""
    if b"\n" not in body:
        raise WireError(Reason.BAD_CONTROL, "keep-alive without a newline")
    fields: dict[str, str | None] = {}
    labels: list[tuple[str, str]] = []
    for line in _text(body).split("\n"):
        if not line:
            continue
        if line[0] in '#!"':
            key, sep, value = line.partition(":")
            if not sep:
                continue
            if key == AGENT_IP_LABEL:
                fields["agent_ip"] = value[:FIELD_CAP]
            elif len(labels) < LABELS_CAP:
                labels.append((key[:FIELD_CAP], value[:FIELD_CAP]))
        elif line.endswith(MERGED_SUFFIX):
            fields["merged_sum"] = line[: -len(MERGED_SUFFIX)][:FIELD_CAP]
        elif " - " in line and "uname" not in fields:
            fields.update(parse_uname_line(line))
    return interned(Keepalive(labels=tuple(labels), **fields))


def interned(keepalive: Keepalive) -> Keepalive:
    """The same keep-alive with its shared texts interned: a fleet runs a handful of OS builds and agent
    versions, and a manager holds one keep-alive per agent, so 200,000 agents share those strings."""
    fields = {
        name: sys.intern(value) if isinstance(value, str) and name != "agent_ip" else value
        for name in _KEEPALIVE_FIELDS
        if (value := getattr(keepalive, name)) is not None
    }
    fields["labels"] = tuple((sys.intern(key), sys.intern(value)) for key, value in keepalive.labels)
    return Keepalive(**fields)  # type: ignore[arg-type]


def parse_uname_line(line: str) -> dict[str, str | None]:
    """`<uname> [<os_name>|<os_platform>: <os_version>] - <version>[ / <config_sum>]` into columns."""
    uname_part, _, version_part = line.partition(" - ")
    version, _, config_sum = version_part.partition(" / ")
    fields: dict[str, str | None] = {
        "version": version[:FIELD_CAP] or None,
        "config_sum": config_sum[:FIELD_CAP] or None,
    }
    uname, bracket, os_info = uname_part.partition(" [")
    fields["uname"] = uname[:FIELD_CAP]
    if bracket:
        fields.update(_parse_os_info(os_info.rsplit("]", 1)[0], uname))
    for arch in ARCHITECTURES:
        if arch in uname:
            fields["os_arch"] = arch
            break
    return fields


def _parse_os_info(info: str, uname: str) -> dict[str, str | None]:
    fields: dict[str, str | None] = {}
    if "|" in info:
        name, _, rest = info.partition("|")
        platform, _, os_version = rest.partition(": ")
        fields["os_name"], fields["os_platform"] = name[:FIELD_CAP], platform[:FIELD_CAP]
    else:  # Windows: "<os_name> [Ver: <version>]"
        os_version = info.removeprefix("Ver: ")
        fields["os_name"] = uname.split(" |", 1)[0][:FIELD_CAP]
    if os_version.endswith(")") and " (" in os_version:
        os_version, _, codename = os_version[:-1].partition(" (")
        fields["os_codename"] = codename[:FIELD_CAP]
    fields["os_version"] = os_version[:FIELD_CAP]
    match = _MAJOR_MINOR.match(os_version)
    if match:
        fields["os_major"], fields["os_minor"] = match.group(1), match.group(2)
    return fields


def build_startup(version: str | None) -> bytes:
    if version is None:
        return CONTROL_HEADER + HC_STARTUP
    return CONTROL_HEADER + HC_STARTUP + json.dumps({"version": version}, separators=(",", ":")).encode()


def build_keepalive(
    uname: str,
    *,
    merged_sum: str | None,
    labels: tuple[tuple[str, str], ...] = (),
    agent_ip: str | None = None,
    config_sum: str | None = None,
) -> bytes:
    """The keep-alive text exactly as run_notify() writes it."""
    lines = [uname + (f" / {config_sum}" if config_sum else "")]
    lines += [f"{key}:{value}" for key, value in labels]
    lines.append(f"{merged_sum or 'x'}{MERGED_SUFFIX}")
    if agent_ip:
        lines.append(f"{AGENT_IP_LABEL}:{agent_ip}")
    return CONTROL_HEADER + "".join(line + "\n" for line in lines).encode()


def build_file_update(md5: str, name: str) -> bytes:
    return CONTROL_HEADER + FILE_UPDATE_HEADER + f"{md5} {name}\n".encode()


def build_error(message: str) -> bytes:
    return CONTROL_HEADER + HC_ERROR + json.dumps({"message": message}, separators=(",", ":")).encode()


def build_request(counter: str, target: str, payload: str) -> bytes:
    return CONTROL_HEADER + HC_REQUEST + f"{counter} {target} {payload}".encode()


def is_getstate(request: Request) -> bool:
    """The manager keep-alive probe: `#!-req <counter> agent getstate`."""
    return request.target == AGENT_TARGET and request.payload.split(" ", 1)[0] == GETSTATE


def build_request_reply(counter: str, response: str) -> bytes:
    return CONTROL_HEADER + HC_REQUEST + f"{counter} {response}".encode()


def parse_version(text: str) -> tuple[int, ...] | None:
    """`v4.14.7` or `Wazuh v4.14.7` to (4, 14, 7); None when there is no dotted number."""
    match = re.search(r"v?(\d+(?:\.\d+)*)", text)
    if match is None:
        return None
    return tuple(int(part) for part in match.group(1).split("."))


def is_newer(agent_version: str, manager_version: str) -> bool:
    """Wazuh's rule (`compare_wazuh_versions(manager, agent, false)`, remoted's startup check and authd's
    `V:` check alike): only major.minor count, so v4.14.9 is not newer than v4.14.7 and v4.15.0 is."""
    agent, manager = parse_version(agent_version), parse_version(manager_version)
    if agent is None or manager is None:
        return False
    return (*agent, 0, 0)[:2] > (*manager, 0, 0)[:2]

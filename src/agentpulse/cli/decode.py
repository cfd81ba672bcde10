"""`agentpulse decode`: open one captured frame or datagram with the keys of client.keys and show what is inside.

`decode_capture()` is pure; the handler only reads the input and prints JSON. The danger: a capture is
untrusted bytes, possibly the very frame that made remoted misbehave, so it goes through the same bounded
functions remoted uses, and a refusal comes back as the WireError reason remoted would log.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from pathlib import Path

from agentpulse.cli.home import add_home_option, resolve_home
from agentpulse.keysfile import read_keys_file
from agentpulse.wire import control
from agentpulse.wire.errors import Reason, WireError
from agentpulse.wire.frames import LENGTH, FrameDecoder
from agentpulse.wire.keys import AgentKey, KeysFile
from agentpulse.wire.secure import OS_MAXSTR, AgentCipher, Envelope, SecureMessage, split_header

DIRECTIONS = ("auto", "agent", "manager")
AGENT_TO_MANAGER = "agent_to_manager"
MANAGER_TO_AGENT = "manager_to_agent"
PING, PONG = b"#ping", b"#pong"  # the only clear-text payloads of the Wazuh 4.x protocol
_UDP_FIRST_BYTES = (b"!", b"#", b":")  # a datagram starts with a prefix, `#AES:` or `:`
_MANAGER_REQUEST_TARGET = re.compile(r"^[a-z][a-z0-9_-]*$")  # agent, com, logcollector, ...
_AGENT_REPLY_WORDS = ("ack", "err")  # `#!-req <counter> ack` / `err <text>` come from the agent

_CONTROL_TYPES: dict[type, str] = {
    control.Startup: "startup",
    control.Keepalive: "keepalive",
    control.Shutdown: "shutdown",
    control.RequestReply: "request_reply",
    control.Ack: "ack",
    control.ErrorReply: "err",
    control.Request: "request",
    control.ForceReconnect: "force_reconnect",
    control.FileUpdate: "file_update",
    control.FileClose: "file_close",
    control.OtherControl: "other",
    control.AgentEvent: "event",
}


def decode_capture(data: bytes, keys: KeysFile, direction: str = "auto") -> dict[str, object]:
    """Decode one TCP frame (length + payload) or UDP payload. Raises WireError when it cannot be opened.

    The plan: guess the transport from the length header, read the `!<id>!` prefix and cipher header with
    the codec's own `split_header()`, find the key (the prefix names it; without one every active entry is
    tried, because a troubleshooter may not know which agent, or which direction, a capture came from), open
    it with `AgentCipher.open()`, and classify the payload with the control-message parsers. Every refusal
    is the WireError reason remoted would log, so the tool answers "why was this dropped" in the manager's
    words.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, not {direction!r}")
    transport, payload = split_transport(data)
    if payload in (PING, PONG):
        return {
            "transport": transport,
            "cipher": None,
            "prefixed": False,
            "message": payload.decode("ascii"),
            "size": len(payload),
            "control": {"type": payload[1:].decode("ascii")},
        }
    envelope = split_header(payload)
    if envelope.agent_id is not None:
        entry = _entry_for_prefix(keys, envelope.agent_id)
        message = AgentCipher.for_key(entry.id, entry.name, entry.key).open(envelope)
    else:
        entry, message = _try_every_key(keys, envelope)
    prefixed = envelope.agent_id is not None
    sender, parsed = classify(message.payload, direction, prefixed=prefixed)
    return {
        "transport": transport,
        "direction": sender,
        "agent": {"id": entry.id, "name": entry.name, "ip": entry.ip.text},
        "cipher": message.cipher.value,
        "prefixed": prefixed,
        "rand": message.rand,
        "global_counter": message.global_counter,
        "local_counter": message.local_counter,
        "checksum_valid": True,  # open() refuses a mismatch, so an opened message always has a valid one
        "message": message.payload.decode("utf-8", errors="replace"),
        "size": len(message.payload),
        "control": parsed,
    }


def split_transport(data: bytes) -> tuple[str, bytes]:
    """("tcp", payload) when the first 4 bytes are the little-endian length of the rest, else ("udp", data)."""
    if len(data) >= LENGTH.size:
        (size,) = LENGTH.unpack_from(data)
        if size == len(data) - LENGTH.size or data[:1] not in _UDP_FIRST_BYTES:
            # Either it is exactly one frame, or it cannot be a datagram: read it the way remoted reads TCP.
            decoder = FrameDecoder()
            frames = decoder.feed(data)  # raises WireError(TOO_BIG) for a length over OS_MAXSTR
            if len(frames) == 1 and not decoder.buffered:
                return "tcp", frames[0]
            raise WireError(
                Reason.BAD_HEADER,
                f"not a UDP payload (no '!', '#AES:' or ':' header) and not one TCP frame: "
                f"the length header says {size} bytes, {len(data) - LENGTH.size} follow",
            )
    if len(data) > OS_MAXSTR:
        raise WireError(Reason.TOO_BIG, f"datagram of {len(data)} bytes > {OS_MAXSTR}")
    return "udp", data


def classify(payload: bytes, direction: str, *, prefixed: bool) -> tuple[str, dict[str, object]]:
    """Pick the direction (auto: a manager message shape, never with a prefix) and parse the control message."""
    sender = direction
    if direction == "auto":
        sender = "agent" if prefixed or not _looks_like_manager(payload) else "manager"
    try:
        parsed: object = (
            control.parse_from_manager(payload) if sender == "manager" else control.parse_from_agent(payload)
        )
    except WireError as exc:
        result: dict[str, object] = {"type": "invalid", "error": exc.reason.value, "detail": exc.detail}
    else:
        result = control_to_dict(parsed)
    return (MANAGER_TO_AGENT if sender == "manager" else AGENT_TO_MANAGER), result


def control_to_dict(message: object) -> dict[str, object]:
    """A parsed control message as JSON-ready data with a "type" field; events keep only their type."""
    result: dict[str, object] = {"type": _CONTROL_TYPES.get(type(message), type(message).__name__.lower())}
    if dataclasses.is_dataclass(message) and not isinstance(message, (type, control.AgentEvent)):
        for field in dataclasses.fields(message):
            result[field.name] = getattr(message, field.name)  # labels: pairs, printed as 2-item lists
    return result


def _looks_like_manager(payload: bytes) -> bool:
    try:
        parsed = control.parse_from_manager(payload)
    except WireError:
        return False
    if isinstance(parsed, control.Request):
        # `#!-req <counter> <target> ...` from the manager vs `#!-req <counter> <response>` from the agent.
        target = parsed.target
        return target not in _AGENT_REPLY_WORDS and bool(_MANAGER_REQUEST_TARGET.match(target))
    return isinstance(parsed, (control.Ack, control.ErrorReply, control.ForceReconnect))


def _entry_for_prefix(keys: KeysFile, agent_id: str) -> AgentKey:
    entry = keys.by_id(agent_id)
    if entry is not None:
        return entry
    number = int(agent_id)
    if any(e.number == number for e in keys.entries):
        raise WireError(Reason.UNKNOWN_AGENT, f"agent {agent_id} is marked removed in client.keys")
    raise WireError(Reason.UNKNOWN_AGENT, f"no agent with id {agent_id} in client.keys")


def _try_every_key(keys: KeysFile, envelope: Envelope) -> tuple[AgentKey, SecureMessage]:
    tried = 0
    last: WireError | None = None
    for entry in keys.active():
        tried += 1
        try:
            return entry, AgentCipher.for_key(entry.id, entry.name, entry.key).open(envelope)
        except WireError as exc:
            last = exc
    if not tried:
        raise WireError(Reason.UNKNOWN_AGENT, "no prefix and no active agent in client.keys")
    if tried == 1 and last is not None:
        raise WireError(last.reason, f"the only active key (agent {next(keys.active()).id}): {last.detail}")
    raise WireError(Reason.WRONG_KEY, f"no prefix, and none of the {tried} active keys opens the message")


# ---------------------------------------------------------------------------------------------- the command


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "decode",
        help="decrypt and explain one captured frame or datagram",
        description=(
            "Decrypt one captured TCP frame (4-byte little-endian length + payload) or UDP datagram with the "
            "keys of client.keys, and print what it holds as JSON. Exit 1, with {'error': ...}, when it "
            "cannot be opened."
        ),
    )
    parser.add_argument(
        "--keys",
        metavar="CLIENT_KEYS",
        help="the client.keys to use (default: etc/client.keys of --home or $AGENTPULSE_HOME)",
    )
    add_home_option(parser)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("hex", nargs="?", metavar="HEX", help="the capture as hex (spaces and 0x allowed)")
    source.add_argument("--file", metavar="RAW", help="a file holding the raw capture ('-' for stdin)")
    parser.add_argument(
        "--direction",
        choices=DIRECTIONS,
        default="auto",
        help="who sent it (default: guess; ack/err/request/force_reconnect are read as manager messages)",
    )
    parser.set_defaults(handler=run)


def parse_hex(text: str) -> bytes:
    """Hex with any whitespace and an optional leading 0x. Raises ValueError."""
    compact = "".join(text.split())
    if compact[:2].lower() == "0x":
        compact = compact[2:]
    if not compact:
        raise ValueError("empty hex input")
    return bytes.fromhex(compact)


def run(args: argparse.Namespace) -> int:
    try:
        data = _read_capture(args)
    except (OSError, ValueError) as exc:
        return _fail("invalid input", str(exc))
    keys_path = Path(args.keys) if args.keys else resolve_home(args).client_keys
    try:
        keys = read_keys_file(keys_path)
    except OSError as exc:
        return _fail("cannot read client.keys", str(exc))
    try:
        result = decode_capture(data, keys, args.direction)
    except WireError as exc:
        return _fail(exc.reason.value, exc.detail)
    print(json.dumps(result, indent=2))
    return 0


def _read_capture(args: argparse.Namespace) -> bytes:
    if args.file is None:
        return parse_hex(args.hex)
    if args.file == "-":
        return sys.stdin.buffer.read(OS_MAXSTR + LENGTH.size + 1)
    with open(args.file, "rb") as handle:
        return handle.read(OS_MAXSTR + LENGTH.size + 1)  # enough to tell "too big" from any valid capture


def _fail(error: str, detail: str) -> int:
    print(json.dumps({"error": error, "detail": detail}, indent=2))
    return 1

"""Fuzz targets: one function `bytes -> None` per decoder, shared by tests/fuzz/test_fuzz.py and bench/fuzz.py.

Each target feeds one decoder the way its caller does and lets through only the error that decoder
documents: WireError for wire/*, ConfigError for ossec.conf, nothing at all for client.keys (a bad line is a
`KeysFile.problems` entry), an `err` answer for the query socket. Anything else leaving a target is a crash.
Each target also carries seeds: valid inputs (the reference's worked examples, the tests' fixtures) for the
mutation fuzzer to start from. The danger is a target that catches too much: it would hide the bugs it is for.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from agentpulse.agent.config import parse_agent_config
from agentpulse.config import Config, ConfigError, default_config_text, parse_config
from agentpulse.logs import LineFormatter
from agentpulse.paths import Home
from agentpulse.remoted.grace import GraceTracker
from agentpulse.remoted.keystore import KeyStore
from agentpulse.remoted.server import Remoted
from agentpulse.store.facade import Store
from agentpulse.wdb.commands.arguments import json_int, parse_json
from agentpulse.wdb.protocol import OS_MAXSTR, WdbError, answer_body, atoi, split_request
from agentpulse.wdb.server import WdbServer
from agentpulse.wire import control
from agentpulse.wire.counters import ReceiverCounter, sequence
from agentpulse.wire.errors import Reason, WireError
from agentpulse.wire.frames import FrameDecoder, encode_frame
from agentpulse.wire.keys import KeysFile, aes_key
from agentpulse.wire.secure import (
    AES_HEADER,
    AES_IV,
    LOCAL_MAX,
    MAX_MESSAGE,
    AgentCipher,
    CipherKind,
    checksum,
    clear_text,
    compress,
    pad,
    split_header,
)

VECTORS_PATH = Path(__file__).resolve().parents[1] / "data" / "reference" / "vectors.json"
VECTORS = json.loads(VECTORS_PATH.read_text())
KEY_LINE = VECTORS["client_keys_line"]  # "001 agent-01 any 9a1b..."
AGENT_ID, AGENT_NAME, _, RAW_KEY = KEY_LINE.split(" ")
CIPHER = AgentCipher.for_key(AGENT_ID, AGENT_NAME, RAW_KEY)
AES = Cipher(algorithms.AES(aes_key(RAW_KEY)), modes.CBC(AES_IV))
MANAGER_VERSION = "v4.14.7"
ENTRIES_CHECKED = 32  # by_id() is a scan: checking every entry of a long file would be the target's cost


class Unexpected(Exception):
    """A decoder broke a promise without raising: a wrong answer, an answer past a frame, a logged failure."""


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    run: Callable[[bytes], None]
    seeds: tuple[bytes, ...]
    tokens: tuple[bytes, ...] = ()  # words of the format, for the fuzzer's dictionary mutations


# --------------------------------------------------------------------------------------------------------
# wire: frames, secure messages, control messages


def frames(data: bytes) -> None:
    """The first byte seeds the chunking; the rest is the TCP stream, fed in random pieces."""
    chunking = random.Random(data[:1])
    stream = data[1:]
    decoder = FrameDecoder()
    got = 0
    position = 0
    while position < len(stream):
        size = chunking.choice((1, 2, 3, 4, 5, 7, 64, 4096, len(stream)))
        chunk = stream[position : position + size]
        position += len(chunk)
        try:
            payloads = decoder.feed(chunk)
        except WireError as error:
            if error.reason is not Reason.TOO_BIG:
                raise Unexpected(f"FrameDecoder raised {error.reason}") from error
            if decoder.buffered:
                raise Unexpected("the decoder kept bytes after refusing a length") from error
            return
        for payload in payloads:
            if len(payload) > decoder.max_size:
                raise Unexpected(f"a frame of {len(payload)} bytes passed the {decoder.max_size} limit")
            got += 4 + len(payload)
    if got + decoder.buffered != len(stream):
        raise Unexpected(f"{len(stream)} bytes in, {got} framed + {decoder.buffered} buffered")


def _after_open(message_payload: bytes, global_counter: int, local_counter: int) -> None:
    """What remoted does once a message opened: the replay rule, then the control parser."""
    seq = sequence(global_counter, local_counter)
    ReceiverCounter().accept_strict(seq)  # verify_msg_id, on the current connection
    ReceiverCounter().accept_window(seq)  # UDP
    _from_agent(message_payload)


def secure(data: bytes) -> None:
    """A frame's payload as remoted reads it: header, decrypt with the agent's key, verify, parse."""
    try:
        message = CIPHER.open(split_header(data))
        _after_open(message.payload, message.global_counter, message.local_counter)
    except WireError:
        return


def _encrypt_aes(clear: bytes) -> bytes:
    """AES-CBC with the agent's key and PKCS#7, as `AgentCipher.seal` does after its padding."""
    padding = 16 - len(clear) % 16
    encryptor = AES.encryptor()
    return encryptor.update(clear + bytes((padding,)) * padding) + encryptor.finalize()


def secure_clear(data: bytes) -> None:
    """The input as the decrypted text (`!` padding + zlib stream): reaches inflate and the checks after it."""
    try:
        message = CIPHER.open(split_header(AES_HEADER + _encrypt_aes(data)))
        _after_open(message.payload, message.global_counter, message.local_counter)
    except WireError:
        return


def secure_block(data: bytes) -> None:
    """The input as the inflated block after the checksum (`%05u%010u:%04u:` + message): the checksum,
    compression, padding and cipher are made right, so the counter fields and the payload are reached."""
    block = checksum(data) + data
    try:
        message = CIPHER.open(split_header(AES_HEADER + _encrypt_aes(pad(compress(block)))))
        _after_open(message.payload, message.global_counter, message.local_counter)
    except WireError:
        return


def _from_agent(payload: bytes) -> None:
    """`parse_from_agent`, and for a startup the version comparison `Remoted.handle` makes next."""
    event = control.parse_from_agent(payload)
    if isinstance(event, control.Startup) and event.version is not None:
        control.is_newer(event.version, MANAGER_VERSION)


def control_messages(data: bytes) -> None:
    """A decrypted payload, both ways: as the manager reads an agent's, and as the agent reads the manager's."""
    with contextlib.suppress(WireError):
        _from_agent(data)
    try:
        event = control.parse_from_manager(data)
        if isinstance(event, control.Request):
            control.is_getstate(event)
    except WireError:
        return


def _prefixed(prefix: bytes) -> Callable[[bytes], None]:
    def run(data: bytes) -> None:
        try:
            _from_agent(prefix + data)
        except WireError:
            return

    return run


startup = _prefixed(control.CONTROL_HEADER + control.HC_STARTUP)
startup.__doc__ = "The text after `#!-agent startup `: JSON with a version, or anything (a pre-4.6 startup)."
keepalive = _prefixed(control.CONTROL_HEADER)
keepalive.__doc__ = "The text after `#!-`: a keep-alive (reference 4.2) or any other control message."


def manager_error(data: bytes) -> None:
    """The text after `#!-err `, as the agent reads it: JSON with a message, or plain text."""
    try:
        control.parse_from_manager(control.CONTROL_HEADER + control.HC_ERROR + data)
    except WireError:
        return


def _raw(char: str) -> bool:
    """A character that must not reach a log line as it is: it could end the line or drive a terminal."""
    code = ord(char)
    return code < 0x20 or 0x7F <= code <= 0x9F or char in "\u2028\u2029"


class RemotedHarness:
    """A real `Remoted` (not listening) over a real store in a temporary home, holding the reference's agent
    001: each input is a message the agent sends, sealed with its key and handed to `Remoted.handle` as a
    UDP datagram from 127.0.0.1 (so no session; replies have no socket to go to and are dropped). Every
    line remoted logs is checked: nothing the agent sent may reach it with its control characters."""

    PEER = ("127.0.0.1", 40000)

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="agentpulse-fuzz-remoted-", dir=_fast_tmp()))
        home = Home(self.root / "ossec")
        home.create_layout()
        keys_file = KeysFile.parse(KEY_LINE + "\n")
        self.store = Store(home.db_dir, manager_host="mgr", node_name="node01", flush_interval=0.2)
        self.store.open(list(keys_file.active()))
        self.store.flush_wait()
        self.loop = asyncio.new_event_loop()
        config = Config()
        grace = GraceTracker(self.store.submit, config.remote.connection_grace, loop=self.loop)
        self.keys = KeyStore()
        self.remoted = Remoted(config, self.keys, self.store, grace)
        self.remoted.keys_changed(self.keys.load(keys_file))
        self.remoted.warn.interval = 0.0  # every refusal logged, so every log line is checked
        self.counter = 0
        self.lines = _Failures()
        logger = logging.getLogger("agentpulse.remoted")
        logger.addHandler(self.lines)
        logger.propagate = False  # refusals are expected here: checked, not printed

    def handle(self, message: bytes) -> None:
        self.counter += 1
        global_counter, local_counter = divmod(self.counter, LOCAL_MAX)
        sealed = CIPHER.seal(
            message,
            cipher=CipherKind.AES,
            rand=1,
            global_counter=global_counter,
            local_counter=local_counter + 1,
            agent_id=AGENT_ID,
        )
        self.lines.records.clear()
        with contextlib.suppress(WireError):
            self.remoted.handle(sealed, self.PEER[0], None, self.PEER)
        formatter = LineFormatter()  # what every sink writes: ossec.log and stderr
        for record in self.lines.records:
            record.process_name = "agentpulse-remoted"
            text = formatter.format(record)
            if any(_raw(char) for char in text):
                raise Unexpected(f"a log line carries the agent's control characters: {text[:120]!r}")

    def close(self) -> None:
        self.store.close()
        self.loop.close()
        shutil.rmtree(self.root, ignore_errors=True)


_remoted: RemotedHarness | None = None


def remoted_harness() -> RemotedHarness:
    """The one harness of this process, made on first use; `close_harnesses()` ends it."""
    global _remoted
    if _remoted is None:
        _remoted = RemotedHarness()
    return _remoted


def remoted_message(data: bytes) -> None:
    """A decrypted message through `Remoted.handle` and on into the store: the control parser and what the
    dispatcher does with each event (the version check, a `#!-req` reply's JSON, a keep-alive's columns)."""
    if 0 < len(data) <= MAX_MESSAGE:
        remoted_harness().handle(data)


def request_reply(data: bytes) -> None:
    """The text after `#!-req `, as remoted reads it: `<counter> <response>`, the response often JSON
    (the agent's state, which remoted stores)."""
    remoted_message(control.CONTROL_HEADER + control.HC_REQUEST + data)


# --------------------------------------------------------------------------------------------------------
# client.keys


def keys(data: bytes) -> None:
    """client.keys both ways keysfile reads it (lookup: errors replaced; edit: every byte kept), then the
    entries used as KeyStore.load and manage_agents use them. Parsing must never raise: a bad line is a
    problem, and what parsing accepted must be usable."""
    for parsed in (
        KeysFile.parse(data.decode("utf-8", "replace")),
        KeysFile(data.decode("utf-8", "surrogateescape").split("\n")),
    ):
        for entry in itertools.islice(parsed.active(), ENTRIES_CHECKED):
            entry.line()
            if parsed.by_id(entry.number) is None:
                raise Unexpected(f"entry {entry.id!r} is active but by_id({entry.number}) finds nothing")
            entry.ip.allows("127.0.0.1")
            entry.ip.allows("::1")
            if entry.ip.single_host:
                entry.ip.lookup_text  # noqa: B018 - the property is the work
        parsed.next_id()
        parsed.render()


# --------------------------------------------------------------------------------------------------------
# ossec.conf


def _config_text(data: bytes) -> str:
    # read_config_text refuses a non-UTF-8 file (a ConfigError); the parser still gets the rest to chew on.
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("utf-8", "replace")


def config_manager(data: bytes) -> None:
    try:
        parse_config(_config_text(data))
    except ConfigError:
        return


def config_agent(data: bytes) -> None:
    try:
        parse_agent_config(_config_text(data))
    except ConfigError:
        return


# --------------------------------------------------------------------------------------------------------
# the query socket (queue/db/wdb)


def wdb_request(data: bytes) -> None:
    """The pure part of a request: the C string, the `\\n` rule, the answer's size rule, and the argument
    readers every command uses (atoi on each word, JSON with cJSON's integers)."""
    text, terminal = split_request(data)
    if len(answer_body(text, terminal)) > OS_MAXSTR:
        raise Unexpected("an answer body longer than a frame")
    _, _, rest = text.lstrip(" \n").partition(" ")
    _, _, argument = rest.partition(" ")
    for word in argument.split()[:8]:
        atoi(word)
    try:
        value = parse_json(argument)
    except WdbError:
        return
    items = value if isinstance(value, list) else [value]
    for item in items[:64]:
        if isinstance(item, dict):
            for field in ("id", "status_code", "date_add", "last_keepalive"):
                json_int(item.get(field))


class _Failures(logging.Handler):
    """The records a logger emitted (the query socket logs only failures it did not expect)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class WdbHarness:
    """A real store (SQLite in a temporary home, five agents) and a real `WdbServer`, whose `dispatch`
    each input goes through on one event loop. The socket is listening but unused: no framing here."""

    AGENTS = 5
    SQL_TIME_LIMIT = 0.5  # below bench/fuzz.py's hang threshold: a slow `sql` must be stopped by the sandbox

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="agentpulse-fuzz-", dir=_fast_tmp()))
        home = Home(self.root / "ossec")
        home.create_layout()
        self.loop = asyncio.new_event_loop()
        self.store = Store(home.db_dir, manager_host="mgr", node_name="node01", flush_interval=0.05)
        lines = "".join(f"{n:03d} agent-{n:05d} any {n:064x}\n" for n in range(1, self.AGENTS + 1))
        self.store.open(list(KeysFile.parse(lines).active()))
        self.store.flush_wait()
        self.server = WdbServer(
            self.store, home.wdb_socket, allow_sql="read-only", sql_time_limit=self.SQL_TIME_LIMIT
        )
        self.loop.run_until_complete(self.server.start())
        self.failures = _Failures()
        logger = logging.getLogger("agentpulse.wdb.server")
        logger.addHandler(self.failures)
        logger.propagate = False  # the fuzzer reports failures itself; no traceback per input on stderr

    def query(self, data: bytes) -> str:
        text, terminal = split_request(data)
        self.failures.records.clear()
        answer = self.loop.run_until_complete(self.server.dispatch(text))
        for record in self.failures.records:
            if record.exc_info is not None and record.exc_info[1] is not None:
                raise record.exc_info[1]
            raise Unexpected(f"the query socket logged: {record.getMessage()}")
        if not answer.startswith(("ok", "due", "err")):
            raise Unexpected(f"answer {answer[:40]!r} is neither ok, due nor err")
        answer_body(answer, terminal)
        return answer

    def close(self) -> None:
        self.loop.run_until_complete(self.server.stop())
        self.store.close()
        self.loop.close()
        shutil.rmtree(self.root, ignore_errors=True)


def _fast_tmp() -> str | None:
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() else None


_harness: WdbHarness | None = None


def wdb_harness() -> WdbHarness:
    """The one harness of this process, made on first use; `close_harnesses()` ends it."""
    global _harness
    if _harness is None:
        _harness = WdbHarness()
    return _harness


def close_harnesses() -> None:
    global _harness, _remoted
    if _harness is not None:
        _harness.close()
        _harness = None
    if _remoted is not None:
        _remoted.close()
        _remoted = None


def wdb_dispatch(data: bytes) -> None:
    """A request body through the query socket's real dispatch and command handlers, on a real store:
    every answer must be `ok`, `due` or `err`, and nothing may fail in a way the server logs."""
    wdb_harness().query(data)


# --------------------------------------------------------------------------------------------------------
# seeds


def _sealed(message: bytes, cipher: CipherKind, prefix: bool, counters: tuple[int, int, int]) -> bytes:
    rand, global_counter, local_counter = counters
    return CIPHER.seal(
        message,
        cipher=cipher,
        rand=rand,
        global_counter=global_counter,
        local_counter=local_counter,
        agent_id=AGENT_ID if prefix else None,
    )


KEEPALIVE = VECTORS["vectors"][0]["message"].encode()
AGENT_MESSAGES: tuple[bytes, ...] = (
    KEEPALIVE,
    control.build_startup("v4.14.7"),
    control.build_startup(None),
    control.SHUTDOWN,
    control.build_request_reply("3a2b1c", json.dumps({"error": 0, "data": {"status": "connected"}})),
    control.build_request_reply("3a2b1c", "ack"),
    control.build_request_reply("3a2b1c", control.ERR_UNRECOGNIZED),
    b"#!-up file 4a8724b20dee0124ff9656783c490c4e merged.mg\n",
    b"1:wazuh-agent:ossec: Agent started: 'agent-01->any'.",
    control.build_keepalive(
        "Microsoft Windows 10 Pro [Ver: 10.0.19045] |win-01 |x86_64 - Wazuh v4.14.7",
        merged_sum="0" * 32,
        labels=(('"env"', "prod"), ('#!"hidden"', "x")),
        agent_ip="10.0.0.7",
        config_sum="f" * 32,
    ),
)
MANAGER_MESSAGES: tuple[bytes, ...] = (
    control.ACK,
    control.build_error(control.ERR_NEWER_VERSION),
    control.build_error(control.ERR_NO_VERSION),
    control.build_request("1f2e", control.AGENT_TARGET, control.GETSTATE),
    control.FORCE_RECONNECT,
    b"#!-execd {}",
)
SEALED: tuple[bytes, ...] = tuple(
    _sealed(message, cipher, prefix, (12345, 0, 27))
    for message in AGENT_MESSAGES
    for cipher in CipherKind
    for prefix in (True, False)
)
VECTOR_FRAMES: tuple[bytes, ...] = tuple(bytes.fromhex(vector["frame_hex"]) for vector in VECTORS["vectors"])


def _framed(payloads: tuple[bytes, ...]) -> bytes:
    return b"".join(encode_frame(payload) for payload in payloads)


FRAME_SEEDS: tuple[bytes, ...] = (
    b"\x00" + VECTOR_FRAMES[0],
    b"\x01" + VECTOR_FRAMES[0] + VECTOR_FRAMES[2],
    b"\x02" + encode_frame(VECTOR_FRAMES[1]),
    b"\x03" + _framed(SEALED[:6]),
    b"\x04" + encode_frame(b""),
    b"\x05" + encode_frame(b"x" * OS_MAXSTR),
)
CLEAR_SEEDS: tuple[bytes, ...] = tuple(
    pad(compress(checksum(clear) + clear))
    for clear in (clear_text(message, 12345, 0, 27) for message in AGENT_MESSAGES[:5])
)
BLOCK_SEEDS: tuple[bytes, ...] = tuple(clear_text(message, 777, 3, 9997) for message in AGENT_MESSAGES)
STARTUP_SEEDS: tuple[bytes, ...] = (
    b'{"version":"v4.14.7"}',
    b'{"version":"v4.99.0"}',
    b'{"version":4}',
    b'{"other":"x"}',
    b"",
    b"[]",
    b'{"version":"Wazuh v4.14.7","extra":[1,{"a":null}]}',
)
REPLY_SEEDS: tuple[bytes, ...] = (
    b'3a2b1c {"error":0,"data":{"status":"connected","last_keepalive":"2026-01-01 00:00:00",'
    b'"last_ack":"2026-01-01 00:00:00","msg_count":12,"msg_sent":12,"msg_buffer":0,"buffer_enabled":true}}',
    b"3a2b1c ack",
    b"3a2b1c err Unrecognized command",
    b'1 {"error":1,"data":[]}',
)
KEEPALIVE_SEEDS: tuple[bytes, ...] = tuple(
    message[len(control.CONTROL_HEADER) :] for message in AGENT_MESSAGES
)
ERROR_SEEDS: tuple[bytes, ...] = (
    b'{"message":"Agent version must be lower or equal to manager version"}',
    b"Couldn't retrieve version",
    b'{"message":7}',
)
KEYS_SEEDS: tuple[bytes, ...] = (
    (KEY_LINE + "\n").encode(),
    b"".join(f"{n:03d} agent-{n:05d} any {n:064x}\n".encode() for n in range(1, 6)),
    b"# a comment\n002 !removed-agent any abc\n003 web-01 10.0.0.0/24 k3\n004 db-01 10.0.0.9 k4\n",
    b"005 v6-agent fe80::1/64 k5\n006 masked 192.168.1.0/255.255.255.0 k6\n007 neg !10.0.0.1 k7\n\n",
    b"008 #removed any k8\r\n 009 spaced any k9\n",
)
AGENT_CONF = """<ossec_config>
  <client>
    <server>
      <address>10.0.0.5</address>
      <port>1514</port>
      <protocol>tcp</protocol>
      <max_retries>3</max_retries>
      <retry_interval>30</retry_interval>
    </server>
    <notify_time>20</notify_time>
    <time-reconnect>60</time-reconnect>
    <crypto_method>aes</crypto_method>
  </client>
  <labels>
    <label key="env">prod</label>
    <label key="owner" hidden="yes">ops</label>
  </labels>
</ossec_config>
"""
CONFIG_SEEDS: tuple[bytes, ...] = (
    default_config_text().encode(),
    AGENT_CONF.encode(),
    b"<ossec_config><remote><connection>secure</connection><port>1514</port>"
    b"<manager_keepalive><interval>60</interval><timeout>3m</timeout></manager_keepalive></remote>"
    b"<nats><url>nats://127.0.0.1:4222,tls://h:1</url><user>u</user><password>p</password></nats>"
    b"<database><flush_interval>0.5</flush_interval></database></ossec_config>"
    b"<ossec_config><global><agents_disconnection_time>10m</agents_disconnection_time></global>"
    b"<cluster><node_name>n1</node_name></cluster></ossec_config>",
)
WDB_SEEDS: tuple[bytes, ...] = (
    b"global get-agent-info 1",
    b"global get-all-agents last_id 0",
    b"global get-all-agents context",
    b"global get-agents-by-connection-status 0 active",
    b"global get-agents-by-connection-status 0 active node01 10",
    b'global update-keepalive {"id":1,"connection_status":"active","sync_status":"synced"}\n',
    b'global update-connection-status {"id":2,"connection_status":"disconnected","sync_status":"synced",'
    b'"status_code":3}',
    b'global update-status-code {"id":3,"status_code":1,"version":"Wazuh v4.99.0","sync_status":"syncreq"}',
    b"global disconnect-agents 0 9999999999 synced",
    b"global reset-agents-connection synced",
    b"global sync-agent-info-get last_id 0",
    b'global sync-agent-info-set [{"id":4,"name":"agent-00004","os_name":"Ubuntu","last_keepalive":1,'
    b'"connection_status":"active","labels":[{"id":4,"key":"env","value":"prod"}]}]',
    b'global insert-agent {"id":50,"name":"new-50","ip":"any","register_ip":"any","internal_key":"k",'
    b'"group":"default,linux","date_add":1700000000}',
    b"global delete-agent 50",
    b'global find-agent {"name":"agent-00001","ip":"any"}',
    b"global get-labels 1",
    b"global select-agent-name 1",
    b"global select-agent-group 1",
    b'global set-agent-groups {"mode":"append","sync_status":"syncreq","data":[{"id":1,"groups":["web"]}]}',
    b"global insert-agent-group web",
    b"global delete-group web",
    b"global select-groups",
    b"global get-distinct-groups",
    b"global find-group default",
    b"global get-group-agents default last_id 0",
    b"global select-group-belong 1",
    b"global get_fragmentation",
    b"agent 0 get_fragmentation",
    b"remoted force-reconnect default",
    b"global sql SELECT id, name FROM agent WHERE id > 0 LIMIT 3\x00",
)

JSON_TOKENS = (
    b"{",
    b"}",
    b"[",
    b"]",
    b'"',
    b":",
    b",",
    b"null",
    b"true",
    b"1e999",
    b"-0",
    b"\\u0000",
    b"\\ud800",
)
CONTROL_TOKENS = (
    b"#!-",
    b"agent startup ",
    b"agent shutdown ",
    b"agent ack ",
    b"req ",
    b"err ",
    b"up file ",
    b"force_reconnect",
    b" merged.mg",
    b'#"_agent_ip":',
    b" - ",
    b" / ",
    b" [",
    b"]",
    b"|",
    b": ",
    b" (",
    b")",
    b"Ver: ",
    b"\n",
    *JSON_TOKENS,
)
XML_TOKENS = (
    b"<",
    b">",
    b"</",
    b"/>",
    b"<ossec_config>",
    b"</ossec_config>",
    b"<remote>",
    b"<client>",
    b"<server>",
    b"<!DOCTYPE x [<!ENTITY a 'b'>]>",
    b"&a;",
    b"&#0;",
    b"<![CDATA[",
    b"]]>",
    b"<?xml version='1.0'?>",
    b"<!--",
    b"-->",
    b'="',
)
WDB_TOKENS = (
    b"global ",
    b"agent ",
    b"remoted ",
    b"last_id ",
    b"insert-agent ",
    b"sync-agent-info-set ",
    b"set-agent-groups ",
    b"sql ",
    b"\x00",
    *JSON_TOKENS,
)

TARGETS: dict[str, Target] = {
    target.name: target
    for target in (
        Target(
            "frames", frames, FRAME_SEEDS, (b"\x00\x00\x01\x00", b"\x01\x00\x01\x00", b"\xff\xff\xff\xff")
        ),
        Target("secure", secure, SEALED + VECTOR_FRAMES[1:2], (b"!001!", b"#AES:", b":", b"!")),
        Target("secure_clear", secure_clear, CLEAR_SEEDS, (b"!", b"\x78\x9c", b"\x78\x01", b"\x78\xda")),
        Target("secure_block", secure_block, BLOCK_SEEDS, (b":", b"99999", b"4294967295", *CONTROL_TOKENS)),
        Target("control", control_messages, AGENT_MESSAGES + MANAGER_MESSAGES, CONTROL_TOKENS),
        Target("startup", startup, STARTUP_SEEDS, (b'"version"', b"v4.", *JSON_TOKENS)),
        Target("request_reply", request_reply, REPLY_SEEDS, (b'"data"', b'"error"', *JSON_TOKENS)),
        Target("remoted_message", remoted_message, AGENT_MESSAGES, CONTROL_TOKENS),
        Target("keepalive", keepalive, KEEPALIVE_SEEDS, CONTROL_TOKENS),
        Target("manager_error", manager_error, ERROR_SEEDS, (b'"message"', *JSON_TOKENS)),
        Target("keys", keys, KEYS_SEEDS, (b" ", b"\n", b"any", b"!", b"#", b"/", b"::", b".", b"\r")),
        Target("config_manager", config_manager, CONFIG_SEEDS, XML_TOKENS),
        Target("config_agent", config_agent, CONFIG_SEEDS[1:2] + CONFIG_SEEDS[:1], XML_TOKENS),
        Target("wdb_request", wdb_request, WDB_SEEDS, WDB_TOKENS),
        Target("wdb_dispatch", wdb_dispatch, WDB_SEEDS, WDB_TOKENS),
    )
}

"""An agent home on disk: `init_agent_home` writes one (etc/ossec.conf with `<client>`, etc/client.keys),
`load_agent_setup` reads what the daemon needs from it, or says which file is wrong and how
(`AgentSetupError`)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Final
from xml.sax.saxutils import escape, quoteattr

from agentpulse.agent.config import ClientConfig, load_agent_config
from agentpulse.config import ConfigError
from agentpulse.keysfile import read_keys_file
from agentpulse.paths import Home
from agentpulse.wire.keys import AgentKey, parse_line

HIDDEN_ATTR: Final = ' hidden="yes"'


class AgentSetupError(Exception):
    """The agent home cannot run an agent: the message says which file and what is wrong."""


def load_client_config(home: Home) -> ClientConfig:
    try:
        client = load_agent_config(home.ossec_conf)
    except ConfigError as error:
        raise AgentSetupError(f"configuration error: {error}") from None
    if client is None:
        raise AgentSetupError(f"{home.ossec_conf}: no <client> section (an agent needs <client><server>)")
    return client


def load_agent_key(path: Path) -> AgentKey:
    """The agent's own entry: client.keys must hold exactly one active line."""
    try:
        keys = read_keys_file(path)
    except FileNotFoundError:
        raise AgentSetupError(f"{path}: file not found (import the agent's key first)") from None
    except OSError as error:
        raise AgentSetupError(f"{path}: cannot read: {error.strerror or error}") from None
    active = list(keys.active())
    if len(active) == 1:
        return active[0]
    problems = "; ".join(f"line {problem.line_no}: {problem.reason}" for problem in keys.problems)
    detail = f" ({problems})" if problems else ""
    if not active:
        raise AgentSetupError(f"{path}: no active agent key{detail}")
    ids = ", ".join(entry.id for entry in active)
    raise AgentSetupError(f"{path}: {len(active)} active keys (ids {ids}); an agent has exactly one")


def load_agent_setup(home: Home) -> tuple[ClientConfig, AgentKey | None]:
    """Everything the daemon needs from the home, or AgentSetupError. Blocking (file reads).

    No key (no file, an empty one, no valid line) is no error while enrolment is on: the daemon enrols.
    """
    config = load_client_config(home)
    try:
        return config, load_agent_key(home.client_keys)
    except AgentSetupError:
        if config.enrollment.enabled and not _several_keys(home.client_keys):
            return config, None
        raise


def _several_keys(path: Path) -> bool:
    try:
        return len(list(read_keys_file(path).active())) > 1
    except OSError:
        return False


def _seconds(value: float) -> str:
    return f"{value:g}"


def init_agent_home(
    home: Home | str | os.PathLike[str],
    manager_host: str,
    manager_port: int,
    key_line: str | None,
    protocol: str = "tcp",
    *,
    notify_time: float = 20.0,
    time_reconnect: float | None = None,
    crypto_method: str = "aes",
    max_retries: int | None = None,
    retry_interval: float | None = None,
    state_interval: float | None = None,
    labels: Iterable[tuple[str, str, bool]] = (),
    enrollment: Mapping[str, object] | None = None,
    more_servers: Sequence[tuple[str, int]] = (),
    localfiles: Iterable[str] = (),
) -> Home:
    """Write an agent home: etc/ossec.conf with `<client>` (and `<labels>`), etc/client.keys with one line
    (empty without `key_line`: the agent enrols).

    `labels` are (key, value, hidden); `enrollment` the `<enrollment>` options (element -> value);
    `more_servers` further `<server>` blocks (host, port) after the first, with its protocol and retries,
    tried in that order. `localfiles` the files to tail
    (`<localfile>`). Values left None keep Wazuh's defaults. Overwrites both files.
    """
    if not isinstance(home, Home):
        home = Home(Path(home))
    if protocol not in ("tcp", "udp"):
        raise ValueError(f"protocol must be tcp or udp, not {protocol!r}")
    entry = parse_line(key_line.strip()) if key_line is not None else None
    if key_line is not None and (entry is None or entry.removed):
        raise ValueError("key_line must be an active client.keys line: '<id> <name> <ip> <key>'")
    client: list[str] = []
    for host, port in ((manager_host, manager_port), *more_servers):
        server = [
            f"      <address>{escape(host)}</address>",
            f"      <port>{int(port)}</port>",
            f"      <protocol>{protocol}</protocol>",
        ]
        if max_retries is not None:
            server.append(f"      <max_retries>{int(max_retries)}</max_retries>")
        if retry_interval is not None:
            server.append(f"      <retry_interval>{_seconds(retry_interval)}</retry_interval>")
        client += ["    <server>", *server, "    </server>"]
    client.append(f"    <notify_time>{_seconds(notify_time)}</notify_time>")
    if time_reconnect is not None:
        client.append(f"    <time-reconnect>{_seconds(time_reconnect)}</time-reconnect>")
    client.append(f"    <crypto_method>{escape(crypto_method)}</crypto_method>")
    if state_interval is not None:
        client.append(f"    <state_interval>{_seconds(state_interval)}</state_interval>")
    if enrollment is not None:
        options = [f"      <{tag}>{escape(_option(value))}</{tag}>" for tag, value in enrollment.items()]
        client += ["    <enrollment>", *options, "    </enrollment>"]
    lines = ["<ossec_config>", "  <client>", *client, "  </client>"]
    label_lines = [
        f"    <label key={quoteattr(key)}{HIDDEN_ATTR if hidden else ''}>{escape(value)}</label>"
        for key, value, hidden in labels
    ]
    if label_lines:
        lines += ["  <labels>", *label_lines, "  </labels>"]
    for location in localfiles:
        lines += [
            "  <localfile>",
            "    <log_format>syslog</log_format>",
            f"    <location>{escape(location)}</location>",
            "  </localfile>",
        ]
    lines.append("</ossec_config>")

    for directory in (home.etc, home.rids_dir, home.run_dir, home.logs_dir):
        directory.mkdir(parents=True, exist_ok=True)
    home.ossec_conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
    fd = os.open(home.client_keys, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(entry.line() + "\n" if entry is not None else "")
    return home


def _option(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return _seconds(value)
    return str(value)

"""`agentpulse watch`: follow the events a manager publishes on NATS, one line each or the raw JSON.

Where to connect: `--url`, else the URL the manager's embedded server wrote to `var/run/nats.url`, else
`<nats><url>` of the home's ossec.conf. Credentials, TLS and the subject prefix come from that ossec.conf
when it can be read. `--snapshot` prints the KV bucket first (the current status of every agent), then the
live events; it subscribes before reading the snapshot, so no event falls between the two.
Events carry agent text (names, versions): a line goes out through `for_terminal`, JSON through `json_safe`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import sys
from dataclasses import dataclass
from typing import Any

from agentpulse.cli.home import add_home_option, resolve_home
from agentpulse.config import ConfigError, NatsConfig, load_config
from agentpulse.escape import for_terminal, json_safe
from agentpulse.ingest.event import EVENTS_TOKEN
from agentpulse.ingest.kinds import ALL_KINDS
from agentpulse.paths import Home

SUBJECTS = ("status", "keepalive", "all")
TEXT_SHOWN = 300  # characters of an event's text on one terminal line (--json prints it all)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    watch = subparsers.add_parser("watch", help="print status and keep-alive events as NATS delivers them")
    add_home_option(watch)
    watch.add_argument(
        "--url", help="NATS server URL(s), comma-separated (default: var/run/nats.url, <nats><url>)"
    )
    watch.add_argument("--json", action="store_true", help="print each event's JSON as published")
    watch.add_argument("--subjects", choices=SUBJECTS, default="all", help="which events (default: all)")
    watch.add_argument(
        "--snapshot", action="store_true", help="print the current status of every agent first"
    )
    watch.add_argument(
        "--events", action="store_true", help="follow agent events (log lines, FIM, inventory ...) instead"
    )
    watch.add_argument("--agent", metavar="ID", help="with --events: only this agent's (e.g. 001)")
    watch.add_argument("--kind", choices=ALL_KINDS, help="with --events: only events of this kind")
    watch.set_defaults(handler=run_watch)


def event_subject(prefix: str, agent: str | None, kind: str | None) -> str:
    """The subscription for `--events [--agent ID] [--kind K]`; raises ValueError for a bad id."""
    if agent is not None and not (agent.isdigit() and len(agent) <= 9):
        raise ValueError(f"--agent must be an agent id (digits), not {agent!r}")
    token = f"{int(agent):03d}" if agent is not None else "*"
    return f"{prefix}.{EVENTS_TOKEN}.{token}.{kind or '*'}"


def format_agent_event(event: dict[str, Any]) -> str:
    """One line for an agent event: when, who, kind, location and the start of the text."""
    text = event.get("text")
    if text is None and event.get("text_b64") is not None:
        text = f"<{len(base64.b64decode(event['text_b64']))} bytes, not UTF-8>"
    location = event.get("location") if event.get("location") is not None else "-"
    shown = str(text)[:TEXT_SHOWN] + ("..." if text is not None and len(str(text)) > TEXT_SHOWN else "")
    return (
        f"{event.get('received_iso') or '-'}  {event.get('agent_id', '?')} {event.get('name') or '-'}  "
        f"{event.get('kind')}  {location}: {shown}"
    )


@dataclass(frozen=True, slots=True)
class Target:
    servers: list[str]
    config: NatsConfig


def resolve_target(home: Home, url: str | None) -> Target:
    """The servers and the `<nats>` settings to use; raises ValueError when no URL can be found."""
    try:
        config = load_config(home.ossec_conf).nats if home.ossec_conf.exists() else NatsConfig()
    except ConfigError as error:
        print(f"agentpulse watch: ignoring {home.ossec_conf}: {error}", file=sys.stderr)
        config = NatsConfig()
    if url:
        servers = [item.strip() for item in url.split(",") if item.strip()]
    elif home.nats_url_file.exists():
        servers = home.nats_url_file.read_text().split()
    else:
        servers = list(config.urls)
    if not servers:
        raise ValueError(
            f"no NATS URL: pass --url, or point --home at a manager home with {home.nats_url_file.name} "
            "(embedded server running) or <nats><url> in etc/ossec.conf"
        )
    return Target(servers, config)


def format_event(event: dict[str, Any], *, snapshot: bool = False) -> str:
    """One line per event, for a terminal."""
    if event.get("type") == "event":
        return format_agent_event(event)
    agent = f"{event.get('agent_id', '?')} {event.get('name') or '-'}"
    if event.get("type") == "keepalive":
        return (
            f"{_when(event.get('last_keepalive'))}  {agent}  keepalive  {event.get('status')}  "
            f"{event.get('ip') or '-'}  {event.get('version') or '-'}  seq {event.get('sequence')}"
        )
    kind = "snapshot " if snapshot else "status   "
    return (
        f"{event.get('at_iso') or _when(event.get('at'))}  {agent}  {kind} {event.get('previous')} -> "
        f"{event.get('status')} ({event.get('status_code')}: {event.get('reason')})  seq {event.get('sequence')}"
    )


def _when(at: object) -> str:
    from agentpulse.events.payloads import iso_utc

    return iso_utc(float(at)) if isinstance(at, int | float) else "-"


def run_watch(args: argparse.Namespace) -> int:
    home = resolve_home(args)
    try:
        target = resolve_target(home, args.url)
    except ValueError as error:
        print(f"agentpulse watch: {error}", file=sys.stderr)
        return 1
    subjects: list[str] | None = None
    if args.events:
        try:
            subjects = [event_subject(target.config.subject_prefix, args.agent, args.kind)]
        except ValueError as error:
            print(f"agentpulse watch: {error}", file=sys.stderr)
            return 2
    elif args.agent is not None or args.kind is not None:
        print("agentpulse watch: --agent and --kind go with --events", file=sys.stderr)
        return 2
    try:
        return asyncio.run(
            watch(target, args.subjects, as_json=args.json, snapshot=args.snapshot, only=subjects)
        )
    except KeyboardInterrupt:
        return 0


async def watch(
    target: Target, subjects: str, *, as_json: bool, snapshot: bool, only: list[str] | None = None
) -> int:
    import nats
    from nats.aio.msg import Msg
    from nats.js.errors import NoKeysError, NotFoundError

    from agentpulse.events.service import NatsUnavailable, connect_options, describe, redact

    try:
        options = await asyncio.to_thread(connect_options, target.config)
    except NatsUnavailable as error:
        print(f"agentpulse watch: {error}", file=sys.stderr)
        return 1
    options["name"] = "agentpulse-watch"
    where = ", ".join(redact(url) for url in target.servers)
    reported: set[str] = set()

    async def on_error(error: Exception) -> None:
        reason = describe(error)
        if reason not in reported:
            reported.add(reason)
            print(f"agentpulse watch: NATS at {where}: {reason} (retrying)", file=sys.stderr)

    nc = await nats.connect(
        target.servers, **options, error_cb=on_error, max_reconnect_attempts=-1, reconnect_time_wait=2
    )
    queue: asyncio.Queue[Msg] = asyncio.Queue()

    async def enqueue(msg: Msg) -> None:
        queue.put_nowait(msg)

    prefix = target.config.subject_prefix
    tokens = ("status", "keepalive") if subjects == "all" else (subjects,)
    wanted = only if only is not None else [f"{prefix}.{token}.*" for token in tokens]
    try:
        for subject in wanted:
            await nc.subscribe(subject, cb=enqueue)
        await nc.flush()
        following = f"{', '.join(tokens)} events" if only is None else f"agent events ({', '.join(only)})"
        print(f"agentpulse watch: following {following} on {where}", file=sys.stderr)
        if snapshot:
            try:
                kv = await nc.jetstream().key_value(target.config.kv_bucket)
                for key in sorted(await kv.keys()):
                    with contextlib.suppress(NotFoundError):
                        entry = await kv.get(key)
                        if entry.value:
                            _print(entry.value, as_json=as_json, snapshot=True)
            except (NoKeysError, NotFoundError):
                print(f"agentpulse watch: KV bucket {target.config.kv_bucket} is empty", file=sys.stderr)
        while True:
            msg = await queue.get()
            _print(msg.data, as_json=as_json, snapshot=False)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), 2)


def render(data: bytes, *, as_json: bool, snapshot: bool) -> str:
    """One published event as the line to print: never a control character, whoever published it."""
    text = data.decode("utf-8", "replace")
    if as_json:
        # `\uXXXX` in a compact document's strings is the same value; raw C0 is not JSON in any case.
        return json_safe(text)
    try:
        return for_terminal(format_event(json.loads(text), snapshot=snapshot))
    except (ValueError, AttributeError):
        return for_terminal(text)


def _print(data: bytes, *, as_json: bool, snapshot: bool) -> None:
    print(render(data, as_json=as_json, snapshot=snapshot), flush=True)

"""`agentpulse simulate`: a fleet of simulated agents against a manager on this machine, then a JSON summary.

The agents come from an existing client.keys (`--keys`), are created for the run (`--create-keys`) or
enrol first (`--enrol`: each asks the manager's enrolment port for a key); the fleet itself is
`agentpulse.simulator`. Output: a live progress line on stderr, the summary on stdout (and in
`--json-out`); the exit codes are listed at `run_simulate`.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agentpulse.simulator.plan import SimulatorConfig
    from agentpulse.wire.keys import AgentKey

PROGRAM = "agentpulse simulate"
DEFAULT_RAMP = 5.0  # or a quarter of --duration when that is shorter


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="simulate a fleet of agents against a manager on this machine (load test)",
        description=(
            "Connect N simulated Wazuh agents to a manager on 127.0.0.0/8: startup, keep-alives every "
            "--interval seconds, answers to getstate probes, reconnects. Prints a JSON summary."
        ),
    )
    parser.add_argument(
        "--manager",
        required=True,
        metavar="HOST:PORT",
        type=_manager_addresses,
        action="extend",
        help="a manager; repeat it (or separate by commas) for an agent's list of servers, tried in order",
    )
    parser.add_argument(
        "--spread",
        action="store_true",
        help="with several --manager: agent i starts at the (i mod n)-th, as behind a load balancer",
    )
    parser.add_argument("--agents", required=True, type=_positive_int, metavar="N")
    keys = parser.add_mutually_exclusive_group(required=True)
    keys.add_argument(
        "--keys", type=Path, metavar="FILE", help="use the first N active agents of this client.keys"
    )
    keys.add_argument(
        "--create-keys",
        type=Path,
        metavar="FILE",
        help="append N new agents (sim-NNNNNN, ip any) to this client.keys, e.g. the manager's etc/client.keys",
    )
    keys.add_argument(
        "--enrol",
        action="store_true",
        help="enrol the N agents first on the manager's enrolment port (names sim-<run>-NNNNNN)",
    )
    parser.add_argument(
        "--enrol-port", type=_port, default=1515, metavar="PORT", help="with --enrol (default 1515)"
    )
    parser.add_argument("--password", help="with --enrol: the manager's enrolment password")
    parser.add_argument(
        "--enrol-concurrency",
        type=_positive_int,
        default=128,
        metavar="C",
        help="with --enrol: enrolments in flight at once (default 128)",
    )
    parser.add_argument(
        "--processes",
        type=_positive_int,
        metavar="P",
        help="worker processes (default: one per 15,000 agents, at least 1)",
    )
    parser.add_argument(
        "--interval", type=_positive_float, default=10.0, metavar="S", help="keep-alive interval"
    )
    parser.add_argument(
        "--ramp",
        type=_non_negative_float,
        metavar="S",
        help=f"spread connection starts over S seconds (default {DEFAULT_RAMP:g}, or duration/4 when shorter)",
    )
    parser.add_argument(
        "--duration", type=_positive_float, default=60.0, metavar="S", help="length of the run (default 60)"
    )
    parser.add_argument(
        "--merged-sum",
        metavar="MD5",
        help="the merged.mg md5 the agents report until the manager pushes another (default: a fixed one)",
    )
    parser.add_argument(
        "--steady-from",
        type=_non_negative_float,
        metavar="S",
        help="the steady_* figures (ack latency, rate) count from S seconds into the run (default: the ramp's "
        "end); with one process, SIGUSR1 starts them at once",
    )
    parser.add_argument(
        "--cipher", choices=("aes", "blowfish", "mix"), default="aes", help="mix: half AES, half Blowfish"
    )
    parser.add_argument(
        "--silent-share",
        type=_share,
        default=0.0,
        metavar="F",
        help="at --fail-at, this share of the agents stops sending and reading (socket left open)",
    )
    parser.add_argument(
        "--shutdown-share",
        type=_share,
        default=0.0,
        metavar="F",
        help="at --fail-at, this share of the agents sends '#!-agent shutdown' and closes",
    )
    parser.add_argument("--fail-at", type=_non_negative_float, metavar="S", help="seconds into the run")
    parser.add_argument("--protocol", choices=("tcp", "udp"), default="tcp")
    parser.add_argument("--json-out", type=Path, metavar="FILE", help="also write the summary to FILE")
    parser.add_argument(
        "--progress",
        choices=("auto", "always", "never"),
        default="auto",
        help="auto: rewritten line on a terminal, a line every 5 s otherwise; always: rewritten line",
    )
    parser.add_argument(
        "--precompute",
        action="store_true",
        help="seal each agent's keep-alive once per TCP connection and resend it (needs verify_msg_id off; "
        "ignored over UDP, where the manager takes each counter once)",
    )
    parser.add_argument(
        "--peak", action="store_true", help="closed loop: each agent sends its next keep-alive once acked"
    )
    parser.add_argument(
        "--batch-reads",
        action="store_true",
        help="read replies once per 10 ms tick instead of as they come: fewer wake-ups for large fleets, "
        "ack latencies overstated by up to 10 ms",
    )
    parser.add_argument(
        "--sources",
        type=_positive_int,
        metavar="K",
        help="source addresses 127.0.X.Y to spread connections over (default: one per 4,000 agents)",
    )
    timing = parser.add_argument_group(
        "agent timing", "as a Wazuh 4.x agent waits (its defaults); each wait is jittered by --jitter"
    )
    timing.add_argument(
        "--recv-timeout",
        type=_positive_float,
        default=60.0,
        metavar="S",
        help="wait for the startup's ack, agentd's recv_timeout (default 60; UDP: at most 3)",
    )
    timing.add_argument(
        "--retry-interval",
        type=_positive_float,
        default=10.0,
        metavar="S",
        help="wait after a failed connect or handshake, <server><retry_interval> (default 10)",
    )
    timing.add_argument(
        "--max-retries",
        type=_positive_int,
        default=5,
        metavar="N",
        help="failures in a row at --retry-interval, <server><max_retries>; then the wait doubles (default 5)",
    )
    timing.add_argument(
        "--retry-max",
        type=_positive_float,
        default=60.0,
        metavar="S",
        help="the longest wait between two attempts (default 60)",
    )
    timing.add_argument(
        "--connect-timeout",
        type=_positive_float,
        default=60.0,
        metavar="S",
        help="a connect not completed by then fails (default 60: the kernel retries the SYN meanwhile)",
    )
    timing.add_argument(
        "--time-reconnect",
        type=_positive_float,
        default=60.0,
        metavar="S",
        help="reconnect when the oldest keep-alive has had no ack this long, <client><time-reconnect> "
        "(default 60; at most --interval means 3 x --interval, as agentd does)",
    )
    timing.add_argument(
        "--jitter",
        type=_share,
        default=0.2,
        metavar="F",
        help="each wait is scaled by a random factor in [1-F, 1+F] (default 0.2)",
    )
    parser.add_argument(
        "--events-per-agent",
        type=_non_negative_float,
        default=0.0,
        metavar="R",
        help="agent events (log lines, FIM, inventory) each agent sends per second, besides keep-alives",
    )
    parser.add_argument(
        "--event-mix",
        default="syslog,fim,inventory",
        metavar="KINDS",
        help="comma-separated kinds of events, sent in turn: syslog (100-400 B), fim (~1 KB), "
        "inventory (1-8 KB)",
    )
    parser.set_defaults(handler=run_simulate)


def run_simulate(args: argparse.Namespace) -> int:
    """Run the fleet and print its summary. The exit status: 0 when every agent connected and was
    acknowledged with no error, 1 otherwise, 2 for a bad command line or a run that cannot start (keys
    file, open-file limit).

    `--keys` takes the file's first N active entries; `--create-keys` appends N new `sim-NNNNNN` entries,
    which a running manager loads within its keyupdate_interval (until then their startups are refused and
    retried with back-off).
    """
    from agentpulse.simulator.eventgen import parse_mix
    from agentpulse.simulator.keys import create_keys, load_keys
    from agentpulse.simulator.plan import (
        AgentTiming,
        CipherMode,
        SimulatorConfig,
        SimulatorError,
        Transport,
        default_processes,
        default_sources,
    )
    from agentpulse.simulator.report import Progress, exit_code
    from agentpulse.simulator.runner import run

    (host, port), *more_servers = args.manager
    ramp = args.ramp if args.ramp is not None else min(DEFAULT_RAMP, args.duration / 4)
    try:
        config = SimulatorConfig(
            host=host,
            port=port,
            more_servers=tuple(more_servers),
            spread=args.spread,
            agents=args.agents,
            protocol=Transport(args.protocol),
            interval=args.interval,
            ramp=ramp,
            duration=args.duration,
            steady_from=args.steady_from,
            merged_sum=args.merged_sum,
            cipher=CipherMode(args.cipher),
            silent_share=args.silent_share,
            shutdown_share=args.shutdown_share,
            fail_at=args.fail_at,
            precompute=args.precompute,
            peak=args.peak,
            batch_reads=args.batch_reads,
            processes=args.processes or default_processes(args.agents),
            sources=args.sources or default_sources(args.agents),
            timing=AgentTiming(
                recv_timeout=args.recv_timeout,
                retry_interval=args.retry_interval,
                max_retries=args.max_retries,
                retry_max=args.retry_max,
                connect_timeout=args.connect_timeout,
                time_reconnect=args.time_reconnect,
                jitter=min(args.jitter, 0.99),
            ),
            events_per_agent=args.events_per_agent,
            event_mix=parse_mix(args.event_mix),
        )
    except ValueError as error:
        return _fail(str(error))
    enrolled: dict[str, object] | None = None
    try:
        if args.enrol:
            keys, enrolled = _enrol(config, args)
        elif args.create_keys is not None:
            keys = create_keys(args.create_keys, args.agents)
        else:
            keys = load_keys(args.keys, args.agents)
        progress = Progress(args.progress, sys.stderr, args.agents)
        summary = run(config, keys, progress)
    except SimulatorError as error:
        return _fail(str(error))
    if enrolled is not None:
        summary["enrolment"] = enrolled
    text = json.dumps(summary, indent=2)
    print(text, flush=True)
    if args.json_out is not None:
        try:
            args.json_out.write_text(text + "\n")
        except OSError as error:
            print(f"{PROGRAM}: cannot write {args.json_out}: {error.strerror or error}", file=sys.stderr)
            return 1
    return exit_code(summary)


def _enrol(config: SimulatorConfig, args: argparse.Namespace) -> tuple[list[AgentKey], dict[str, object]]:
    import uvloop

    from agentpulse.simulator.enrol import EnrolmentReport, enrol_fleet
    from agentpulse.simulator.plan import raise_fd_limit, source_addresses

    raise_fd_limit(args.enrol_concurrency + 64)
    report = EnrolmentReport()
    print(f"{PROGRAM}: enrolling {config.agents} agents on {config.host}:{args.enrol_port}", file=sys.stderr)
    keys = uvloop.run(
        enrol_fleet(
            config.host,
            args.enrol_port,
            config.agents,
            source_addresses(config.sources),
            password=args.password,
            concurrency=args.enrol_concurrency,
            report=report,
        )
    )
    print(f"{PROGRAM}: {report.enrolled} agents enrolled in {report.seconds:.1f} s", file=sys.stderr)
    return keys, report.summary()


def _port(text: str) -> int:
    value = _positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"expected a port 1-65535, not {value}")
    return value


def _fail(message: str) -> int:
    print(f"{PROGRAM}: error: {message}", file=sys.stderr)
    return 2


def _manager_addresses(text: str) -> list[tuple[str, int]]:
    addresses = [_manager_address(item.strip()) for item in text.split(",") if item.strip()]
    if not addresses:
        raise argparse.ArgumentTypeError("expected HOST:PORT[,HOST:PORT...]")
    return addresses


def _manager_address(text: str) -> tuple[str, int]:
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, not {text!r}")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{host!r} is not an IP address") from None
    if address not in ipaddress.ip_network("127.0.0.0/8"):
        raise argparse.ArgumentTypeError(f"the manager must be on this machine (127.0.0.0/8), not {host}")
    return host, int(port_text)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, not {value}")
    return value


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, not {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number, not {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, not {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of at least 0, not {text}")
    return value


def _share(text: str) -> float:
    value = _number(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a share between 0 and 1, not {text}")
    return value

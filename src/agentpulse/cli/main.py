"""`agentpulse`: one command, one sub-command per job.

Each job lives in its own module of this package (`COMMAND_MODULES`) and exposes `register(subparsers)`;
heavy imports stay inside the handlers so `--help` is fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib import import_module

# modules of agentpulse.cli that define register(subparsers), in the order their commands are listed
COMMAND_MODULES = (
    "manager",
    "status",
    "keys",
    "agent",
    "enrol",
    "simulate",
    "decode",
    "wdb",
    "group",
    "db",
    "watch",
    "cluster",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentpulse",
        description="Agent connection and keep-alive manager, wire-compatible with Wazuh 4.x agents.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        module = import_module(f"agentpulse.cli.{module_name}")
        register: Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None] = module.register
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())

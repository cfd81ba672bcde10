"""`agentpulse agent`: run a Wazuh 4.x compatible agent (connection and keep-alives) in the foreground.

Exit codes: 0 after SIGTERM or SIGINT (the manager was told `#!-agent shutdown `), 1 when the home cannot
run an agent (ossec.conf without `<client>`, several active keys in client.keys, no key while
`<enrollment>` is off, ...). Without a key the agent enrols first (`<client><enrollment>`, on by default).
"""

from __future__ import annotations

import argparse
import logging

from agentpulse import logs
from agentpulse.cli.home import add_home_option, resolve_home

LOG_LEVELS = ("debug", "info", "warning", "error")
PROCESS_NAME = "agentpulse-agentd"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    agent = subparsers.add_parser(
        "agent", help="run an agent in the foreground (etc/ossec.conf <client>, etc/client.keys)"
    )
    add_home_option(
        agent, required=True, help="agent home: etc/ossec.conf with <client>, etc/client.keys with one key"
    )
    agent.add_argument("--log-level", choices=LOG_LEVELS, default="info")
    agent.set_defaults(handler=run_agent)


def run_agent(args: argparse.Namespace) -> int:
    from agentpulse.agent.daemon import AgentDaemon
    from agentpulse.agent.home import AgentSetupError, load_agent_setup

    home = resolve_home(args)
    logs.setup(args.log_level, home.log_file, process_name=PROCESS_NAME)
    log = logging.getLogger("agentpulse")
    try:
        config, key = load_agent_setup(home)
    except AgentSetupError as error:
        log.error("Cannot start the agent: %s", error)
        return 1
    try:
        daemon = AgentDaemon(home, config, key)
    except OSError as error:
        log.error("Cannot start the agent: %s", error)
        return 1

    import uvloop

    try:
        uvloop.run(daemon.main())
    except OSError as error:
        log.error("Agent stopped: %s", error)
        return 1
    except KeyboardInterrupt:
        pass
    return 0

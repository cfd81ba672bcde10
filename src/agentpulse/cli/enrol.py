"""`agentpulse enrol`: Wazuh's agent-auth. Ask a manager for a key on port 1515 and write it as the agent
home's client.keys (one line, 0640), the way an agent does (reference 14.6).

The request is an unchanged Wazuh agent's: `K:` when the home already has a key, the password from
`--password`, else the home's `etc/authd.pass`. Exit codes: 0 with a key written, 1 when the manager
refused (its `ERROR:` text is printed, `(from manager)`) or could not be reached, 2 for a bad command line.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import ssl
import sys
from typing import Final

from agentpulse.cli.home import add_home_option, resolve_home

PROG: Final = "agentpulse enrol"
AGENT_HOME_HELP: Final = "agent home whose etc/client.keys gets the key (never a manager's: it is replaced)"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "enrol",
        help="register an agent with a manager on port 1515 (as Wazuh's agent-auth)",
        description="Ask a manager for an agent key over TLS (port 1515) and write etc/client.keys.",
    )
    parser.add_argument("-m", "--manager", required=True, metavar="HOST", help="the manager's address")
    parser.add_argument("-p", "--port", type=int, default=1515, help="enrolment port (default 1515)")
    parser.add_argument("-A", "--name", help="agent name (default: the host name)")
    parser.add_argument("-G", "--groups", help="groups, comma separated (they must exist on the manager)")
    parser.add_argument("-P", "--password", help="enrolment password (default: the home's etc/authd.pass)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("-I", "--ip", help="register this address instead of any")
    where.add_argument("-i", "--src", action="store_true", help="register the address the request comes from")
    parser.add_argument("-v", "--ca", metavar="FILE", help="verify the manager's certificate with this CA")
    parser.add_argument("-x", "--cert", metavar="FILE", help="the agent's certificate (with --key)")
    parser.add_argument("-k", "--key", metavar="FILE", help="the agent's private key (with --cert)")
    parser.add_argument("-c", "--ciphers", help="TLS 1.2 ciphers (default Wazuh's)")
    parser.add_argument("-a", "--auto-method", action="store_true", help="allow TLS below 1.2")
    add_home_option(parser, required=True, help=AGENT_HOME_HELP)
    parser.set_defaults(handler=run_enrol)


def run_enrol(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from agentpulse import logs
    from agentpulse.agent import enrol
    from agentpulse.agent.config import EnrollmentConfig
    from agentpulse.keysfile import read_keys_file

    if (args.cert is None) != (args.key is None):
        print(f"{PROG}: error: --cert and --key go together", file=sys.stderr)
        return 2
    home = resolve_home(args)
    logs.setup("info", None, process_name="agent-auth")
    log = logging.getLogger("agentpulse")
    config = EnrollmentConfig(
        manager_address=args.manager,
        port=args.port,
        agent_name=args.name,
        groups=args.groups,
        agent_address=args.ip,
        use_source_ip=args.src,
        server_ca_path=args.ca,
        agent_certificate_path=args.cert,
        agent_key_path=args.key,
        auto_method=args.auto_method,
    )
    if args.ciphers:
        config = replace(config, ssl_cipher=args.ciphers)
    existing = next(iter(read_keys_file(home.client_keys, missing_ok=True).active()), None)
    password = args.password
    if password is None:
        password = enrol.read_password(enrol.resolve(home.root, config.authorization_pass_path))
    try:
        context = enrol.client_context(config, home.root)
    except (OSError, ssl.SSLError) as error:
        log.error("Cannot use the TLS settings: %s", error)
        return 1
    request = enrol.build_request(config, enrol.agent_name(config), password=password, existing=existing)
    log.info("Requesting a key from server: %s:%d", args.manager, args.port)
    try:
        key = asyncio.run(enrol.request_key(args.manager, args.port, request, context))
    except enrol.EnrolmentError as error:
        log.error("%s (from manager)", error.response)
        return 1
    except (OSError, ssl.SSLError, TimeoutError) as error:
        log.error("Unable to enrol at %s:%d: %s", args.manager, args.port, str(error) or "timed out")
        return 1
    try:
        enrol.save_key(home.client_keys, key)
    except OSError as error:
        log.error("Cannot write %s: %s", home.client_keys, error.strerror or error)
        return 1
    log.info("Valid key received: agent %s (%s), written to %s", key.id, key.name, home.client_keys)
    return 0

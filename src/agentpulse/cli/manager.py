"""`agentpulse init` and `agentpulse start`: lay out a manager home, then run the manager in the foreground.

`init` and `start` create what is missing and never overwrite; `agentpulse worker` (unlisted) is one remoted
worker process, started by the manager itself.
"""

from __future__ import annotations

import argparse
import logging

from agentpulse import filemodes, logs
from agentpulse.cli.home import add_home_option, resolve_home
from agentpulse.config import ConfigError, default_config_text, load_config
from agentpulse.paths import Home
from agentpulse.store.backend import StoreError

LOG_LEVELS = ("debug", "info", "warning", "error")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    init = subparsers.add_parser(
        "init", help="create a manager home (etc/ossec.conf, etc/client.keys, queue/)"
    )
    add_home_option(init)
    init.set_defaults(handler=run_init)
    start = subparsers.add_parser("start", help="run the manager in the foreground")
    add_home_option(start)
    start.add_argument("--log-level", choices=LOG_LEVELS, default="info")
    start.set_defaults(handler=run_start)
    worker = subparsers.add_parser("worker")  # no help: unlisted, it is started by the manager, not by people
    add_home_option(worker, required=True)
    worker.add_argument("--index", type=int, required=True)
    worker.add_argument("--fd", type=int, required=True)
    worker.add_argument("--manager-pid", type=int, required=True)
    worker.add_argument("--log-level", choices=LOG_LEVELS, default="info")
    worker.set_defaults(handler=run_worker_command)


def init_home(home: Home) -> list[str]:
    """Create what is missing; never overwrite. Returns what was created, for the user."""
    created = []
    home.create_layout()
    if not home.ossec_conf.exists():
        home.ossec_conf.write_text(default_config_text())
        created.append(str(home.ossec_conf))
    if not home.client_keys.exists():
        home.client_keys.touch(mode=0o640)
        created.append(str(home.client_keys))
    return created


def run_init(args: argparse.Namespace) -> int:
    filemodes.set_manager_umask()
    home = resolve_home(args, creating=True)
    created = init_home(home)
    for path in created:
        print(f"created {path}")
    print(f"manager home ready: {home.root}")
    return 0


def run_start(args: argparse.Namespace) -> int:
    from agentpulse.manager import AlreadyRunning, Manager
    from agentpulse.remoted.worker_pool import WorkerStartError

    # Before anything is created (the log, global.db, client.keys): nothing of the home is for others.
    filemodes.set_manager_umask()
    home = resolve_home(args, creating=True)
    created = init_home(home)
    logs.setup(args.log_level, home.log_file)
    log = logging.getLogger("agentpulse")
    for path in created:
        log.info("Created %s", path)
    try:
        config = load_config(home.ossec_conf)
    except ConfigError as error:
        log.error("Configuration error: %s", error)
        return 1
    log.info(
        "agentpulse manager starting: home %s, port %d/%s",
        home.root,
        config.remote.port,
        ",".join(config.remote.protocols),
    )
    try:
        import uvloop

        uvloop.run(Manager(home, config, args.log_level).run())
    except AlreadyRunning as error:
        log.error("%s", error)
        return 1
    except WorkerStartError as error:
        log.error("Cannot start: %s", error)
        return 1
    except (OSError, StoreError) as error:
        log.error("Cannot start: %s", error)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def run_worker_command(args: argparse.Namespace) -> int:
    from agentpulse.remoted.worker_process import die_with_parent, run_worker

    die_with_parent(args.manager_pid)  # first: the manager may die while this worker reads its config
    home = resolve_home(args)
    logs.setup(args.log_level, home.log_file, process_name=f"agentpulse-remoted[{args.index}]")
    try:
        config = load_config(home.ossec_conf)
    except ConfigError as error:
        logging.getLogger("agentpulse").error("Configuration error: %s", error)
        return 1
    return run_worker(home, config, args.index, args.fd)

"""`agentpulse api-user`: add, remove and list the users of the HTTP API (the users file of `<api>`).

The password comes from `--password-stdin` (one line), else a prompt, else (`--generate`) a random one
printed once. The running manager reads the file again on its next request: a removed user's tokens stop
working at once. Names print via `for_terminal`.
"""

from __future__ import annotations

import argparse
import getpass
import secrets
import sys
from pathlib import Path

from agentpulse.cli.home import add_home_option, resolve_home
from agentpulse.escape import for_terminal


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("api-user", help="add, remove or list the users of the HTTP API")
    add_home_option(parser)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="add a user, or set the password and role of one")
    add.add_argument("name")
    add.add_argument("--role", choices=("read", "admin"), default="read", help="read (GET only) or admin")
    source = add.add_mutually_exclusive_group()
    source.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    source.add_argument("--generate", action="store_true", help="make a random password and print it")
    remove = actions.add_parser("remove", help="remove a user (their tokens stop working)")
    remove.add_argument("name")
    actions.add_parser("list", help="list the users and their roles")
    parser.set_defaults(handler=run)


def users_path(args: argparse.Namespace) -> Path:
    from agentpulse.config import ApiConfig, ConfigError, load_config

    home = resolve_home(args)
    api = ApiConfig()
    if home.ossec_conf.exists():
        try:
            api = load_config(home.ossec_conf).api or api
        except ConfigError as error:
            raise SystemExit(f"agentpulse api-user: {error}") from None
    path = Path(api.users_file)
    return path if path.is_absolute() else home.root / path


def _password(args: argparse.Namespace) -> tuple[str, bool]:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n"), False
    if args.generate or not sys.stdin.isatty():
        return secrets.token_urlsafe(18), True
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Again: "):
        raise SystemExit("agentpulse api-user: the passwords differ")
    return first, False


def run(args: argparse.Namespace) -> int:
    from agentpulse.api.users import (
        USER_NAME,
        Role,
        User,
        UsersFileError,
        hash_password,
        read_users,
        write_users,
    )

    path = users_path(args)
    try:
        users = read_users(path)
    except UsersFileError as error:
        print(f"agentpulse api-user: {path}: {error}", file=sys.stderr)
        return 1
    if args.action == "list":
        for user in users.values():
            print(f"{for_terminal(user.name)}\t{user.role.value}")
        return 0
    name = args.name
    if not USER_NAME.match(name):
        print("agentpulse api-user: a name is 1 to 64 of A-Z a-z 0-9 _ . -", file=sys.stderr)
        return 1
    if args.action == "remove":
        if users.pop(name, None) is None:
            print(f"agentpulse api-user: no user {name}", file=sys.stderr)
            return 1
        write_users(path, users)
        print(f"User {name} removed.")
        return 0
    password, generated = _password(args)
    if len(password) < 8:
        print("agentpulse api-user: the password needs at least 8 characters", file=sys.stderr)
        return 1
    users[name] = User(name, Role(args.role), hash_password(password))
    write_users(path, users)
    print(f"User {name} ({args.role}) saved in {path}.")
    if generated:
        print(f"Password: {password}")
    return 0

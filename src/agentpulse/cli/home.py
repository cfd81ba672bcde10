"""The `--home` option every command line shares: one definition, one help text, one resolution order.

`--home DIR`, else `$AGENTPULSE_HOME`, else ./var/ossec when it exists, else /var/ossec (see
`paths.resolve_home`); `init` and `start`, which lay the home out, take ./var/ossec even before it exists.
The danger is a command putting its default in front of `$AGENTPULSE_HOME`: `init` and `start` once did
(`args.home or "var/ossec"`), and so ignored it.
"""

from __future__ import annotations

import argparse
import os
from typing import Final, Protocol

from agentpulse import paths
from agentpulse.paths import Home

__all__ = ["HOME_HELP", "HOME_METAVAR", "add_home_option", "resolve_home"]

HOME_METAVAR: Final = "DIR"
HOME_HELP: Final = f"manager home (default: ${paths.HOME_ENV}, ./var/ossec, /var/ossec)"


class _HasHome(Protocol):
    """What `resolve_home` reads: parsed arguments (argparse, or agent_control's getopt options)."""

    @property
    def home(self) -> str | None: ...


def add_home_option(
    parser: argparse.ArgumentParser, *, required: bool = False, help: str = HOME_HELP
) -> None:
    """Add `--home DIR`. `required` and `help` are for the commands whose home is not a manager's default."""
    parser.add_argument("--home", metavar=HOME_METAVAR, required=required, help=help)


def resolve_home(args: argparse.Namespace | _HasHome, *, creating: bool = False) -> Home:
    """The home the arguments name: `--home`, else `$AGENTPULSE_HOME`, else the default.

    `creating`: the command lays the home out, so the default is ./var/ossec whether or not it exists yet
    (relative to the working directory, which makes it /var/ossec for a service started in `/`).
    """
    home: str | None = args.home
    if creating and not home and not os.environ.get(paths.HOME_ENV):
        return Home(paths.DEV_HOME.resolve())
    return paths.resolve_home(home)

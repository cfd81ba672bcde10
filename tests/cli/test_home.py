"""`--home` on every command line: `--home DIR`, else `$AGENTPULSE_HOME`, else the default, one help text."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentpulse.cli import agent_control, manage_agents
from agentpulse.cli.home import HOME_HELP
from agentpulse.cli.main import build_parser, main
from agentpulse.paths import HOME_ENV

BAD_PORT_CONF = (
    "<ossec_config><remote><connection>secure</connection><port>{}</port></remote></ossec_config>\n"
)


def _home_with_bad_port(root: Path, port: str) -> Path:
    """A home whose ossec.conf is refused at once, naming `port`: `start` exits 1 before it listens."""
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "ossec.conf").write_text(BAD_PORT_CONF.format(port))
    return root


def _start(cwd: Path, env_home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentpulse", "start", *args],
        cwd=cwd,
        env=dict(os.environ, **{HOME_ENV: str(env_home)}),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_init_honours_agentpulse_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env_home = tmp_path / "from-env"
    monkeypatch.setenv(HOME_ENV, str(env_home))
    monkeypatch.chdir(tmp_path)
    assert main(["init"]) == 0
    assert (env_home / "etc" / "ossec.conf").is_file()
    assert (env_home / "etc" / "client.keys").is_file()
    assert not (tmp_path / "var").exists()
    assert f"manager home ready: {env_home.resolve()}" in capsys.readouterr().out


def test_init_home_option_wins_over_agentpulse_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "from-env"))
    monkeypatch.chdir(tmp_path)
    assert main(["init", "--home", str(tmp_path / "explicit")]) == 0
    assert (tmp_path / "explicit" / "etc" / "ossec.conf").is_file()
    assert not (tmp_path / "from-env").exists()


def test_init_without_home_or_environment_creates_var_ossec(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(HOME_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["init"]) == 0
    assert (tmp_path / "var" / "ossec" / "etc" / "ossec.conf").is_file()


def test_start_honours_agentpulse_home(tmp_path: Path) -> None:
    # Both homes hold a configuration that is refused, so whichever is used, `start` stops at once.
    env_home = _home_with_bad_port(tmp_path / "from-env", "from-env")
    _home_with_bad_port(tmp_path / "var" / "ossec", "from-cwd")
    result = _start(tmp_path, env_home)
    assert result.returncode == 1, result.stderr
    assert "'from-env'" in result.stderr
    assert "'from-cwd'" not in result.stderr
    assert "'from-env'" in (env_home / "logs" / "ossec.log").read_text()


def test_start_home_option_wins_over_agentpulse_home(tmp_path: Path) -> None:
    env_home = _home_with_bad_port(tmp_path / "from-env", "from-env")
    explicit = _home_with_bad_port(tmp_path / "explicit", "explicit")
    result = _start(tmp_path, env_home, "--home", str(explicit))
    assert result.returncode == 1, result.stderr
    assert "'explicit'" in result.stderr
    assert "'from-env'" not in result.stderr


def _home_option(parser: argparse.ArgumentParser) -> argparse.Action | None:
    return next((action for action in parser._actions if "--home" in action.option_strings), None)


def _home_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Subcommand name -> its --home option."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, subparser in action.choices.items():
                home = _home_option(subparser)
                if home is not None:
                    found[name] = home
    return found


def test_every_manager_command_has_the_same_home_option() -> None:
    actions = _home_actions(build_parser())
    assert set(actions) == {
        "init",
        "start",
        "worker",
        "status",
        "agent",
        "enrol",
        "decode",
        "wdb",
        "group",
        "db",
        "cluster",
        "watch",
        "api-user",
    }
    for name, action in actions.items():
        assert action.metavar == "DIR", name
        if name in (
            "agent",
            "enrol",
            "worker",
        ):  # agents' homes and the manager's own child: given explicitly
            assert action.required, name
        else:
            assert (action.help, action.required) == (HOME_HELP, False), name
    manage = _home_option(manage_agents.build_parser())
    assert manage is not None
    assert (manage.metavar, manage.help, manage.required) == ("DIR", HOME_HELP, False)


def test_agent_control_help_shows_the_same_home_text() -> None:
    assert f"\t--home <dir>      Manager home (default: ${HOME_ENV}, ./var/ossec, /var/ossec).\n" in (
        agent_control.HELP
    )
    assert HOME_HELP[1:] in agent_control.HELP

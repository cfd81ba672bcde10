"""`agentpulse api-user`: add (stdin, generated), list, remove, and what it refuses."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from agentpulse.api.users import Role, read_users, verify_password
from agentpulse.cli.main import main


def run(monkeypatch: pytest.MonkeyPatch, home: Path, *args: str, stdin: str = "") -> int:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    return main(["api-user", "--home", str(home), *args])


def test_add_list_remove(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        run(
            monkeypatch,
            tmp_path,
            "add",
            "alice",
            "--role",
            "admin",
            "--password-stdin",
            stdin="long enough\n",
        )
        == 0
    )
    assert run(monkeypatch, tmp_path, "add", "bob", "--generate") == 0
    generated = capsys.readouterr().out.split("Password: ")[1].strip()
    users = read_users(tmp_path / "etc" / "api" / "users")
    assert users["alice"].role is Role.ADMIN and verify_password("long enough", users["alice"].password_hash)
    assert users["bob"].role is Role.READ and verify_password(generated, users["bob"].password_hash)
    assert (tmp_path / "etc" / "api" / "users").stat().st_mode & 0o077 == 0
    assert run(monkeypatch, tmp_path, "list") == 0
    assert capsys.readouterr().out == "alice\tadmin\nbob\tread\n"
    assert run(monkeypatch, tmp_path, "remove", "bob") == 0
    assert set(read_users(tmp_path / "etc" / "api" / "users")) == {"alice"}
    assert run(monkeypatch, tmp_path, "remove", "bob") == 1


def test_refusals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert run(monkeypatch, tmp_path, "add", "x", "--password-stdin", stdin="short\n") == 1
    assert run(monkeypatch, tmp_path, "add", "bad:name", "--password-stdin", stdin="long enough\n") == 1
    assert not (tmp_path / "etc" / "api" / "users").exists()

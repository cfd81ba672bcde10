"""A client for the manager's HTTP API in tests: log in, call, read an event stream (stdlib only)."""

from __future__ import annotations

import base64
import http.client
import json
import ssl
from dataclasses import dataclass
from typing import Any

from agentpulse.api.users import Role, User, hash_password, read_users, write_users
from tests.e2e.harness import LOOPBACK, ManagerProcess, run_cli

ADMIN = ("admin", "admin-password")
READER = ("reader", "reader-password")


def add_user(manager: ManagerProcess, name: str, password: str, role: str) -> None:
    """What `agentpulse api-user add` writes (tests/cli/test_api_user.py runs the command itself)."""
    path = manager.home.root / "etc" / "api" / "users"
    users = read_users(path)
    users[name] = User(name, Role(role), hash_password(password))
    write_users(path, users)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Api:
    def __init__(self, manager: ManagerProcess, *, context: ssl.SSLContext | None = None) -> None:
        self.port = manager.api_port
        self.context = context
        self.token: str | None = None

    def connection(self) -> http.client.HTTPConnection:
        if self.context is not None:
            return http.client.HTTPSConnection(LOOPBACK, self.port, timeout=30, context=self.context)
        return http.client.HTTPConnection(LOOPBACK, self.port, timeout=30)

    def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> Reply:
        sent = dict(headers or {})
        bearer = token if token is not None else self.token
        if bearer:
            sent.setdefault("Authorization", f"Bearer {bearer}")
        connection = self.connection()
        try:
            connection.request(method, path, body=body, headers=sent)
            response = connection.getresponse()
            return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
        finally:
            connection.close()

    def login(self, user: tuple[str, str]) -> str:
        basic = base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()
        reply = self.call(
            "POST", "/security/user/authenticate", token="", headers={"Authorization": f"Basic {basic}"}
        )
        assert reply.status == 200, reply.body
        token: str = reply.json()["data"]["token"]
        return token

    def get(self, path: str) -> Any:
        reply = self.call("GET", path)
        assert reply.status == 200, (path, reply.status, reply.body)
        return reply.json()


def agent_control_statuses(manager: ManagerProcess) -> dict[str, str]:
    listing = run_cli("agent_control", "-l", "-j", home=manager.root)
    assert listing.returncode == 0, listing.stderr
    return {item["id"]: item["status"] for item in json.loads(listing.stdout)["data"]}

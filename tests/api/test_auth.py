"""Tokens and users: HS256 round trip, tampering and expiry, scrypt hashes, the login limit."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentpulse.api import tokens
from agentpulse.api.errors import ApiError
from agentpulse.api.login import LoginGuard
from agentpulse.api.users import Role, User, UserBook, hash_password, verify_password, write_users

KEY = b"k" * 32


def test_a_token_verifies_until_it_expires_and_not_once_changed() -> None:
    token = tokens.issue(KEY, "alice", "admin", "stamp", 1000, 900)
    claims = tokens.verify(KEY, token, 1500)
    assert (claims.user, claims.role, claims.stamp, claims.expires) == ("alice", "admin", "stamp", 1900)
    with pytest.raises(tokens.TokenError, match="Token expired"):
        tokens.verify(KEY, token, 1900)
    with pytest.raises(tokens.TokenError, match="Invalid token"):
        tokens.verify(b"other" * 8, token, 1500)
    head, body, signature = token.split(".")
    with pytest.raises(tokens.TokenError):
        tokens.verify(KEY, f"{head}.{body}x.{signature}", 1500)
    with pytest.raises(tokens.TokenError):
        tokens.verify(KEY, "a.b", 1500)


def test_scrypt_hash_and_the_users_file(tmp_path: Path) -> None:
    stored = hash_password("correct horse")
    assert stored.startswith("scrypt$16384$8$1$")
    assert verify_password("correct horse", stored) and not verify_password("wrong", stored)
    assert not verify_password("x", "md5$abc")
    path = tmp_path / "users"
    write_users(path, {"alice": User("alice", Role.ADMIN, stored)})
    assert path.stat().st_mode & 0o777 == 0o600
    book = UserBook(path)
    user = book.get("alice")
    assert user is not None and user.role is Role.ADMIN
    stamp = user.stamp
    write_users(path, {"alice": User("alice", Role.READ, stored)})
    changed = book.get("alice")
    assert changed is not None and changed.stamp != stamp  # a role change revokes the old tokens


def test_the_login_guard_blocks_an_address_after_its_failures_until_they_age_out() -> None:
    guard = LoginGuard(attempts=2, block_time=60)
    guard.failed("10.0.0.1", 0)
    guard.check("10.0.0.1", 1)
    guard.failed("10.0.0.1", 1)
    with pytest.raises(ApiError) as caught:
        guard.check("10.0.0.1", 2)
    assert caught.value.status == 403 and caught.value.code == 6000
    guard.check("10.0.0.2", 2)  # another address is not affected
    guard.check("10.0.0.1", 61.5)  # both failures are older than block_time

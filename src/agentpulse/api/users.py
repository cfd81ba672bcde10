"""API users: the users file (one `name:role:scrypt$...` line each), password hashes, the two roles.

The file is the only place a password lives, as an scrypt hash (hashlib, N=2^14, r=8, p=1, 16-byte salt);
it is written atomically, 0600. The manager reads it again when it changes, so `agentpulse api-user`
takes effect at once, and a removed user's tokens stop working with it (`UserBook.stamp`).
The danger: hashing costs ~50 ms of CPU, so callers hash in a thread and limit failed logins.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

SCRYPT_N: Final = 2**14
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1
SALT_BYTES: Final = 16
USERS_MODE: Final = 0o600
USER_NAME: Final = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


class Role(enum.StrEnum):
    READ = "read"  # GET only
    ADMIN = "admin"  # everything


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: Role
    password_hash: str

    def line(self) -> str:
        return f"{self.name}:{self.role.value}:{self.password_hash}"

    @property
    def stamp(self) -> str:
        """Changes with the user's password and role: a token carries it, so a change revokes it."""
        return hashlib.sha256(self.line().encode()).hexdigest()[:16]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


class UsersFileError(Exception):
    pass


def parse_users(text: str) -> dict[str, User]:
    users: dict[str, User] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, _, rest = line.partition(":")
        role, _, password_hash = rest.partition(":")
        if not USER_NAME.match(name) or role not in Role.__members__.values() or not password_hash:
            raise UsersFileError(f"line {number}: expected name:role:hash")
        users[name] = User(name, Role(role), password_hash)
    return users


def render_users(users: dict[str, User]) -> str:
    header = "# agentpulse API users: name:role:scrypt hash. Edit with `agentpulse api-user`.\n"
    return header + "".join(user.line() + "\n" for user in users.values())


def read_users(path: Path) -> dict[str, User]:
    try:
        return parse_users(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}


def write_users(path: Path, users: dict[str, User]) -> None:
    """Replace the file atomically, 0600 from the start."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), USERS_MODE)
            handle.write(render_users(users))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


class UserBook:
    """The users file as the running API sees it: read again whenever its signature changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._signature: tuple[int, int, int] | None = None
        self._users: dict[str, User] = {}

    def users(self) -> dict[str, User]:
        """Blocking (a stat, and a read after a change); cheap enough for the loop (one stat)."""
        try:
            stat = self.path.stat()
            signature = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            self._signature, self._users = None, {}
            return self._users
        if signature != self._signature:
            try:
                self._users = read_users(self.path)
            except (UsersFileError, OSError, UnicodeDecodeError):
                self._users = {}  # a broken file lets nobody in (the CLI refuses to write one)
            self._signature = signature
        return self._users

    def get(self, name: str) -> User | None:
        return self.users().get(name)

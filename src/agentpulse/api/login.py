"""Logging in: HTTP Basic credentials for a token, and the limit on failed attempts per source address.

Wazuh blocks an address after 50 failed logins in 300 s (`api.yaml` `access`); so do we, with the numbers
of `<api>`. The table of addresses is bounded: past MAX_ADDRESSES the oldest entry goes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from collections import OrderedDict, deque
from typing import Final

from agentpulse.api import tokens
from agentpulse.api.errors import ApiError, unauthorized
from agentpulse.api.users import UserBook, verify_password

MAX_ADDRESSES: Final = 10000
BLOCKED_DETAIL: Final = (
    "Limit of login attempts reached. The current IP has been blocked due to a high number of login attempts"
)


class LoginGuard:
    def __init__(self, attempts: int, block_time: float) -> None:
        self.attempts = attempts
        self.block_time = block_time
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self.refused = 0

    def check(self, address: str, now: float) -> None:
        failures = self._failures.get(address)
        if failures is None:
            return
        while failures and failures[0] <= now - self.block_time:
            failures.popleft()
        if len(failures) >= self.attempts:
            self.refused += 1
            raise ApiError(403, "Permission Denied", BLOCKED_DETAIL, 6000)

    def failed(self, address: str, now: float) -> None:
        failures = self._failures.setdefault(address, deque(maxlen=self.attempts))
        failures.append(now)
        self._failures.move_to_end(address)
        while len(self._failures) > MAX_ADDRESSES:
            self._failures.popitem(last=False)


def basic_credentials(header: str | None) -> tuple[str, str]:
    if not header or not header.lower().startswith("basic "):
        raise unauthorized("Invalid credentials")
    try:
        text = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise unauthorized("Invalid credentials") from None
    name, sep, password = text.partition(":")
    if not sep:
        raise unauthorized("Invalid credentials")
    return name, password


async def authenticate(
    users: UserBook, guard: LoginGuard, key: bytes, lifetime: int, header: str | None, address: str
) -> str:
    """A token for good credentials; 401 for bad ones (counted), 403 code 6000 once blocked."""
    now = time.time()
    guard.check(address, now)
    try:
        name, password = basic_credentials(header)
    except ApiError:
        guard.failed(address, now)
        raise
    user = users.get(name)
    # hash even for an unknown user: the time taken says nothing about who exists
    stored = user.password_hash if user is not None else _DUMMY
    good = await asyncio.to_thread(verify_password, password, stored)
    if user is None or not good:
        guard.failed(address, now)
        raise unauthorized("Invalid credentials")
    return tokens.issue(key, user.name, user.role.value, user.stamp, int(now), lifetime)


_DUMMY: Final = "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="

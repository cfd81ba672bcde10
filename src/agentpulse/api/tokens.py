"""JWT bearer tokens: HS256 with the standard library, claims shaped like Wazuh's (reference section 16.1).

The secret is `etc/api/jwt.key` (32 random bytes, 0600, made on first start); deleting it and restarting
revokes every token. Each token also carries the user's stamp (`User.stamp`), checked at every request,
so removing a user or changing their password or role revokes their tokens at once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

ISSUER: Final = "wazuh"
AUDIENCE: Final = "Wazuh API REST"
KEY_BYTES: Final = 32
KEY_MODE: Final = 0o600
HEADER: Final = {"alg": "HS256", "typ": "JWT"}


class TokenError(Exception):
    """Why a token is refused: the `detail` of Wazuh's 401 (`Invalid token`, `Token expired`)."""


@dataclass(frozen=True, slots=True)
class Claims:
    user: str
    role: str
    stamp: str
    expires: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def load_key(path: Path) -> bytes:
    """The signing key, made (0600) when missing. Blocking."""
    try:
        data = path.read_bytes()
        if len(data) >= KEY_BYTES:
            return data
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(KEY_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, KEY_MODE)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), KEY_MODE)
        handle.write(key)
    return key


def issue(key: bytes, user: str, role: str, stamp: str, now: int, lifetime: int) -> str:
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "nbf": now,
        "exp": now + lifetime,
        "sub": user,
        "run_as": False,
        "rbac_roles": [role],
        "rbac_mode": "white",
        "ap_stamp": stamp,
    }
    signing = _b64(json.dumps(HEADER).encode()) + "." + _b64(json.dumps(claims).encode())
    signature = hmac.new(key, signing.encode(), hashlib.sha256).digest()
    return signing + "." + _b64(signature)


def verify(key: bytes, token: str, now: float) -> Claims:
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("Invalid token")
    signing = f"{parts[0]}.{parts[1]}".encode()
    try:
        signature = _unb64(parts[2])
        header: Any = json.loads(_unb64(parts[0]))
        claims: Any = json.loads(_unb64(parts[1]))
    except (ValueError, UnicodeDecodeError):
        raise TokenError("Invalid token") from None
    expected = hmac.new(key, signing, hashlib.sha256).digest()
    if not hmac.compare_digest(signature, expected) or header != HEADER or not isinstance(claims, dict):
        raise TokenError("Invalid token")
    try:
        exp, nbf = int(claims["exp"]), int(claims["nbf"])
        user, roles, stamp = str(claims["sub"]), claims["rbac_roles"], str(claims["ap_stamp"])
    except (KeyError, TypeError, ValueError):
        raise TokenError("Invalid token") from None
    if (
        claims.get("iss") != ISSUER
        or claims.get("aud") != AUDIENCE
        or not isinstance(roles, list)
        or not roles
    ):
        raise TokenError("Invalid token")
    if now >= exp:
        raise TokenError("Token expired")
    if now < nbf - 5:  # a little clock skew between issue and use
        raise TokenError("Invalid token")
    return Claims(user, str(roles[0]), stamp, exp)

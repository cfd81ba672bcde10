"""Value converters for `ossec.conf` options: an element's text in, a value out, or `Invalid`.

`Invalid.expected` says what the option takes ("expected an integer 1-65535"); the section reader adds
the file, line, element path and the refused value. Wazuh's time syntax (`30`, `15m`, `2h`, `1d`, `1w`)
is `parse_time`, which is also public for the command line's own time arguments.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import urlsplit

__all__ = [
    "TIME_HINT",
    "Convert",
    "Invalid",
    "auto_or_integer",
    "backend",
    "boolean",
    "choice",
    "host",
    "integer",
    "ip_address",
    "keepalive_events",
    "nats_name",
    "nats_urls",
    "node_name",
    "nonempty",
    "number",
    "parse_time",
    "postgres_dsn",
    "protocols",
    "subject_prefix",
    "time",
    "workers",
]

Convert = Callable[[str], Any]

_TIME_RE: Final = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhdw]?)")
_TIME_UNITS: Final = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
TIME_HINT: Final = "seconds, or a number followed by s, m, h, d or w"

_INTEGER_RE: Final = re.compile(r"[0-9]{1,18}")
_NUMBER_RE: Final = re.compile(r"[0-9]{1,18}(?:\.[0-9]{1,18})?")
_SUBJECT_PREFIX_RE: Final = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
_NAME_RE: Final = re.compile(r"[A-Za-z0-9_-]+")
_NATS_SCHEMES: Final = frozenset({"nats", "tls", "ws", "wss"})


class Invalid(Exception):
    """A value a converter refuses; `expected` says what it takes."""

    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


def parse_time(text: str) -> float:
    """Seconds from a Wazuh time value: `30`, `30s`, `15m`, `2h`, `1d`, `1w` (decimals allowed)."""
    match = _TIME_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"invalid time {text[:40]!r}: expected {TIME_HINT}")
    seconds = float(match.group(1)) * _TIME_UNITS[match.group(2)]
    if not math.isfinite(seconds):
        raise ValueError(f"invalid time {text[:40]!r}: too large")
    return seconds


def boolean(value: str) -> bool:
    if value == "yes":
        return True
    if value == "no":
        return False
    raise Invalid("expected yes or no")


def integer(low: int, high: int | None = None) -> Callable[[str], int]:
    expected = f"expected an integer {low}-{high}" if high is not None else f"expected an integer >= {low}"

    def convert(value: str) -> int:
        if _INTEGER_RE.fullmatch(value) is None:
            raise Invalid(expected)
        number = int(value)
        if number < low or (high is not None and number > high):
            raise Invalid(expected)
        return number

    return convert


def workers(value: str) -> int:
    """`auto` (one remoted process per core) or 1-64."""
    if value.strip().lower() == "auto":
        return 0
    try:
        return integer(1, 64)(value)
    except Invalid:
        raise Invalid("expected auto or an integer 1-64") from None


def auto_or_integer(low: int) -> Callable[[str], int]:
    """`auto` (0: the program decides) or an integer of at least `low`."""
    exact = integer(low)

    def convert(value: str) -> int:
        if value.strip().lower() == "auto":
            return 0
        try:
            return exact(value)
        except Invalid:
            raise Invalid(f"expected auto or an integer >= {low}") from None

    return convert


def number(low: float, high: float) -> Callable[[str], float]:
    expected = f"expected a number {low:g}-{high:g}"

    def convert(value: str) -> float:
        if _NUMBER_RE.fullmatch(value) is None:
            raise Invalid(expected)
        result = float(value)
        if not low <= result <= high:
            raise Invalid(expected)
        return result

    return convert


def time(low: float, high: float | None = None, *, above: bool = False) -> Callable[[str], float]:
    if above:
        expected = f"expected a time greater than {low:g}"
    elif high is not None:
        expected = f"expected a time from {low:g} to {high:g} seconds"
    else:
        expected = f"expected a time of at least {low:g} second{'' if low == 1 else 's'}"
    expected += f" ({TIME_HINT})"

    def convert(value: str) -> float:
        try:
            seconds = parse_time(value)
        except ValueError:
            raise Invalid(expected) from None
        if (seconds <= low if above else seconds < low) or (high is not None and seconds > high):
            raise Invalid(expected)
        return seconds

    return convert


def choice(*options: str) -> Callable[[str], str]:
    quoted = [f"'{option}'" for option in options]
    expected = "expected " + (" or ".join(quoted) if len(quoted) <= 2 else ", ".join(quoted))

    def convert(value: str) -> str:
        if value not in options:
            raise Invalid(expected)
        return value

    return convert


def nonempty(value: str) -> str:
    if not value:
        raise Invalid("expected a non-empty value")
    return value


def ip_address(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise Invalid("expected an IP address") from None


def host(value: str) -> str:
    if not value or len(value) > 255 or "/" in value or any(char.isspace() for char in value):
        raise Invalid("expected an IP address or host name")
    return value


def node_name(value: str) -> str:
    if not value or len(value) > 255 or not value.isprintable() or any(char.isspace() for char in value):
        raise Invalid("expected a node name without spaces")
    return value


def protocols(value: str) -> tuple[str, ...]:
    wanted = {item.strip().lower() for item in value.split(",")}
    if not wanted <= {"tcp", "udp"}:
        raise Invalid("expected tcp, udp or tcp,udp")
    return tuple(protocol for protocol in ("tcp", "udp") if protocol in wanted)


def subject_prefix(value: str) -> str:
    if _SUBJECT_PREFIX_RE.fullmatch(value) is None:
        raise Invalid("expected NATS subject tokens of letters, digits, '_' or '-' joined by dots")
    return value


def nats_name(value: str) -> str:
    if _NAME_RE.fullmatch(value) is None:
        raise Invalid("expected letters, digits, '_' or '-'")
    return value


def keepalive_events(value: str) -> bool:
    if value == "all":
        return True
    if value == "none":
        return False
    raise Invalid("expected all or none")


def nats_urls(value: str) -> tuple[str, ...]:
    urls = []
    for item in value.split(","):
        url = item.strip()
        if not url:
            continue
        if any(char.isspace() for char in url):
            raise Invalid("expected NATS URLs (nats://host:port) separated by commas")
        try:
            parts = urlsplit(url if "://" in url else f"nats://{url}")
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise Invalid("expected NATS URLs (nats://host:port) separated by commas") from None
        if parts.scheme not in _NATS_SCHEMES or not parts.hostname:
            raise Invalid("expected NATS URLs with scheme nats, tls, ws or wss, and a host")
        urls.append(url)
    return tuple(urls)


def backend(value: str) -> str:
    if value == "sqlite":
        return value
    if value in ("postgresql", "postgres"):
        return "postgresql"
    raise Invalid("expected 'sqlite' or 'postgresql'")


def postgres_dsn(value: str) -> str:
    """A libpq connection string: a postgresql:// URI or `key=value` pairs (libpq checks the rest)."""
    value = value.strip()
    if value.startswith(("postgresql://", "postgres://")) or "=" in value:
        return value
    raise Invalid("expected a PostgreSQL DSN (postgresql://user@host:port/dbname or key=value pairs)")

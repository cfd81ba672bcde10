"""How commands read their JSON arguments: parsed the way the writer can store them, integers as cJSON's
valueint gives them.

The danger: a value the writer cannot store (a lone surrogate, a number past 64 bits) would fail the whole
batch it is written in, holding up every write queued with it; such values are refused here, as answers.
"""

from __future__ import annotations

import json
from typing import Any

from agentpulse.wdb.protocol import INT64_MAX, INT64_MIN, WdbError, dumps, near


def parse_json(argument: str) -> Any:
    """Parsed JSON. Escapes that decode to lone surrogates are refused here: such a string cannot be
    stored, and a write the writer cannot do would hold up every write queued with it."""
    try:
        data = json.loads(argument)
        dumps(data).encode()
    except (ValueError, RecursionError):
        raise WdbError(f"Invalid JSON syntax, near '{near(argument)}'") from None
    return data


def invalid_data(argument: str) -> WdbError:
    return WdbError(f"Invalid JSON data, near '{near(argument)}'")


def json_object(argument: str) -> dict[str, Any]:
    """Parsed JSON that must be an object (invalid data otherwise)."""
    data = parse_json(argument)
    if not isinstance(data, dict):
        raise invalid_data(argument)
    return data


def json_int(value: object) -> int | None:
    """A JSON number as cJSON's valueint would give it, or None; never outside 64 bits."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and INT64_MIN <= value <= INT64_MAX:
        return value
    return None

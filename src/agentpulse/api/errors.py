"""Wazuh's replies: the list envelope (`affected_items`, `failed_items`, `error` 0/1/2) and the
`application/problem+json` request errors with Wazuh's codes (reference section 16.1)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from agentpulse.api.http import Response

PROBLEM: Final = "application/problem+json"
JSON: Final = "application/json"

# Wazuh's framework error codes (framework/wazuh/core/exception.py) that the API can answer.
MESSAGES: Final[dict[int, tuple[str, str]]] = {
    1400: ("Invalid offset", ""),
    1401: ("Invalid limit", ""),
    1403: ("Not a valid sort field ", "Please, use only allowed sort fields"),
    1405: ("Specified limit exceeds maximum allowed", "Please select a limit between 1 and 100000"),
    1407: ("Query does not match expected format", ""),
    1408: ("Field does not exist.", ""),
    1409: ("Invalid query operator", ""),
    1411: ("TimeFrame is not valid", ""),
    1412: (
        "Date filter not valid. Valid formats are YYYY-MM-DD HH:mm:ss, YYYY-MM-DDTHH:mm:ssZ or YYYY-MM-DD",
        "",
    ),
    1701: ("Agent does not exist", "Please, use `GET /agents?select=id,name` to find all available agents"),
    1703: ("Action not available for Manager (agent 000)", ""),
    1707: ("Cannot send request, agent is not active", ""),
    1710: ("The group does not exist", "Please, use `GET /groups` to find all available groups"),
    1711: ("The group already exists", "Please, use another group ID"),
    1712: ("Default group is not deletable", ""),
    1713: ("Invalid group ID. Some IDs are restricted for internal purposes", "Please, use another group ID"),
    1722: (
        "Incorrect format for group_id",
        "Characters supported  a-z, A-Z, 0-9, ., _ and -. Max length is 255",
    ),
    1724: ("Not a valid select field", "Please, use only allowed select fields"),
    1731: (
        "Agent is not eligible for the action to be performed",
        "Please, make sure the agent meets the requirements.",
    ),
    1734: ("Error removing agent from group", ""),
    1737: ("Maximum number of groups per multigroup is 128", ""),
    1745: ("Agent only belongs to 'default' and it cannot be unassigned from this group.", ""),
    1751: (
        "Could not assign agent to group",
        "Agent already belongs to specified group, please select another agent",
    ),
}


@dataclass(slots=True)
class ApiError(Exception):
    """A request refused as a whole: HTTP `status`, a problem document."""

    status: int
    title: str
    detail: str
    code: int | None = None
    remediation: str | None = None

    def response(self) -> Response:
        doc: dict[str, Any] = {"title": self.title, "detail": self.detail}
        if self.remediation:
            doc["remediation"] = self.remediation
        if self.code is not None:
            doc["error"] = self.code
        return Response(self.status, dumps(doc), PROBLEM)


def bad_request(code: int, detail: str | None = None) -> ApiError:
    message, remediation = MESSAGES.get(code, ("Bad Request", ""))
    return ApiError(400, "Bad Request", detail or message, code, remediation or None)


def unauthorized(detail: str) -> ApiError:
    return ApiError(401, "Unauthorized", detail)


def forbidden() -> ApiError:
    return ApiError(
        403,
        "Permission Denied",
        "Permission denied: Resource type: *:*",
        4000,
        "Please, make sure you have permissions to execute the current request. For more information on "
        "how to set up permissions, please visit docs/api.md",
    )


def dumps(document: object) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(slots=True)
class Failures:
    """failed_items grouped by error code, as Wazuh's AffectedItemsWazuhResult shows them."""

    ids: dict[int, list[str]] = field(default_factory=dict)

    def add(self, code: int, item: str) -> None:
        self.ids.setdefault(code, []).append(item)

    def drop(self, codes: Iterable[int]) -> None:
        for code in codes:
            self.ids.pop(code, None)

    @property
    def count(self) -> int:
        return sum(len(ids) for ids in self.ids.values())

    def items(self) -> list[dict[str, Any]]:
        out = []
        for code, ids in sorted(self.ids.items()):
            message, remediation = MESSAGES.get(code, ("Error", ""))
            error: dict[str, Any] = {"code": code, "message": message}
            if remediation:
                error["remediation"] = remediation
            out.append({"error": error, "id": ids})
        return out


def envelope(
    items: list[Any],
    total: int,
    failures: Failures,
    messages: tuple[str, str, str],
    *,
    extra: dict[str, Any] | None = None,
) -> Response:
    """messages: (all, some, none), as Wazuh's all_msg, some_msg and none_msg."""
    failed = failures.count
    if failed == 0:
        error, message = 0, messages[0] if items or total else messages[2]
    elif items or total:
        error, message = 2, messages[1]
    else:
        error, message = 1, messages[2]
    document = {
        "data": {
            "affected_items": items,
            "total_affected_items": total,
            "total_failed_items": failed,
            "failed_items": failures.items(),
            **(extra or {}),
        },
        "message": message,
        "error": error,
    }
    return Response(200, dumps(document), JSON)


def envelope_encoded(
    items: list[str], total: int, failures: Failures, messages: tuple[str, str, str]
) -> Response:
    """`envelope()` for items the store encoded already (JSON text each): joined, never parsed."""
    reply = envelope([], total, failures, messages)
    if items:
        document = json.loads(reply.body)
        failed = failures.count
        document["error"], document["message"] = (0, messages[0]) if failed == 0 else (2, messages[1])
        head, _, tail = dumps(document).partition(b'"affected_items":[]')
        reply.body = head + b'"affected_items":[' + ",".join(items).encode() + b"]" + tail
    return reply


def data(document: object, message: str | None = None) -> Response:
    body: dict[str, Any] = {"data": document, "error": 0}
    if message is not None:
        body["message"] = message
    return Response(200, dumps(body), JSON)

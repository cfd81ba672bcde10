"""The OpenAPI 3.0 document served at `/openapi.json`: every route, parameter and reply of the API.

Written by hand from the same tables the handlers use (the agent fields, the filters), so a new field
shows here without a second list. agentpulse's additions are tagged `agentpulse`.
"""

from __future__ import annotations

from typing import Any, Final

from agentpulse import __version__
from agentpulse.api.fields import SELECTABLE
from agentpulse.api.query import DEFAULT_LIMIT, FILTERS, MAX_LIMIT, STATUSES


def _param(
    name: str,
    description: str,
    schema: dict[str, Any] | None = None,
    *,
    required: bool = False,
    where: str = "query",
) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": required,
        "description": description,
        "schema": schema or {"type": "string"},
    }


PAGING: Final = [
    _param("offset", "First element to return", {"type": "integer", "minimum": 0, "default": 0}),
    _param(
        "limit",
        "Maximum number of elements",
        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
    ),
    _param("sort", "Fields to sort by, each `+field` or `-field`, comma-separated"),
    _param("search", "Substring to look for; a leading `-` excludes it"),
    _param("select", f"Fields to return, comma-separated (`id` always): {', '.join(sorted(SELECTABLE))}"),
    _param("q", "Query: `field op value` with `=`, `!=`, `<`, `>`, `~`; `;` AND, `,` OR, parentheses"),
    _param("pretty", "Indent the JSON", {"type": "boolean", "default": False}),
]
AGENTS_LIST: Final = _param("agents_list", "Agent ids, comma-separated (`all` for every agent)")
STATUS: Final = _param("status", f"Statuses, comma-separated: {', '.join(STATUSES)}")
OLDER_THAN: Final = _param(
    "older_than",
    "Last keep-alive (registration for never-connected agents) older than this timeframe (`7d`, `30m`)",
)
AGENT_FILTERS: Final = [_param(name, f"Agents whose {name} is this value") for name in FILTERS] + [
    _param("version", "Agent version (`4.4.0`, `v4.4.0` and `wazuh 4.4.0` are the same)"),
    _param("group", "Agents in this group"),
]


def _envelope(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Envelope"}}},
    }


def _op(
    summary: str,
    params: list[dict[str, Any]],
    *,
    tag: str = "agents",
    reply: str = "An envelope of items",
    body: bool = False,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "tags": [tag],
        "parameters": params,
        "responses": {
            "200": _envelope(reply),
            "400": {"$ref": "#/components/responses/Problem"},
            "401": {"$ref": "#/components/responses/Problem"},
            "403": {"$ref": "#/components/responses/Problem"},
        },
    }
    if body:
        operation["requestBody"] = {
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {"group_id": {"type": "string"}},
                        "required": ["group_id"],
                    }
                }
            }
        }
    return operation


def document() -> dict[str, Any]:
    group_id = _param("group_id", "Group name", required=True)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "agentpulse API",
            "version": __version__,
            "description": "The agent part of the Wazuh 4.x server API (docs/api.md), plus agentpulse's additions (tag `agentpulse`).",
        },
        "components": {
            "securitySchemes": {
                "basicAuth": {"type": "http", "scheme": "basic"},
                "jwt": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            },
            "schemas": {
                "Envelope": {
                    "type": "object",
                    "properties": {
                        "data": {
                            "type": "object",
                            "properties": {
                                "affected_items": {"type": "array", "items": {}},
                                "total_affected_items": {"type": "integer"},
                                "total_failed_items": {"type": "integer"},
                                "failed_items": {"type": "array", "items": {"type": "object"}},
                            },
                        },
                        "message": {"type": "string"},
                        "error": {"type": "integer", "enum": [0, 1, 2]},
                    },
                },
                "Problem": {
                    "type": "object",
                    "properties": {
                        "title": {"type": "string"},
                        "detail": {"type": "string"},
                        "remediation": {"type": "string"},
                        "error": {"type": "integer"},
                    },
                },
            },
            "responses": {
                "Problem": {
                    "description": "A request error",
                    "content": {
                        "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
                    },
                }
            },
        },
        "security": [{"jwt": []}],
        "paths": {
            "/security/user/authenticate": {
                "post": {
                    **_op(
                        "Log in: HTTP Basic credentials for a JWT",
                        [_param("raw", "Answer the bare token as text/plain", {"type": "boolean"})],
                        tag="security",
                        reply="`{data: {token}}`",
                    ),
                    "security": [{"basicAuth": []}],
                },
            },
            "/agents": {
                "get": _op(
                    "List agents",
                    [
                        AGENTS_LIST,
                        STATUS,
                        OLDER_THAN,
                        *AGENT_FILTERS,
                        *PAGING,
                        _param("distinct", "Not supported (400 when true)", {"type": "boolean"}),
                    ],
                ),
                "delete": _op(
                    "Delete agents (client.keys, then global.db with a last history row and status event)",
                    [
                        {**AGENTS_LIST, "required": True},
                        {**STATUS, "required": True, "description": "Statuses, or `all`"},
                        {**OLDER_THAN, "schema": {"type": "string", "default": "7d"}},
                        _param(
                            "purge",
                            "Also drop the client.keys line and the agent database",
                            {"type": "boolean", "default": False},
                        ),
                        *AGENT_FILTERS,
                        _param("q", "Query, as for GET"),
                    ],
                ),
            },
            "/agents/summary/status": {
                "get": _op(
                    "Agents per connection status and per configuration sync status",
                    [],
                    reply="`{data: {connection, configuration}}`",
                )
            },
            "/agents/reconnect": {
                "put": _op("Tell active agents to reconnect (#!-force_reconnect)", [AGENTS_LIST])
            },
            "/agents/group": {
                "put": _op(
                    "Assign agents to a group",
                    [
                        group_id,
                        AGENTS_LIST,
                        _param(
                            "force_single_group",
                            "Replace the agents' groups",
                            {"type": "boolean", "default": False},
                        ),
                    ],
                    tag="groups",
                ),
                "delete": _op("Remove agents from a group", [group_id, AGENTS_LIST], tag="groups"),
            },
            "/groups": {
                "get": _op(
                    "List groups with their member counts",
                    [
                        _param("groups_list", "Group names, comma-separated"),
                        _param("hash", "Hash of the group files", {"type": "string", "default": "md5"}),
                        *PAGING[:5],
                    ],
                    tag="groups",
                ),
                "post": _op("Create a group", [], tag="groups", reply="`{message}`", body=True),
            },
            "/groups/{group_id}/agents": {
                "get": _op(
                    "The agents of a group", [{**group_id, "in": "path"}, STATUS, *PAGING], tag="groups"
                )
            },
            "/agents/{agent_id}/history": {
                "get": _op(
                    "An agent's status changes, newest first",
                    [
                        _param("agent_id", "Agent id", required=True, where="path"),
                        _param("limit", "How many", {"type": "integer", "default": 100, "maximum": 10000}),
                    ],
                    tag="agentpulse",
                )
            },
            "/agents/stream": {
                "get": {
                    **_op(
                        "Status changes as Server-Sent Events (`event: status`, with the counts after each batch)",
                        [
                            _param(
                                "snapshot",
                                "`true`: counts first; `agents`: counts and every agent's status first",
                                {"type": "string", "enum": ["false", "true", "agents"]},
                            )
                        ],
                        tag="agentpulse",
                        reply="text/event-stream",
                    )
                }
            },
            "/agents/summary/status/history": {
                "get": _op(
                    "Counts per status for each of the last minutes (the page's chart)",
                    [_param("minutes", "How many minutes", {"type": "integer", "default": 60})],
                    tag="agentpulse",
                )
            },
            "/manager/status": {
                "get": _op(
                    "Listeners, workers, NATS, outbox depth, store lag, API",
                    [],
                    tag="agentpulse",
                    reply="`{data: {...}}`",
                )
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics (no token unless <metrics_auth>yes)",
                    "tags": ["agentpulse"],
                    "security": [],
                    "responses": {"200": {"description": "Prometheus text format"}},
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "tags": ["agentpulse"],
                    "responses": {"200": {"description": "OpenAPI 3.0"}},
                }
            },
        },
    }

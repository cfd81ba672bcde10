"""`ApiService`: the HTTP API, the fleet page and `/metrics` on `<api>`'s port, started by the manager.

Routing and access live here: every route but the page's static files and `/metrics` (unless
`<metrics_auth>yes`) needs a bearer token; GET routes need the read role, the others the admin role
(403 code 4000 otherwise). Handlers are in `agents.py` and `groups.py`; nothing here reads the database.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final

from agentpulse.api import agents, groups, openapi, tokens
from agentpulse.api.context import ApiContext, ManagerLink
from agentpulse.api.errors import JSON, ApiError, data, dumps, forbidden, unauthorized
from agentpulse.api.http import HttpServer, Request, Response, Stream
from agentpulse.api.login import LoginGuard, authenticate
from agentpulse.api.stream import StreamHub
from agentpulse.api.users import Role, UserBook
from agentpulse.config import ApiConfig
from agentpulse.ratelimit import RateLimitedLog
from agentpulse.store.facade import Store

log = logging.getLogger(__name__)

Reply = Response | Stream
RouteHandler = Callable[[Request, tuple[str, ...]], Awaitable[Reply]]
PAGE_FILES: Final = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
}
SECURITY_HEADERS: Final = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
PAGE_POLICY: Final = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'"
NOT_FOUND: Final = "The requested URL was not found on the server. If you entered the URL manually please check your spelling and try again."


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: RouteHandler
    role: Role | None  # None: no token needed


class ApiService:
    def __init__(
        self,
        config: ApiConfig,
        home: Path,
        store: Store,
        link: ManagerLink,
        *,
        ssl_context: ssl.SSLContext | None,
        name_of: Callable[[int], str | None],
    ) -> None:
        self.config = config
        self.home = home
        self.ctx = ApiContext(store, link, home / "etc" / "shared")
        self.hub = StreamHub(store, name_of)
        self.users = UserBook(self._path(config.users_file))
        self.guard = LoginGuard(config.max_login_attempts, config.block_time)
        self.key = b""
        self.started = time.time()
        self.refusals = RateLimitedLog(log)
        self.page = {
            path: resources.files("agentpulse.api").joinpath("page", name).read_bytes()
            for path, (name, _) in PAGE_FILES.items()
        }
        self.server = HttpServer(
            self.handle,
            config.host,
            config.port,
            ssl_context=ssl_context,
            max_connections=config.max_connections,
            base_headers=SECURITY_HEADERS,
        )
        self.routes = self._routes()

    def _path(self, text: str) -> Path:
        path = Path(text)
        return path if path.is_absolute() else self.home / path

    @property
    def port(self) -> int:
        return self.server.port

    async def start(self) -> None:
        self.key = await asyncio.to_thread(tokens.load_key, self._path(self.config.token_key_file))
        if not await asyncio.to_thread(self.users.users):
            log.warning(
                "The API has no users (%s): add one with `agentpulse api-user add NAME --role admin`",
                self.users.path,
            )
        try:
            await self.server.start()
        except OSError as error:
            # as for enrolment: a port that cannot be opened turns the API off, the agents are served on
            log.error(
                "API: cannot listen on %s:%d (%s): the API and the fleet page are off",
                self.config.host,
                self.config.port,
                error.strerror or error,
            )
            return
        self.ctx.open()
        self.hub.start()
        scheme = "https" if self.server.ssl_context is not None else "http"
        log.info("API and fleet page on %s://%s:%d/", scheme, self.config.host, self.server.port)

    async def stop(self) -> None:
        await self.hub.stop()
        await self.server.stop()
        self.ctx.close()

    # -- routing ---------------------------------------------------------------------------------------

    def _routes(self) -> list[Route]:
        ctx, hub = self.ctx, self.hub
        read, admin = Role.READ, Role.ADMIN

        def plain(
            handler: Callable[[ApiContext, Request], Awaitable[Reply]],
        ) -> RouteHandler:
            return lambda request, _: handler(ctx, request)

        table: list[tuple[str, str, RouteHandler, Role | None]] = [
            ("POST", "/security/user/authenticate", lambda r, _: self.login(r), None),
            ("GET", "/security/user/authenticate", lambda r, _: self.login(r), None),
            ("GET", "/agents", plain(agents.list_agents), read),
            ("DELETE", "/agents", plain(agents.delete_agents), admin),
            ("GET", "/agents/summary/status", plain(agents.summary), read),
            ("GET", "/agents/summary/status/history", plain(agents.status_history), read),
            ("PUT", "/agents/reconnect", plain(agents.reconnect), admin),
            ("GET", "/agents/stream", lambda r, _: agents.stream(hub, r), read),
            ("PUT", "/agents/group", plain(groups.assign), admin),
            ("DELETE", "/agents/group", plain(groups.unassign), admin),
            ("GET", "/agents/([^/]+)/history", lambda r, p: agents.history(ctx, r, p[0]), read),
            ("GET", "/groups", plain(groups.list_groups), read),
            ("POST", "/groups", plain(groups.create_group), admin),
            ("GET", "/groups/([^/]+)/agents", lambda r, p: groups.group_agents(ctx, r, p[0]), read),
            ("GET", "/manager/status", lambda r, _: self.manager_status(), read),
            ("GET", "/openapi.json", lambda r, _: self.openapi(), read),
            ("GET", "/metrics", lambda r, _: self.metrics(), admin if self.config.metrics_auth else None),
        ]
        return [Route(m, re.compile(f"^{p}$"), h, role) for m, p, h, role in table]

    async def handle(self, request: Request) -> Reply:
        try:
            reply = await self._dispatch(request)
        except ApiError as error:
            if error.status in (401, 403):
                self.refusals.warning(
                    "api-denied",
                    "API: %d for %s %s from %s",
                    error.status,
                    request.method,
                    request.path[:80],
                    request.client,
                )
            reply = error.response()
        except Exception:
            log.exception("API: %s %s failed", request.method, request.path[:80])
            reply = ApiError(
                500, "Internal Server Error", "The request failed; see the manager log"
            ).response()
        if isinstance(reply, Response) and reply.content_type in (JSON, "application/problem+json"):
            reply.headers.setdefault("Cache-Control", "no-store")
            if (request.param("pretty") or "").lower() == "true":
                reply.body = json.dumps(json.loads(reply.body), indent=4, ensure_ascii=False).encode()
        return reply

    async def _dispatch(self, request: Request) -> Reply:
        method = "GET" if request.method == "HEAD" else request.method
        if method == "GET" and request.path in PAGE_FILES:
            _, content_type = PAGE_FILES[request.path]
            return Response(
                200,
                self.page[request.path],
                content_type,
                {"Content-Security-Policy": PAGE_POLICY, "Cache-Control": "no-cache"},
            )
        allowed = False
        for route in self.routes:
            match = route.pattern.match(request.path)
            if match is None:
                continue
            allowed = True
            if route.method != method:
                continue
            if route.role is not None:
                self._authorise(request, route.role)
            return await route.handler(request, match.groups())
        if allowed:
            raise ApiError(405, "Method Not Allowed", "The method is not allowed for the requested URL.")
        raise ApiError(404, "Not Found", NOT_FOUND)

    def _authorise(self, request: Request, needed: Role) -> None:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer "):
            raise unauthorized("No authorization token provided")
        try:
            claims = tokens.verify(self.key, header[7:].strip(), time.time())
        except tokens.TokenError as error:
            raise unauthorized(str(error)) from None
        user = self.users.get(claims.user)
        if user is None or user.stamp != claims.stamp:
            raise unauthorized("Invalid token")
        if needed is Role.ADMIN and user.role is not Role.ADMIN:
            raise forbidden()

    # -- the routes served here --------------------------------------------------------------------------

    async def login(self, request: Request) -> Response:
        token = await authenticate(
            self.users,
            self.guard,
            self.key,
            int(self.config.auth_token_exp_timeout),
            request.headers.get("authorization"),
            request.client,
        )
        if (request.param("raw") or "").lower() == "true":
            return Response(200, token.encode(), "text/plain")
        return data({"token": token})

    async def manager_status(self) -> Response:
        status: dict[str, Any] = dict(await self.ctx.link.status())
        status["api"] = {
            "port": self.server.port,
            "https": self.server.ssl_context is not None,
            "requests": self.server.requests,
            "stream_clients": self.hub.clients,
            "logins_refused": self.guard.refused,
            "started": self.started,
        }
        return data(status)

    async def openapi(self) -> Response:
        return Response(200, dumps(openapi.document()), JSON)

    async def metrics(self) -> Response:
        render = self.ctx.link.metrics
        if render is None:
            raise ApiError(404, "Not Found", "Metrics are not enabled in this build")
        body, content_type = render()  # on the loop: collectors read loop-owned state
        return Response(200, body, content_type)

"""The manager as the HTTP API sees it (`api.context.ManagerLink`)."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from typing import TYPE_CHECKING

from agentpulse.manager.keyedits import unlink_all

if TYPE_CHECKING:
    from agentpulse.api.service import ApiService
    from agentpulse.manager.core import Manager

log = logging.getLogger(__name__)


class ManagerApi:
    """What the HTTP API may ask of the manager (`api.context.ManagerLink`): remove agents the way
    enrolment replaces them (client.keys under the keys lock, remoted, then the store), reconnect them,
    and the manager's status."""

    def __init__(self, manager: Manager) -> None:
        self.manager = manager

    def service(self) -> ApiService:
        from agentpulse.api.context import ManagerLink
        from agentpulse.api.service import ApiService
        from agentpulse.authd.tls import ensure_certificate, resolve

        manager, api = self.manager, self.manager.config.api
        assert api is not None
        context = None
        if api.https:
            cert, key = resolve(manager.home.root, api.cert), resolve(manager.home.root, api.key)
            made = ensure_certificate(cert, key, names=(api.host,))
            if made is not None:
                log.info("API: made a self-signed certificate %s (SHA-256 %s)", cert, made)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(cert, key)
        link = ManagerLink(self.remove_agents, manager.send_to_agents, self.status, manager.metrics.render)
        return ApiService(
            api, manager.home.root, manager.store, link, ssl_context=context, name_of=manager.store.name_of
        )

    async def remove_agents(self, ids: list[int], purge: bool) -> list[int]:
        manager = self.manager
        await manager.key_reloads.remove(ids, purge=purge)
        removed = manager.store.remove_agents(ids, time.time(), purge_files=purge)
        await asyncio.to_thread(
            unlink_all, [manager.home.rids_file(f"{row.agent_id:03d}") for row in removed]
        )
        log.info("API: removed %d agents", len(removed))
        return [row.agent_id for row in removed]

    async def status(self) -> dict[str, object]:
        manager = self.manager
        started = time.monotonic()
        try:
            await asyncio.wait_for(asyncio.wrap_future(manager.store.committed()), 5.0)
            lag: float | None = time.monotonic() - started
        except Exception:  # timed out, or the store is closing
            lag = None
        reader = manager.store.reader()
        outbox = await asyncio.to_thread(reader.outbox_count, 0)
        listeners = manager.listeners()
        events = manager.events
        return {
            "pid": os.getpid(),
            "started": manager.started_at,
            "listeners": listeners,
            "workers": manager.config.remote.worker_processes,
            "agents": len(manager.store.agents),
            "enrolment": manager.authd is not None,
            "nats": {
                "enabled": events is not None,
                "connected": bool(events is not None and events.nc.is_connected),
                "streams": events.streams.report() if events is not None else {},
            },
            "outbox_depth": outbox,
            "store": {
                "commit_lag_seconds": lag,
                "flushes": manager.store.flushes,
                "write_errors": manager.store.write_errors,
            },
        }

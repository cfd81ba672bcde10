"""The manager process (`core.Manager`): remoted, the store, the sweeper, the keys watcher and the services
around them as tasks of one event loop; the home's lock (`homelock`), client.keys edits while it runs
(`keyedits`), the HTTP API's view of it (`api_link`) and the wiring of several nodes (`cluster_wiring`)."""

from agentpulse.manager.core import Manager
from agentpulse.manager.homelock import AlreadyRunning, HomeLock

__all__ = ["AlreadyRunning", "HomeLock", "Manager"]

"""The manager process: remoted, the store, the sweeper and the keys watcher as tasks of one event loop.

The danger is order (see `Manager`): the store replays what remoted acknowledged and never committed (the
acknowledgement journal) and resets every live agent (code 5) before remoted accepts a connection, and on
the way out everything that writes through the store stops before its last flush. And reloads: a broken
client.keys must not purge the fleet, so every reload is judged once (`keyguard.py`) and applied whole;
enrolment (`authd`) hands its new lines here (`EnrolledKeys`), and no reload read meanwhile is applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import logging
import os
import signal
import socket
import ssl
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol

from agentpulse import filemodes
from agentpulse.config import Config
from agentpulse.keysfile import KeysLock, KeysRead, read_keys_file, write_keys_lines
from agentpulse.looplag import LoopLag, overload_of
from agentpulse.metrics.listener import MetricsListener
from agentpulse.metrics.registry import Metrics
from agentpulse.paths import Home
from agentpulse.ratelimit import RateLimitedLog
from agentpulse.records import MANAGER_ID, StatusUpdate
from agentpulse.remoted import keyguard, slowdown
from agentpulse.remoted.grace import LOCAL, GraceTracker
from agentpulse.remoted.intake import build_intake
from agentpulse.remoted.journal import AckJournal, clear_journals, keep_for, read_journals
from agentpulse.remoted.keyguard import ReloadCounters, ReloadDecision, ReloadLimits
from agentpulse.remoted.keystore import KeysChange, KeyStore
from agentpulse.remoted.keywatch import KeysWatcher, Signature, signature
from agentpulse.remoted.pushes import SharedPushes
from agentpulse.remoted.replay import ReplayBook
from agentpulse.remoted.scheduler import KeepaliveScheduler
from agentpulse.remoted.server import MANAGER_VERSION, Remoted, disconnect_gone
from agentpulse.remoted.worker_pool import WorkerPool
from agentpulse.rollout.coordinator import Rollout
from agentpulse.shared.tree import SharedTree
from agentpulse.stopguard import StopGuard
from agentpulse.store.backends import backend_for, db_dir_of
from agentpulse.store.facade import Store
from agentpulse.store.sweeper import Sweeper
from agentpulse.store.upkeep import Upkeep
from agentpulse.wdb.server import WdbServer
from agentpulse.wire.keys import CheckedKeys, KeysFile

if TYPE_CHECKING:
    from agentpulse.api.service import ApiService
    from agentpulse.authd.service import EnrolmentService
    from agentpulse.cluster.lease import Connection, ExpiredLease
    from agentpulse.cluster.losses import LossGate
    from agentpulse.cluster.service import ClusterService
    from agentpulse.events.service import EventsService

log = logging.getLogger(__name__)

HOUSEKEEPING_INTERVAL = 1.0
KEYS_APPLY_TIMEOUT = 10.0  # seconds an accepted reload waits for every worker to use the new keys


class AlreadyRunning(RuntimeError):
    pass


class Service(Protocol):
    """A part of the manager started after the store opens and before remoted listens (events, wdb).

    `Manager.services` stop after the store closed (they drain what it committed); `front_services`
    write through the store and stop before its last flush, so what they accepted is committed.
    """

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class HomeLock:
    """An exclusive lock on the pid file: a second manager on the same home refuses to start."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - held open for the life of the process
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            pid = handle.read().strip() or "?"
            handle.close()
            raise AlreadyRunning(
                f"another agentpulse manager (pid {pid}) is running on this home ({self.path.parent.parent.parent})"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()
            self._file.close()
            self._file = None


class Manager:
    """One manager home served until `stop()`.

    Start order matters: the store opens global.db and resets every live agent (code 5), and commits
    that, before remoted accepts a connection, so no status from the previous run survives into this one
    (remoted's worker processes start meanwhile, and listen only after). Stop order too:
    listeners close (remoted, then the query socket and the upkeep task, which write through the store),
    then the store writes everything accepted, then the services that drain what the store committed
    (events), then the lock is released.
    """

    def __init__(self, home: Home, config: Config, log_level: str = "info") -> None:
        self.home = home
        self.config = config
        db_dir = db_dir_of(config.database, home.db_dir)
        manager_host = config.global_.manager_host or socket.gethostname()
        self.store = Store(
            db_dir,
            manager_host=manager_host,
            node_name=config.global_.node_name,
            flush_interval=config.database.flush_interval,
            max_pending=config.database.max_pending,
            backend=backend_for(
                config.database, db_dir, manager_host=manager_host, node_name=config.global_.node_name
            ),
        )
        self.grace = GraceTracker(
            self._connection_lost,
            config.remote.connection_grace,
            allowance=self._behind,
            max_stretch=config.global_.agents_disconnection_time,
        )
        # client.keys in memory: remoted authenticates against it, events read names from it. With
        # several workers each holds its own copy, and this one serves the lookups by id.
        self.keys = KeyStore()
        # With one worker, remoted runs in this process. With several, they run in their own processes.
        self.remoted: Remoted | None = None
        self.scheduler: KeepaliveScheduler | None = None
        self.pool: WorkerPool | None = None
        self.journal: AckJournal | None = None  # this process's, when remoted runs here
        self.lag = LoopLag()  # this process's loop: the sweeper (and remoted, when here) allow for it
        if config.remote.worker_processes > 1:
            book = ReplayBook(
                self.grace.holder_mask, config.remote.connection_overtake_time, config.remote.verify_msg_id
            )
            self.pool = WorkerPool(
                str(home.root), config.remote.worker_processes, self.store, self.grace, book, log_level
            )
        else:
            self.journal = AckJournal(home.ack_journal_dir, LOCAL, keep_for(config.database.flush_interval))
            self.remoted = Remoted(
                config,
                self.keys,
                self.store,
                self.grace,
                journal=self.journal,
                lag=self.lag,
                intake=build_intake(config, home, 0, 1),
            )
            self.scheduler = KeepaliveScheduler(self.remoted, config.remote.manager_keepalive, lag=self.lag)
            slowdown.apply(self.remoted)  # TEST ONLY, and only when its variable is set
        # Shared files (docs/shared-files.md): the rollout compares each keep-alive's merged.mg md5 with the
        # agent's group's and asks the remoted process holding the agent to push it (`_push`).
        self.rollout = Rollout(
            SharedTree(home.shared_dir, home.multigroups_dir),
            self.store,
            self._push,
            shared_reload=config.remote.shared_reload,
            max_pushes=config.remote.max_concurrent_pushes,
            push=config.remote.shared_push,
            shared_database=config.database.backend == "postgresql",
        )
        self.pushes = SharedPushes(self.remoted, self.rollout.pushed) if self.remoted is not None else None
        if self.pool is not None:
            self.pool.on_pushed = self.rollout.pushed
        self.sweeper = Sweeper(
            self.store,
            config.global_.agents_disconnection_time,
            config.global_.agents_disconnection_alert_time,
            allowance=self._behind,
        )
        self.keys_watcher = KeysWatcher(home.client_keys, config.remote.keyupdate_interval, self.reload_keys)
        self.reload_limits = ReloadLimits(
            config.remote.keys_reload_max_removed, config.remote.keys_reload_max_removed_percent
        )
        self.reloads = ReloadCounters()
        self._reloading = asyncio.Lock()  # one reload at a time: the watcher's, SIGHUP's and the CLI's
        self.refusals = RateLimitedLog(log)
        self._started = 0
        self.lock = HomeLock(home.pid_file)
        self._stop = asyncio.Event()
        self.stop_guard = StopGuard()  # the stop ends within its deadline; a second signal forces it
        self._purges: set[asyncio.Task[None]] = set()
        self.ready = asyncio.Event()
        self.services: list[Service] = []
        self.cluster: ClusterService | None = None
        self.losses: LossGate | None = None
        self.wdb = WdbServer(
            self.store,
            home.wdb_socket,
            allow_sql=config.database.allow_sql,
            send_to_agents=self.send_to_agents,
            max_clients=config.database.wdb_max_clients,
            idle_timeout=config.database.wdb_idle_timeout,
            reload_keys=self.reload_keys,
            shared=self.rollout,
        )
        self.upkeep = Upkeep(
            self.store, config.database.max_fragmentation, config.database.fragmentation_check_interval
        )
        self.front_services: list[Service] = [self.wdb, self.upkeep, self.rollout]
        self._front_started: list[Service] = []
        self.authd: EnrolmentService | None = None
        if config.auth is not None and config.auth.listens:
            from agentpulse.authd.service import EnrolmentService

            self.authd = EnrolmentService(
                config.auth,
                home,
                self.store,
                EnrolledKeys(self.keys, self.keys_watcher, self.remoted, self.pool, self.store),
                manager_version=MANAGER_VERSION,
                hostname=socket.gethostname(),
            )
            self.front_services.append(self.authd)
        if config.database.backend == "postgresql":
            # Several nodes share the database: this node's lease (its epoch goes beside each agent it
            # holds) and its part in the leader election. First service: started before any agent is
            # served, stopped (the lease released) after everything else.
            from agentpulse.cluster.bindings import BindingsWatch
            from agentpulse.cluster.follow import NodeFollow
            from agentpulse.cluster.holders import HoldersFeed
            from agentpulse.cluster.keysync import KeysSync
            from agentpulse.cluster.lease import renew_interval_for
            from agentpulse.cluster.losses import LossGate
            from agentpulse.cluster.service import ClusterService
            from agentpulse.store.postgresql.connect import conninfo

            dsn, node = conninfo(config.database), config.global_.node_name
            # How this node follows the others' writes: a loss here is decided against their bindings
            # (the late-grace race), it hears at once when another one takes its agents (the cross-node
            # overtake rule), and it lets its agents go while it has no lease.
            follow = NodeFollow(
                self.store, self.grace, self.remoted, self.pool, config.remote.connection_overtake_time
            )
            self.cluster = ClusterService(
                dsn,
                node,
                grace=config.remote.connection_grace,
                ttl=config.global_.lease_ttl,
                renew_interval=renew_interval_for(config.global_.lease_ttl),
                on_epoch=self.store.set_node_epoch,
                on_node_expired=self._take_over,
                on_lease_lost=follow.lease_lost,
                on_lease_regained=follow.lease_regained,
            )
            self.services.append(self.cluster)
            self.losses = follow.losses = LossGate(
                dsn,
                node,
                submit=self.store.submit,
                adopt=self.store.adopt,
                still_lost=follow.still_lost,
                tick=self.store.apply_adopted,
            )
            # The view follows the agents other nodes hold, from the database; it also finds there the
            # bindings whose notification was missed (read at once when LISTEN is back).
            holders = HoldersFeed(dsn, node, follow.followed, lambda: self.store.settled)
            self.front_services.extend(
                [holders, BindingsWatch(dsn, node, follow.bound_elsewhere, holders.catch_up), self.losses]
            )

            # Keys enrolled on another node, from the database into this node's client.keys; and
            # agents removed on another node removed here.
            self.front_services.append(
                KeysSync(
                    dsn,
                    node,
                    home.client_keys,
                    self.keys.__contains__,
                    self.keys_watcher.trigger,
                    removed=self._removed_elsewhere,
                    in_db=lambda: self.store.loaded,
                )
            )
            self.upkeep.active = lambda: self.cluster is not None and self.cluster.leader
        self.events: EventsService | None = None
        if config.nats.enabled:
            from agentpulse.events.service import EventsService

            self.events = EventsService(config.nats, self.store, home, self.keys.name_of)
            self.services.append(self.events)
            if self.cluster is not None:  # one relay of the shared outbox: the leader's
                self.events.outbox.active = lambda: self.cluster is not None and self.cluster.leader
        # Prometheus metrics: `self.metrics.render` serves any /metrics (our listener, the HTTP API's).
        self.metrics = Metrics(
            self.store,
            sweeper=self.sweeper,
            grace=self.grace,
            remoted=self.remoted,
            pool=self.pool,
            events=self.events,
            enrolment=self.authd,
            reloads=self.reloads,
        )
        if config.metrics.enabled:
            self.front_services.append(MetricsListener(config.metrics, self.metrics.render))
        self.api: ApiService | None = None
        if config.api is not None and config.api.enabled:
            self.api = ManagerApi(self).service()
            self.front_services.append(self.api)

    async def run(self) -> None:
        self._started = int(time.time())
        filemodes.set_manager_umask()
        self._warn_exposed_files()
        self.home.create_layout()
        self.lock.acquire()
        # From the first moment, not once listening: a SIGTERM during the start (a long store open, a
        # worker that never comes up) takes the normal way out, Stopping to Stopped, exit 0.
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._signalled, signum)
        loop.add_signal_handler(signal.SIGHUP, self.keys_watcher.trigger)
        try:
            await self._run()
        finally:
            self.stop_guard.phase = "releasing the home lock and closing the event loop"
            self.lock.release()

    def _warn_exposed_files(self) -> None:
        """One warning line per existing file that holds keys (or passwords) and every user may read."""
        db_dir = Path(self.config.database.path) if self.config.database.path else self.home.db_dir
        db = db_dir / "global.db"
        paths = [self.home.client_keys, db, db.with_name("global.db-wal"), db.with_name("global.db-shm")]
        nats = self.config.nats
        if nats.password or nats.token or self.config.database.password:
            paths.append(self.home.ossec_conf)
        paths.extend(Path(name) for name in (nats.creds_file, nats.tls_key) if name)
        for exposed in filemodes.world_readable(paths):
            log.warning("%s", exposed.warning())

    async def _run(self) -> None:
        checked = await self.keys_watcher.load()
        # The keys first, and the worker processes started with them: a worker takes seconds to start and
        # load 50,000 keys, done while the store opens and resets the last run's agents. It listens only
        # once that reset is committed (`_start_listeners`).
        self._load_keys(checked.usable())
        started: list[Service] = []
        try:
            if self.pool is not None:
                await self.pool.spawn()
            await asyncio.to_thread(self.store.open, list(checked.usable().active()))
            for service in self.services:
                await service.start()
                started.append(service)
            await self._serve(checked)
        finally:
            if self.pool is not None:  # stopped already, unless the start failed before it listened
                await self.pool.stop()
            # Events drain the outbox last; the store's final flush then commits what they acknowledged,
            # so a clean restart does not publish those events again.
            for service in reversed(started):
                self.stop_guard.phase = f"stopping {type(service).__name__}"
                await service.stop()
            self.stop_guard.phase = "closing the store"
            await asyncio.to_thread(self.store.close)

    async def _serve(self, checked: CheckedKeys) -> None:
        acks = await asyncio.to_thread(read_journals, self.home.ack_journal_dir)
        restored = self.store.restore_acks(StatusUpdate(ack.agent_id, ack.trigger, ack.at) for ack in acks)
        reset = self.store.reset_connections()
        decision = keyguard.decide({}, checked, self.reload_limits, also_known=self._stored_agents())
        if decision.accepted:
            await self._purge([(agent_id, f"{agent_id:03d}") for agent_id in decision.removed])
        else:
            self._refused_at_start(decision)
        # Committed before any agent is taken (the workers listen after this): no status of the last run
        # survives into this one, in the database either.
        if await asyncio.to_thread(self.store.flush_wait):
            await asyncio.to_thread(clear_journals, self.home.ack_journal_dir)
        if restored:
            log.warning(
                "%d agents were acknowledged in the last run but not stored (the manager stopped "
                "without its last commit): restored from the acknowledgement journal",
                restored,
            )
        log.info(
            "Started: %d agents in client.keys, %d reset to disconnected (code 5)", len(self.keys), reset
        )
        try:
            for service in self.front_services:
                await service.start()
                self._front_started.append(service)
            await self._listen()
        finally:
            await self._stop_front()

    async def _stop_front(self) -> None:
        """Stop the services that write through the store (the last flush then commits what they took)."""
        while self._front_started:
            await self._front_started.pop().stop()

    async def _listen(self) -> None:
        tasks: list[asyncio.Task[None]] = []
        try:
            if not await self._start_listeners():
                return
            await asyncio.to_thread(self._write_state)
            tasks = [
                asyncio.create_task(self._housekeeping(), name="housekeeping"),
                asyncio.create_task(self.keys_watcher.run(), name="keys-watcher"),
            ]
            if self.config.remote.manager_keepalive.enabled and self.scheduler is not None:
                tasks.append(asyncio.create_task(self.scheduler.run(), name="keepalive-scheduler"))
            if self.journal is not None:
                tasks.append(asyncio.create_task(self.journal.run(), name="ack-journal"))
            self.lag.start()
            self.ready.set()
            await self._stop.wait()
        finally:
            log.info("Stopping")
            self.lag.stop()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # The signal handlers stay until the loop closes: a second SIGTERM during the final flush
            # must not kill the process with its default action.
            self.stop_guard.phase = "stopping remoted"
            if self.pool is not None:
                await self.pool.stop()
            if self.pushes is not None:
                await self.pushes.stop()
            if self.remoted is not None:
                await self.remoted.stop()
            self.grace.cancel_all()
            self.stop_guard.phase = "stopping the query socket, upkeep and enrolment"
            await self._stop_front()
            for task in list(self._purges):
                await task
            if self.journal is not None:
                self.journal.close()
            self.stop_guard.phase = "committing the last changes"
            if await asyncio.to_thread(self.store.flush_wait):
                # Everything acknowledged is committed: the next start has nothing to restore.
                await asyncio.to_thread(clear_journals, self.home.ack_journal_dir)
                self.stop_guard.committed = True
            log.info("Stopped: every accepted status change is committed")

    async def _start_listeners(self) -> bool:
        """remoted listens, here or in its workers; False when a stop came first (the start is undone).
        A worker that cannot start raises WorkerStartError, the others stopped."""
        if self._stop.is_set():
            return False
        if self.journal is not None:
            await asyncio.to_thread(self.journal.open)
        starting = asyncio.ensure_future(
            self.remoted.start() if self.remoted is not None else self._require_pool().listen()
        )
        stopping = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait((starting, stopping), return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not starting.done():
            starting.cancel()  # the pool stops the workers it started
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            return False
        starting.result()
        return True

    def _connection_lost(self, update: StatusUpdate) -> None:
        """The grace ran out (code 6): said to be under overload when the manager was behind then. With
        several nodes it is first decided against the other nodes' bindings (`cluster/losses.py`)."""
        overload = overload_of(self._behind())
        update = dataclasses.replace(update, overload=overload) if overload else update
        if self.losses is not None:
            self.losses.add(update)
        else:
            self.store.submit(update)

    # -- several nodes (docs/cluster.md; the rest is cluster/follow.py) ---------------------------------

    async def remove_keys(self, ids: list[int], *, purge: bool) -> list[str]:
        """The agents' lines out of client.keys (marked `!`, or gone with `purge`) under the keys lock, and
        the key store, remoted and workers told before the lock is let go; the lines removed."""
        keys = EnrolledKeys(self.keys, self.keys_watcher, self.remoted, self.pool, self.store)
        keys.hold()
        try:
            lines, before, after = await asyncio.to_thread(
                _remove_key_lines, self.home.client_keys, ids, purge
            )
        except BaseException:
            keys.release()
            raise
        if lines:
            await keys.take(lines, before, after)
        else:
            keys.release()
        return lines

    async def _removed_elsewhere(self, ids: list[int]) -> None:
        """Agents another node removed: out of this node's view first (their removal row is written
        already, and their connection's loss must not add one), then out of client.keys (marked `!`, as
        manage_agents -r does) and remoted, which closes their connections."""
        self.store.forget_removed(ids, time.time())
        lines = await self.remove_keys(ids, purge=False)
        await asyncio.to_thread(_unlink_all, [self.home.rids_file(f"{agent_id:03d}") for agent_id in ids])
        log.info("Removed %d agents that another node removed", len(lines))

    def _behind(self) -> float:
        """Seconds the manager is behind reading its agents: this loop's, and the slowest worker's."""
        return self.lag.allowance() + (self.pool.behind() if self.pool is not None else 0.0)

    def _require_pool(self) -> WorkerPool:
        assert self.pool is not None
        return self.pool

    def stop(self) -> None:
        self._stop.set()

    def _signalled(self, signum: int) -> None:
        """The first SIGTERM or SIGINT stops (within the guard's deadline), a second one forces the exit."""
        name = signal.Signals(signum).name
        if self.stop_guard.armed:
            self.stop_guard.force(f"a second {name}")
            return
        log.info("%s received: stopping (a second SIGTERM or SIGINT forces the exit)", name)
        self.stop_guard.arm()
        self._stop.set()

    def send_to_agents(self, agent_ids: list[int], payload: bytes) -> int:
        """Send a control message to connected agents (wherever their connection is); returns how many
        were sent here, or all of them when workers hold the connections (they send to those they hold)."""
        if self.remoted is None:
            assert self.pool is not None
            self.pool.send_to_agents(agent_ids, payload)
            return len(agent_ids)
        return sum(self.remoted.send_to_agent(agent_id, payload) for agent_id in agent_ids)

    def _push(self, agent_id: int, md5: str, path: str) -> bool:
        """The rollout's pushes go to the remoted process holding the agent; False when none does."""
        if self.pushes is not None:
            if not self.pushes.holds(agent_id):
                return False
            self.pushes.push(agent_id, md5, path)
            return True
        holders = self.grace.holders(agent_id)
        if not holders and "udp" not in self.config.remote.protocols:
            return False  # not connected: the grace tracker knows every TCP connection
        # No holder known: a UDP agent (no connection to track), so every worker is asked.
        return self._require_pool().push(holders[-1] if holders else None, agent_id, md5, path)

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_INTERVAL)
            if self.remoted is not None:
                self.remoted.housekeeping()
            self.store.apply_adopted()
            self.sweeper.sweep()

    async def _take_over(self, conn: Connection, lease: ExpiredLease) -> None:
        """The leader, in the transaction that claims a dead node's lease: its agents that did not come
        back elsewhere within the grace become disconnected, code 6 (docs/cluster.md)."""
        from agentpulse.store.postgresql.takeover import disconnect_node

        rows = await disconnect_node(conn, lease.name, lease.epoch, time.time(), self.store.outbox_encoder)
        log.warning(
            "Node %s (epoch %d) is gone: %d of its agents did not reconnect elsewhere within %.0f s and "
            "are disconnected (code 6)",
            lease.name,
            lease.epoch,
            len(rows),
            self.config.remote.connection_grace,
        )

    # -- client.keys ----------------------------------------------------------------------------------

    def _stored_agents(self) -> set[int]:
        """The agents a reload removes besides those of the keys in use: with purge_removed, every agent
        global.db holds (a start that refused to purge leaves some there), else none."""
        if not self.config.database.purge_removed:
            return set()
        return {agent_id for agent_id in self.store.agents if agent_id != MANAGER_ID}

    def _refused_at_start(self, decision: ReloadDecision) -> None:
        if decision.problems:
            what = (
                f"client.keys has {decision.problems_text()}; started with its {len(self.keys)} valid "
                "entries and purged nothing; fix the file (it is reloaded when it changes)"
            )
        else:
            what = (
                f"client.keys lacks {len(decision.removed)} of the {decision.known} agents global.db has, "
                f"more than the {decision.allowed} a reload may remove at once: started with the "
                f"{len(self.keys)} agents of the file; the others stay in global.db, disconnected, NOT "
                "purged; `agentpulse keys reload --force` purges them, or restore client.keys"
            )
        self.reloads.count(decision, time.time(), what)
        log.error("%s", what)

    async def reload_keys(self, force: bool = False) -> ReloadDecision:
        """Read client.keys and apply it if the guard accepts it: the keyupdate_interval check, SIGHUP,
        and `agentpulse keys reload [--force]` (through the query socket) all come here."""
        async with self._reloading:
            while True:
                # Not while enrolment writes the file and applies its lines (`EnrolledKeys`): a read
                # taken then lacks them, and the guard would count the new agents as removed.
                checked, generation = await self.keys_watcher.load_settled()
                # Off the loop: 200,000 keys take a second. Enrolment changes the key store's lines in
                # place, so the guard judges a copy; if it enrolled meanwhile, the file is read again.
                decision = await asyncio.to_thread(
                    keyguard.decide,
                    dict(self.keys.lines),
                    checked,
                    self.reload_limits,
                    also_known=self._stored_agents(),
                    force=force,
                )
                if not self.keys_watcher.stale(generation):
                    break
            self.reloads.count(decision, time.time())
            if decision.accepted:
                await self._apply_keys(checked.keys, decision)
            else:
                self.refusals.error("keys-refused", "client.keys reload %s", decision.message())
            if self.ready.is_set():
                await asyncio.to_thread(self._write_state)
            return decision

    async def _apply_keys(self, keys: KeysFile, decision: ReloadDecision) -> None:
        change = self._load_keys(keys)
        self.store.add_agents(change.added)
        if self.pool is not None and not await self.pool.keys_applied(KEYS_APPLY_TIMEOUT):
            log.warning("client.keys reload: not every remoted worker confirmed the new keys in time")
        log.info("client.keys reload %s", decision.message())
        if self.config.database.purge_removed and decision.removed:
            ids = {key.number: key.id for key in change.gone}
            gone = [(number, ids.get(number, f"{number:03d}")) for number in decision.removed]
            task = asyncio.create_task(self._purge(gone), name="purge-removed")
            self._purges.add(task)
            task.add_done_callback(self._purges.discard)

    def _load_keys(self, keys: KeysFile) -> KeysChange:
        """Accepted keys into the key store; remoted here (or every worker, sent the same lines) lets the
        connections of removed or changed keys go, and agents gone from the file are disconnected."""
        change = self.keys.load(keys)
        if self.remoted is not None:
            self.remoted.keys_changed(change)
        else:
            assert self.pool is not None
            self.pool.book.forget([key.number for key in change.removed])
            self.pool.load_keys("".join(line + "\n" for line in self.keys.lines.values()))
            disconnect_gone(change, self.store, time.time())
        return change

    async def _purge(self, agents: list[tuple[int, str]]) -> None:
        """Agents no longer in client.keys: out of global.db (with their `<id>.db`), rids files deleted.

        Run at start and on a reload when `<database><purge_removed>` is on. Their rows leave global.db with
        a last status event (see `Store.remove_agents`), and their `<id>.db` and `queue/rids/<id>` files
        are deleted.
        """
        if not agents:
            return
        removed = self.store.remove_agents(
            [agent_id for agent_id, _ in agents], time.time(), purge_files=True
        )
        rids = [self.home.rids_file(text) for _, text in agents]
        await asyncio.to_thread(_unlink_all, rids)
        log.info("Purged %d agents removed from client.keys", len(removed))

    def _write_state(self) -> None:
        if self.remoted is None:
            assert self.pool is not None
            host = self.config.remote.local_ip or "0.0.0.0"
            addresses = " ".join(f"{host}:{self.pool.port}/{p}" for p in self.config.remote.protocols)
        else:
            addresses = " ".join(f"{host}:{port}/{proto}" for host, port, proto in self.remoted.addresses)
        reloads = self.reloads
        text = (
            f"# State file for agentpulse-remoted\npid='{os.getpid()}'\nstarted='{self._started}'\n"
            f"listen='{addresses}'\n"
            f"keys_reloads_accepted='{reloads.accepted}'\nkeys_reloads_refused='{reloads.refused}'\n"
            f"keys_last_refused='{int(reloads.last_refused_at)}'\n"
            f"keys_last_refusal='{reloads.last_refusal.replace(chr(39), chr(34))}'\n"
        )
        path = self.home.remoted_state
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)


class EnrolledKeys:
    """Enrolment's new keys (new agents, replaced ones as removed lines), on their way to remoted: this
    process's key store and remoted take them at once, and every worker process before `take()` returns
    (bounded), so an agent that has its key is accepted wherever it connects. The key reload holds off
    meanwhile (`KeysWatcher.hold()`): it must not register the new agents before enrolment does."""

    def __init__(
        self,
        keys: KeyStore,
        watcher: KeysWatcher,
        remoted: Remoted | None,
        pool: WorkerPool | None,
        store: Store,
    ) -> None:
        self.keys = keys
        self.watcher = watcher
        self.remoted = remoted
        self.pool = pool
        self.store = store

    def hold(self) -> None:
        self.watcher.hold()

    def release(self) -> None:
        self.watcher.release()

    async def take(self, lines: list[str], before: Signature, after: Signature) -> None:
        change = self.keys.apply_lines(lines)
        self.watcher.applied(before, after)
        if self.remoted is not None:
            self.remoted.keys_changed(change)
            return
        disconnect_gone(change, self.store, time.time())
        assert self.pool is not None
        await self.pool.add_keys(lines, before, after)


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
        await manager.remove_keys(ids, purge=purge)
        removed = manager.store.remove_agents(ids, time.time(), purge_files=purge)
        await asyncio.to_thread(
            _unlink_all, [manager.home.rids_file(f"{row.agent_id:03d}") for row in removed]
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
        if manager.remoted is not None:
            listeners = [f"{h}:{p}/{proto}" for h, p, proto in manager.remoted.addresses]
        else:
            assert manager.pool is not None
            host = manager.config.remote.local_ip or "0.0.0.0"
            listeners = [f"{host}:{manager.pool.port}/{proto}" for proto in manager.config.remote.protocols]
        events = manager.events
        return {
            "pid": os.getpid(),
            "started": manager._started,
            "listeners": listeners,
            "workers": manager.config.remote.worker_processes,
            "agents": len(manager.store.agents),
            "enrolment": manager.authd is not None,
            "nats": {
                "enabled": events is not None,
                "connected": bool(events is not None and events.nc.is_connected),
            },
            "outbox_depth": outbox,
            "store": {
                "commit_lag_seconds": lag,
                "flushes": manager.store.flushes,
                "write_errors": manager.store.write_errors,
            },
        }


def _remove_key_lines(path: Path, ids: list[int], purge: bool) -> tuple[list[str], Signature, Signature]:
    """Mark these agents removed in client.keys (`!name`, as manage_agents does; with purge their lines
    go), under the keys lock. The removed lines and the file's signature before and after."""
    with KeysLock(path):
        before = signature(path)
        keys = read_keys_file(path, mode=KeysRead.EDIT, missing_ok=True)
        removed = []
        for agent_id in ids:
            with contextlib.suppress(KeyError):
                removed.append(keys.remove(agent_id).line())
        if not removed:
            return [], before, before
        lines = keys.render().splitlines()
        if purge:
            gone = set(removed)
            lines = [line for line in lines if line not in gone]
        write_keys_lines(path, lines)
        return removed, before, signature(path)


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as error:
            log.warning("cannot remove %s: %s", path, error)

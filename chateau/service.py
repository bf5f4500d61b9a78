"""Wiring: build a Chateau server from a Config, as a twistd service tree."""

from __future__ import annotations

import atexit
import os
import socket
import sys
from typing import Any

from autobahn.websocket import USES_NVX
from twisted.application.service import MultiService, Service
from twisted.internet import endpoints
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import LoopingCall, deferLater
from twisted.internet.interfaces import IListeningPort
from twisted.python.failure import Failure
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from twisted.web.server import Site

from chateau.announcements import Announcer
from chateau.auth import DIRECTORY, LOCAL, Authenticator
from chateau.auth.directory import Directory
from chateau.auth.ldap import LdapChecker
from chateau.auth.local import Hasher, LocalChecker
from chateau.backplane import Backplane, NullBackplane
from chateau.catchup import CatchUp
from chateau.cluster import ClusterRefused, RedisBackplane, default_node_name
from chateau.cluster_sync import ClusterSync, load_shared
from chateau.collector import YOUNG_THRESHOLD, tune_collector
from chateau.config import Config
from chateau.delivery import Delivery
from chateau.deprovisioning import Deprovisioner
from chateau.handlers.context import Services
from chateau.handlers.dispatch import Dispatcher
from chateau.handlers import erasure
from chateau.handlers.operators import notice_appliers
from chateau.handlers.synced_groups import apply_synced_notice
from chateau.group_sync import GroupSync
from chateau.limits import AddressRates, SignInThrottle
from chateau.metrics import Metrics
from chateau.notices import NoticeWatch
from chateau.protocol import ChateauServerFactory
from chateau.registry import Registry
from chateau.session_use import TOUCH_INTERVAL, SessionUse
from chateau.receipts import ReadReceipts
from chateau.retention import RetentionPurge
from chateau.signout import SignOut
from chateau.store import Store
from chateau.store.engine import in_transaction, make_engine, pool_size_for, redacted_url
from chateau.web import make_site


# Seconds clients get to answer the closing handshake on shutdown.
SHUTDOWN_GRACE = 3.0


class ThreadPoolService(Service):
    """Starts a ThreadPool with the application and stops it on shutdown."""

    def __init__(self, pool: ThreadPool) -> None:
        self.pool = pool

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> None:
        super().stopService()
        self.pool.stop()


class Chateau(MultiService):
    """The whole server: thread pools first, then the listeners once the DB is ready.

    ``ready`` fires when every endpoint listens; ``ports`` are the listening ports.
    """

    _log = Logger()

    def __init__(
        self, config: Config, reactor: Any, exit_on_failure: bool = False,
        own_process: bool = False,
    ) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor
        self._exit_on_failure = exit_on_failure
        # Whether process-wide settings (the garbage collector) are ours to set.
        self._own_process = own_process
        self.engine = make_engine(config.database.url)
        db_pool = ThreadPool(
            minthreads=1,
            maxthreads=pool_size_for(config.database.url, config.database.threads),
            name="chateau-db",
        )
        hash_pool = ThreadPool(
            minthreads=1, maxthreads=config.auth.bcrypt_threads, name="chateau-bcrypt"
        )
        # Messages are committed by one writer thread, in batches.
        writer_pool = ThreadPool(minthreads=1, maxthreads=1, name="chateau-db-writer")
        self.pools = [db_pool, writer_pool, hash_pool]
        for pool in self.pools:
            ThreadPoolService(pool).setServiceParent(self)
        self.metrics = Metrics()
        cluster = config.cluster
        # In a cluster each node has a name, which its messages record.
        self.node: str | None = None
        if cluster.redis_url:
            self.node = cluster.node_name or default_node_name(config.server.listen)
        self.store = Store(
            reactor, self.engine, db_pool, writer_pool, observe=self.metrics.time_db_call,
            origin=self.node,
        )
        checkers = {}
        reserved = None
        ldap_checker: LdapChecker | None = None
        directory: Directory | None = None
        ldap_pool: ThreadPool | None = None
        if DIRECTORY in config.auth.methods:
            # ldap3 blocks: directory sign-ins get a bounded pool of their own.
            ldap_pool = ThreadPool(
                minthreads=0, maxthreads=config.ldap.threads, name="chateau-ldap"
            )
            self.pools.append(ldap_pool)
            ThreadPoolService(ldap_pool).setServiceParent(self)
            directory = Directory(config.ldap)
            ldap_checker = LdapChecker(
                self.store, directory, reactor, ldap_pool,
                rename_hold_days=config.ldap.rename_hold_days,
            )
            checkers[DIRECTORY] = ldap_checker
            reserved = ldap_checker.is_reserved
            self._log.info(
                "directory sign-in via {urls} ({mode}), timeout {timeout} s",
                urls=" ".join(directory.urls), mode=directory.mode,
                timeout=config.ldap.timeout,
            )
        limits = config.limits
        signups = AddressRates(
            limits.signups_per_hour_per_address / 3600.0, limits.signups_per_hour_per_address,
            reactor.seconds,
            entries=limits.signin_throttle_entries,
        )
        successes = AddressRates(
            limits.signins_per_minute_per_address / 60.0, limits.signins_per_minute_per_address,
            reactor.seconds,
            entries=limits.signin_throttle_entries,
        )
        self._hasher: Hasher | None = None
        if LOCAL in config.auth.methods:
            self._hasher = Hasher(
                reactor, hash_pool, config.auth.bcrypt_cost, config.auth.signin_timeout
            )
            checkers[LOCAL] = LocalChecker(
                self.store, self._hasher, config.auth.registration, reserved=reserved,
                signups=signups,
            )
        throttle = SignInThrottle(
            reactor.seconds, free=config.limits.signin_free_failures,
            cap=config.limits.signin_max_delay,
            entries=config.limits.signin_throttle_entries,
        )
        self.authenticator = Authenticator(
            checkers, config.auth.max_pending_signins, throttle=throttle, successes=successes
        )
        # The chat itself, each part built with what it uses (docs/architecture.md).
        self.registry = registry = Registry()
        self.backplane: Backplane = NullBackplane()
        if self.node is not None:
            self.backplane = RedisBackplane(
                reactor, registry, self.metrics, self.node, cluster.redis_url,
                cluster.presence_ttl, cluster.fence_timeout,
                ca_file=cluster.redis_ca_file, cert_file=cluster.redis_cert_file,
                key_file=cluster.redis_key_file,
                # A generous bound: no client can take a frame past max_message_size.
                max_payload=4 * config.server.max_message_size,
            )
        self.delivery = Delivery(registry, self.backplane)
        self.catch_up = CatchUp(config, registry, self.store, self.delivery, self.backplane)
        ClusterSync(registry, self.store, self.delivery, self.catch_up, self.backplane)
        # Re-checks directory accounts and deprovisions those the directory
        # no longer lets in (docs/ldap.md, Deprovisioning).
        self.deprovisioner: Deprovisioner | None = None
        if ldap_checker is not None:
            self.deprovisioner = Deprovisioner(
                config.ldap, self.store, ldap_checker.account_status, self.metrics,
                registry.local_users, reactor,
            )
        self.receipts = ReadReceipts(self.delivery, reactor)
        self.context = Services(
            config=config, registry=registry, store=self.store, auth=self.authenticator,
            delivery=self.delivery, catch_up=self.catch_up, metrics=self.metrics,
            announcer=Announcer(registry, self.store, self.delivery),
            receipts=self.receipts,
            directory_has=reserved,
            directory_recheck=(
                self.deprovisioner.recheck_on_resume if self.deprovisioner else None
            ),
        )
        self.factory = ChateauServerFactory(
            Dispatcher(self.context), config, self.metrics, reactor=reactor
        )
        self.metrics.watch(
            connections=lambda: len(self.factory.connections),
            online=registry.online_count,
            pools=self.pools,
        )
        self.site: Site = make_site(
            self.factory, self.store, registry, self.backplane, self.metrics
        )
        # Saves online users' delivery cursors and closes disabled accounts.
        self._account_check = LoopingCall(self.catch_up.check_accounts)
        self._account_check.clock = reactor
        # Closes the connections of revoked session keys (chateau-admin).
        self.sign_out = SignOut(registry, self.store)
        self._revocation_check = LoopingCall(self.sign_out.check)
        self._revocation_check.clock = reactor
        # Marks the session keys in use here used, every few minutes.
        self.session_use = SessionUse(registry, self.store)
        self._session_touch = LoopingCall(self.session_use.touch)
        self._session_touch.clock = reactor
        # Applies what chateau-admin (or another node) changed for every node:
        # announcements, messages and groups deleted by an operator, erased accounts.
        context = self.context
        self.notices = NoticeWatch(self.store, {
            **notice_appliers(context),
            **erasure.notice_appliers(context),
            # What chateau-admin ldap-sync changed (chateau.handlers.synced_groups).
            "group_synced": lambda body: apply_synced_notice(context, body),
        })
        self._notice_check = LoopingCall(self.notices.check)
        self._notice_check.clock = reactor
        # Directory groups become chat groups ([ldap] sync_base; chateau.group_sync).
        self.group_sync: GroupSync | None = None
        if config.ldap.sync_base and directory is not None and ldap_pool is not None:
            self.group_sync = GroupSync(
                self.context, directory, reactor, ldap_pool,
                self.node or default_node_name(config.server.listen),
            )
        elif config.ldap.sync_base:
            self._log.warn(
                "[ldap] sync_base is set but directory sign-in is off ([auth] methods has no "
                "ldap): directory groups are not synced"
            )
        # Deletes messages past their chat's retention and old audit rows,
        # daily, on one node of a cluster at a time (chateau.retention).
        self.retention = RetentionPurge(
            config.chat, self.store, reactor, self.node or socket.gethostname()
        )
        self.ports: list[IListeningPort] = []
        self.ready: Deferred[None] = Deferred()

    def startService(self) -> None:
        super().startService()
        self._log.info(
            "Chateau starting: database {db}, sign-in methods {methods}",
            db=redacted_url(self.config.database.url),
            methods=",".join(self.config.auth.methods),
        )
        if USES_NVX:
            self._log.info(
                "Autobahn NVX acceleration is on: UTF-8 validation and unmasking run in native code"
            )
        else:
            self._log.warn(
                "Autobahn NVX acceleration is off: UTF-8 validation and unmasking run in pure "
                "Python, several times slower; install autobahn with its native extension"
            )
        self.ready = ensureDeferred(self._start())
        if self._exit_on_failure:
            self.ready.addErrback(self._start_failed)

    async def _warn_of_name_collisions(self) -> None:
        """Tell the operator of existing names that look like older ones (never renamed)."""
        collisions = await self.store.accounts.name_collisions()
        if collisions:
            self._log.warn(
                "{count} existing name(s) look like older ones and keep working, but may "
                "mislead: {pairs}; list them with `chateau-admin names collisions`",
                count=len(collisions),
                pairs=", ".join(f"{c.name!r} ~ {c.confusable_with!r}" for c in collisions[:10]),
            )

    async def _start(self) -> None:
        # The hash missing accounts are checked against is made on the hashing
        # pool while the database is prepared, and is ready when the node is.
        dummy_hash = self._hasher.prepare() if self._hasher is not None else None
        await self.store.prepare_schema()
        await self._warn_of_name_collisions()
        # Before the groups are read: a group deleted meanwhile is deleted again.
        await self.notices.start()
        await load_shared(self.store, self.registry)
        if self.node is not None:
            await self.store.cursors.register_node(self.node)
        self.delivery.last_routed_id = await self.store.messages.last_message_id(
            self.catch_up.own_origin
        )
        if dummy_hash is not None:
            await dummy_hash
        self._account_check.start(self.config.chat.account_check_interval, now=False)
        await self.sign_out.start()
        self._revocation_check.start(self.config.chat.revocation_check_interval, now=False)
        self._notice_check.start(self.config.chat.revocation_check_interval, now=False)
        if self.deprovisioner is not None:
            self.deprovisioner.start()
        if self.group_sync is not None:
            self.group_sync.start()
        self._session_touch.start(TOUCH_INTERVAL, now=False)
        self.retention.start()
        if isinstance(self.backplane, RedisBackplane):
            # Not a child service: it must start after the chat and stop
            # before the database goes.
            self.backplane.startService()
            self._log.info(
                "cluster node {node}: Redis at {url}, presence TTL {ttl} s",
                node=self.node, url=self.backplane.address.display,
                ttl=self.config.cluster.presence_ttl,
            )
            # A refusal (wrong password, untrusted certificate) stops start-up here.
            await self.backplane.first_contact()
        for description in self.config.server.listen:
            endpoint = endpoints.serverFromString(self.reactor, description)
            port = await endpoint.listen(self.site)
            self.ports.append(port)
            self._log.info(
                "Chateau listening on {endpoint} ({address})",
                endpoint=description, address=port.getHost(),
            )
        if self._own_process:
            frozen = tune_collector()
            self._log.info(
                "garbage collector: {frozen} start-up objects frozen, young threshold {young}",
                frozen=frozen, young=YOUNG_THRESHOLD,
            )

    def _start_failed(self, failure: Failure) -> None:
        if failure.check(ClusterRefused):
            # A configuration error, said in one line: no traceback to read.
            self._log.critical("Chateau could not start: {error}; stopping",
                               error=failure.getErrorMessage())
        else:
            self._log.failure("Chateau could not start; stopping", failure)
        if self._own_process:
            # twistd exits 0 whatever happened; a service manager must see a
            # failed start. This runs once twistd is done (its pid file gone).
            atexit.register(_exit_failed)
        self.reactor.stop()

    async def _stop(self) -> None:
        """Stop taking connections, say goodbye (1001), commit what is pending, then stop."""
        if self._account_check.running:
            self._account_check.stop()
        if self._revocation_check.running:
            self._revocation_check.stop()
        if self._notice_check.running:
            self._notice_check.stop()
        if self.deprovisioner is not None:
            self.deprovisioner.stop()
        if self.group_sync is not None:
            self.group_sync.stop()
        if self._session_touch.running:
            self._session_touch.stop()
        retention_stopped = self.retention.stop()
        self.receipts.stop()
        ports, self.ports = self.ports, []
        for port in ports:
            await port.stopListening()
        closing = self.factory.close_all()
        if closing:
            self._log.info("closing {count} connections", count=closing)
        await self.store.writer.drain()
        # A purge in progress ends after its current batch.
        await retention_stopped
        deadline = self.reactor.seconds() + SHUTDOWN_GRACE
        while self.factory.connections and self.reactor.seconds() < deadline:
            await deferLater(self.reactor, 0.05, lambda: None)
        for connection in list(self.factory.connections):
            connection.transport.abortConnection()
        if isinstance(self.backplane, RedisBackplane) and self.backplane.running:
            await self.backplane.stopService()
        await super().stopService()
        self.engine.dispose()

    def stopService(self) -> Deferred[None]:
        return ensureDeferred(self._stop())


def prepare_database(url: str) -> None:
    """Check the database and create the schema, before the reactor runs.

    This runs once in ``makeService``, before any listener exists, so that a
    wrong URL or an unreachable server stops start-up with one clear line
    instead of a server that accepts connections it cannot serve.
    """
    from chateau.store.migrate import SchemaOutOfDate, prepare

    shown = redacted_url(url)
    engine = make_engine(url)
    try:
        in_transaction(engine, prepare)
    except SchemaOutOfDate as exc:
        raise SystemExit(f"chateau: database {shown}: {exc}") from None
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SystemExit(f"chateau: cannot use the database {shown}: {reason}") from None
    finally:
        engine.dispose()


def _exit_failed() -> None:
    """End the process with status 1 after a failed start (see _start_failed)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)

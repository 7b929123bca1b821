"""Connecting to NATS and provisioning the streams, checking that the server echoes what was asked."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import timedelta

import nats
import nats.errors
from nats.aio.client import Client as NATS
from nats.js.api import (
    ConsumerConfig,
    ConsumerInfo,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    StreamInfo,
)
from nats.js.client import JetStreamContext
from nats.js.errors import APIError, NotFoundError

from ordo.infra import subjects as sj
from ordo.infra.raw_client import RawClient
from ordo.infra.settings import Settings
from ordo.infra.tasks import cancel_and_wait

MIN_SERVER = (2, 14)
log = logging.getLogger("ordo.nats")


class ProvisioningError(RuntimeError):
    """The NATS server is too old or did not apply a stream setting Ordo relies on."""


# Errors that mean "the connection is gone" (nats-py reports them before it starts reconnecting).
_CONNECTION_LOST = (OSError, nats.errors.UnexpectedEOF, nats.errors.StaleConnectionError)


class ConnectionLog:
    """nats-py's connection callbacks, logged once per outage.

    nats-py's default error callback logs a traceback for every failed reconnect attempt (one each
    `reconnect_time_wait`, for as long as the server is away). Here an outage is one warning when
    the connection is lost and one when it is back, with how long it took; the errors in between
    go to debug. An error outside an outage (a permission refused, a slow consumer) is one line.
    """

    def __init__(self, name: str, logger: logging.Logger = log) -> None:
        self._name = name
        self._log = logger
        self._down_since: float | None = None
        self._client: NATS | None = None

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def _lost(self, reason: str) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            self._log.warning("%s: NATS connection lost (%s); reconnecting", self._name, reason)

    async def error(self, exc: Exception) -> None:
        if self._down_since is not None:
            self._log.debug("%s: NATS still unreachable: %r", self._name, exc)
        elif isinstance(exc, _CONNECTION_LOST):
            self._lost(repr(exc))
        else:
            self._log.warning("%s: NATS error: %r", self._name, exc)

    def attach(self, client: NATS) -> None:
        self._client = client

    async def disconnected(self) -> None:
        if self._client is not None and self._client.is_closed:
            return  # closed on purpose (close/drain), not an outage
        self._lost("disconnected")

    async def reconnected(self) -> None:
        since, self._down_since = self._down_since, None
        took = f" after {time.monotonic() - since:.1f}s" if since is not None else ""
        self._log.warning("%s: NATS connection back%s", self._name, took)


async def connect(settings: Settings, name: str) -> NATS:
    """Connect with unbounded reconnects; raises if the first connection fails.

    The client never gives up reconnecting (`max_reconnect_attempts=-1`): a restarted server, or
    another node of the cluster, is found again however long it was away. Publishes made during
    an outage wait in the client's buffer and fail on their own timeouts.
    """
    outages = ConnectionLog(name)
    nc = RawClient()  # nats-py's client; the projector's log reader takes its messages unparsed
    refused = asyncio.Event()

    async def on_error(exc: Exception) -> None:
        if not refused.is_set() and _refuses_credentials(exc):
            refused.set()  # before the first connection: a wrong user or password, not an outage
        if "permissions violation" in str(exc).lower():
            nc.refused = str(exc)
        await outages.error(exc)

    connecting = asyncio.ensure_future(
        nc.connect(
            servers=[u.strip() for u in settings.nats_url.split(",") if u.strip()],
            name=name,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,  # type: ignore[arg-type]  # nats-py takes seconds as a float
            connect_timeout=5,
            allow_reconnect=True,
            user=settings.nats_user or None,
            password=settings.nats_password or None,
            error_cb=on_error,
            disconnected_cb=outages.disconnected,
            reconnected_cb=outages.reconnected,
        )
    )
    refusal = asyncio.ensure_future(refused.wait())
    try:
        await asyncio.wait({connecting, refusal}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # the caller stopped (cancelled) while connecting: so does the connect
        connecting.cancel()
        raise
    finally:
        refusal.cancel()
    if not connecting.done():  # nats-py would try again forever, logging the refusal each time
        await cancel_and_wait(connecting)
        with contextlib.suppress(Exception):
            await nc.close()
        who = f"user {settings.nats_user!r}" if settings.nats_user else "a connection without a user"
        raise ProvisioningError(
            f"NATS at {settings.nats_url} refuses {who}: check ORDO_NATS_USER and ORDO_NATS_PASSWORD"
            " (`ordo up` keeps its users' passwords in <data-dir>/nats-users.json)"
        )
    connecting.result()
    outages.attach(nc)
    version = nc.connected_server_version
    if (version.major, version.minor) < MIN_SERVER:
        await nc.close()
        raise ProvisioningError(f"nats-server {version.major}.{version.minor} is too old: Ordo needs >= 2.14")
    return nc


def _refuses_credentials(exc: Exception) -> bool:
    return isinstance(exc, nats.errors.AuthorizationError) or "authorization violation" in str(exc).lower()


async def disconnect(nc: NATS) -> None:
    """Drain the connection (pending publishes flushed, subscriptions ended), or close it at once
    when it cannot drain: a process stopping while NATS is away must still stop cleanly."""
    try:
        await nc.drain()
    except nats.errors.Error as exc:
        log.info("NATS connection closed without draining: %s", exc)
        await nc.close()


def events_stream_config(settings: Settings) -> StreamConfig:
    return StreamConfig(
        name=sj.EVENTS_STREAM,
        description="Ordo task event log and dispatch tickets",
        subjects=list(sj.EVENTS_SUBJECTS),
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        num_replicas=settings.replicas,
        duplicate_window=settings.duplicate_window_s,
        deny_delete=True,
        deny_purge=True,
        allow_direct=True,
        allow_atomic=True,
    )


def timers_stream_config(settings: Settings) -> StreamConfig:
    """No max age: a pending timer (the schedule message) must outlive any delay, a `@yearly` tick
    included. Fired timers expire by their per-message TTL (`Nats-Schedule-TTL`, infra/timers.py).
    Provisioning updates a stream of an older version (max_age 30 days) in place."""
    return StreamConfig(
        name=sj.TIMERS_STREAM,
        description="Ordo durable timers (message schedules) and their fired messages",
        subjects=list(sj.TIMERS_SUBJECTS),
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        num_replicas=settings.replicas,
        duplicate_window=settings.duplicate_window_s,
        allow_msg_schedules=True,
        allow_msg_ttl=True,
        allow_rollup_hdrs=True,
        allow_direct=True,
        max_age=0,
    )


def workers_stream_config(settings: Settings) -> StreamConfig:
    """Worker heartbeats: the last one of each worker, kept a day after it went quiet."""
    return StreamConfig(
        name=sj.WORKERS_STREAM,
        description="Ordo worker registry: the last heartbeat of each worker",
        subjects=list(sj.WORKERS_SUBJECTS),
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        num_replicas=settings.replicas,
        max_msgs_per_subject=1,
        max_age=timedelta(days=1).total_seconds(),
        allow_direct=True,
    )


_CHECKED = (
    "allow_atomic",
    "allow_direct",
    "deny_delete",
    "deny_purge",
    "allow_msg_schedules",
    "allow_msg_ttl",
)


async def wait_for_jetstream(nc: NATS, timeout: float = 60.0) -> None:
    """Wait until JetStream answers (a new cluster elects its meta leader first)."""
    js = nc.jetstream(timeout=2.0)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            await js.account_info()
            return
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError, APIError) as exc:
            if loop.time() > deadline:
                raise ProvisioningError(f"JetStream unavailable after {timeout:g}s: {exc}") from exc
            await asyncio.sleep(0.25)


# JetStream API errors that mean "not now" rather than "no": a cluster still electing or still
# learning its peers (10005 no suitable peers, 10008 cluster not available), a busy meta leader.
_TRANSIENT_ERR_CODES = frozenset({10005, 10008, 10058})


def is_transient(exc: Exception) -> bool:
    """Whether a JetStream API failure is worth retrying (a race or a busy or forming cluster)."""
    if isinstance(exc, (nats.errors.TimeoutError, nats.errors.NoRespondersError)):
        return True
    if isinstance(exc, APIError):
        return exc.code in (None, 500, 503) or exc.err_code in _TRANSIENT_ERR_CODES
    return False


async def _ensure_stream(js: JetStreamContext, wanted: StreamConfig, timeout: float = 60.0) -> StreamInfo:
    """Create or update one stream; several processes starting together on a new cluster race to
    create it and an R3 create can time out while the cluster is busy, so retry until `timeout`."""
    assert wanted.name is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    if isinstance(js._nc, RawClient):
        js._nc.refused = None  # only a refusal of this call's requests counts below
    while True:
        try:
            try:
                await js.stream_info(wanted.name)
            except NotFoundError:
                return await js.add_stream(wanted)
            return await js.update_stream(wanted)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError, APIError) as exc:
            if not is_transient(exc):
                raise  # a real refusal (bad config), not a race or a busy cluster
            refused = getattr(js._nc, "refused", None)
            if refused and "$js.api.stream" in refused.lower():  # not a busy server: this user may not
                raise ProvisioningError(
                    f"stream {wanted.name}: the NATS server refuses this user ({refused}); creating or"
                    " updating a stream needs the `admin` user (ORDO_NATS_USER=admin)"
                ) from exc
            if loop.time() > deadline:
                raise ProvisioningError(f"stream {wanted.name}: {exc}") from exc
            log.info("stream %s not ready yet (%s); retrying", wanted.name, exc)
            await asyncio.sleep(0.5)


async def ensure_consumer(
    js: JetStreamContext, stream: str, config: ConsumerConfig, timeout: float = 60.0
) -> ConsumerInfo:
    """Create (or update in place) a durable consumer, retrying while the cluster is not ready.

    A durable that exists with a config the server will not update is kept as it is, with a
    warning; any other refusal is raised, so a caller never binds to a consumer that is not there.
    """
    name = config.durable_name or config.name
    assert name is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await js.add_consumer(stream, config=config)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError, APIError) as exc:
            if not is_transient(exc):
                try:
                    info: ConsumerInfo = await js.consumer_info(stream, name)
                except NotFoundError:
                    raise exc from None
                log.warning("consumer %s kept its existing config: %s", name, exc)
                return info
            if loop.time() > deadline:
                raise ProvisioningError(f"consumer {stream}/{name}: {exc}") from exc
            log.info("consumer %s not ready yet (%s); retrying", name, exc)
            await asyncio.sleep(0.5)


async def _existing_stream(js: JetStreamContext, name: str, timeout: float = 60.0) -> StreamInfo:
    """Wait for a stream that another process provisions (a worker may not create streams)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await js.stream_info(name)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError, APIError) as exc:
            if not isinstance(exc, NotFoundError) and not is_transient(exc):
                raise
            if loop.time() > deadline:
                raise ProvisioningError(f"stream {name} was not provisioned within {timeout:g}s") from exc
            log.info("waiting for stream %s to be provisioned (%s)", name, exc)
            await asyncio.sleep(0.5)


def _unapplied(wanted: StreamConfig, info: StreamInfo) -> list[str]:
    return [f for f in _CHECKED if getattr(wanted, f) and getattr(info.config, f) != getattr(wanted, f)]


async def _upgraded(
    js: JetStreamContext, wanted: StreamConfig, info: StreamInfo, timeout: float = 60.0
) -> StreamInfo:
    """A stream that a process of an older version provisioned is updated by the first managing
    process of this one (e.g. ORDO_TIMERS gains message TTLs): a worker waits for that."""
    assert wanted.name is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while _unapplied(wanted, info) and loop.time() < deadline:
        log.info("waiting for stream %s to be updated (%s)", wanted.name, ", ".join(_unapplied(wanted, info)))
        await asyncio.sleep(0.5)
        info = await _existing_stream(js, wanted.name)
    return info


async def provision(nc: NATS, settings: Settings, manage: bool = True) -> None:
    """Create or update the streams (idempotent) and verify the server applied every flag.

    With `manage=False` (a worker, whose NATS user may not change streams) only wait for them to
    exist and verify them."""
    await wait_for_jetstream(nc)
    js = nc.jetstream()
    for wanted in (
        events_stream_config(settings),
        timers_stream_config(settings),
        workers_stream_config(settings),
    ):
        assert wanted.name is not None
        info = await _ensure_stream(js, wanted) if manage else await _existing_stream(js, wanted.name)
        if not manage:
            info = await _upgraded(js, wanted, info)
        for flag in _CHECKED:
            asked = getattr(wanted, flag)
            if asked and getattr(info.config, flag) != asked:
                raise ProvisioningError(f"stream {wanted.name}: the server ignored {flag}={asked}")
        if info.config.num_replicas != wanted.num_replicas:
            raise ProvisioningError(f"stream {wanted.name}: replicas {info.config.num_replicas}")

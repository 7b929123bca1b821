"""NATS users with least privilege: every service runs on its own user and nothing is refused; a
worker cannot submit, forge other events or change a stream; an app user sees only its tenant."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import msgspec
import nats
import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from ordo.domain.commands import SubmitTask
from ordo.embedded.nats import EmbeddedNats, NatsServerConfig
from ordo.embedded.nats_auth import SERVICES, app_inbox_prefix, app_user_name, render_authorization, users_for
from ordo.embedded.processes import free_port
from ordo.infra import subjects as sj
from ordo.infra import wiring
from ordo.infra.command_handler import CommandHandler
from ordo.infra.event_store import EventStore
from ordo.infra.ids import new_task_id
from ordo.infra.nats_conn import ProvisioningError, connect, provision
from ordo.infra.settings import Settings
from ordo.infra.timers import Timers
from ordo.projections.runner import ProjectionRunner
from ordo.workers.limits import lane_for
from ordo.workers.scheduler import Scheduler
from tests.conftest import uvicorn_gateway
from tests.helpers import eventually

TENANT = "perm"
OTHER = "other"
PASSWORDS = {name: f"pw-{name}-{uuid.uuid4().hex[:6]}" for name in (*SERVICES, app_user_name(TENANT))}


@pytest.fixture
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """This module's server has the users of `ordo up` (the conftest one has none)."""
    auth = render_authorization(users_for(PASSWORDS, TENANT))
    server = EmbeddedNats(NatsServerConfig(data_dir=tmp_path_factory.mktemp("nats"), authorization=auth))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The conftest settings on this module's server: its tenant, connecting as `admin`."""
    return settings.with_(tenant=TENANT, nats_user="admin", nats_password=PASSWORDS["admin"])


@pytest.fixture
async def provisioned(settings: Settings) -> None:
    admin = await connect(settings, name="perm-admin")
    await provision(admin, settings)
    await admin.close()


def _as(settings: Settings, user: str) -> Settings:
    return settings.with_(nats_user=user, nats_password=PASSWORDS[user])


def _violations(server: EmbeddedNats) -> list[str]:
    return [line for line in server.logfile.read_text().splitlines() if "Violation" in line]


class Errors:
    """The asynchronous errors a connection received (permission violations arrive this way)."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def record(self, exc: Exception) -> None:
        self.seen.append(str(exc))

    def violated(self, subject: str) -> bool:
        return any("permissions violation" in e.lower() and subject in e for e in self.seen)


async def _raw(url: str, user: str, errors: Errors, **kw: Any) -> NATS:
    return await nats.connect(
        url, user=user, password=PASSWORDS[user], error_cb=errors.record, allow_reconnect=False, **kw
    )


@contextlib.asynccontextmanager
async def _services(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """Gateway, scheduler, projector and a worker, each connected as its own NATS user."""
    from ordo.workers.demo import registry
    from ordo.workers.runtime import Worker

    conns: list[NATS] = []

    async def conn(user: str) -> NATS:
        c = await connect(_as(settings, user), name=f"perm-{user}")
        conns.append(c)
        return c

    def handler_on(c: NATS) -> CommandHandler:
        return CommandHandler(EventStore(c), Timers(c, settings.timer_lead_s))

    worker_nc, sched_nc, proj_nc = await conn("worker"), await conn("scheduler"), await conn("projector")
    await provision(worker_nc, _as(settings, "worker"), manage=False)
    # The worker's handler as `ordo worker` wires it: it listens to the read model's position.
    paced = wiring.command_handler(worker_nc, _as(settings, "worker"), batch_submits=False, worker=True)
    assert paced.pace is not None
    worker = Worker(worker_nc, paced, registry, _as(settings, "worker"))
    scheduler = Scheduler(sched_nc, handler_on(sched_nc))
    projector = ProjectionRunner(proj_nc, settings.database_url)
    port = free_port()
    server = uvicorn_gateway(_as(settings, "gateway"), port)
    tasks = [asyncio.create_task(x) for x in (worker.run(), scheduler.run(), projector.run(), server.serve())]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:

            async def ready() -> bool:
                with contextlib.suppress(httpx.HTTPError):
                    return (await http.get("/readyz")).status_code == 200
                return False

            await eventually(ready, timeout=60, what="gateway ready")
            yield http
    finally:
        server.should_exit = True
        await projector.shutdown()
        await scheduler.shutdown()
        await worker.shutdown()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
        for c in conns:
            await c.close()


async def _status(http: httpx.AsyncClient, task_id: str) -> str:
    r = await http.get(f"/v1/tasks/{task_id}")
    return str(r.json().get("status")) if r.status_code == 200 else ""


async def test_every_service_runs_on_its_own_user_and_nothing_is_refused(
    settings: Settings, nats_server: EmbeddedNats, provisioned: None
) -> None:
    async with _services(settings) as http:
        want = {}
        for body, final in (
            ({"type": "demo.echo", "payload": 1}, "succeeded"),
            ({"type": "demo.flaky", "payload": {"fail_times": 1}}, "succeeded"),  # retry timer
            ({"type": "demo.echo", "delay": 1}, "succeeded"),  # durable timer, scheduler enqueues
            ({"type": "demo.sleep", "payload": {"seconds": 30}}, "cancelled"),
        ):
            r = await http.post("/v1/tasks", json=body)
            assert r.status_code == 202, r.text
            want[r.json()["id"]] = final
        # Another service of the tenant submits over the NATS API, on its own user and inbox prefix.
        errors = Errors()
        app = await _raw(
            settings.nats_url, app_user_name(TENANT), errors, inbox_prefix=app_inbox_prefix(TENANT)
        )
        reply = await app.request(sj.cmd_subject(TENANT, "submit"), b'{"type": "demo.echo"}', timeout=10)
        assert reply.headers and reply.headers[sj.REPLY_STATUS] == "202", reply.data
        want[json.loads(reply.data)["id"]] = "succeeded"
        await app.close()
        assert errors.seen == []
        sleeper = next(t for t, f in want.items() if f == "cancelled")
        await eventually(
            lambda: _is(http, sleeper, "running"), timeout=30, what="sleep task running on the worker"
        )
        assert (await http.post(f"/v1/tasks/{sleeper}:cancel")).status_code in (200, 202)

        async def all_final() -> bool:
            return all([await _status(http, t) == f for t, f in want.items()])

        await eventually(all_final, timeout=60, what=f"every task final in the read model: {want}")
        workers = (await http.get("/v1/workers")).json()
        assert workers["items"], "the worker's heartbeat reached the registry"
    assert _violations(nats_server) == []


async def _is(http: httpx.AsyncClient, task_id: str, status: str) -> bool:
    return await _status(http, task_id) == status


async def test_a_worker_cannot_submit_forge_events_or_change_streams(
    settings: Settings, nats_server: EmbeddedNats, provisioned: None
) -> None:
    errors = Errors()
    wk = await _raw(settings.nats_url, "worker", errors)
    try:
        js = wk.jetstream(timeout=1.0)
        for subject in (
            sj.event_subject(TENANT, "default", "forged", "submitted"),
            sj.event_subject(TENANT, "default", "forged", "cancel_requested"),
            sj.schedule_event_subject(TENANT, "s1", "created"),
            sj.cmd_subject(TENANT, "submit"),
        ):
            with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
                await js.publish(subject, b"{}")
            await eventually(partial(_violated, errors, subject), timeout=5, what=f"refused {subject}")
        with pytest.raises(nats.errors.TimeoutError):
            await js.add_stream(StreamConfig(name="EVIL", subjects=["evil.>"]))
        with pytest.raises(nats.errors.TimeoutError):
            await js.purge_stream(sj.EVENTS_STREAM)
        await wk.subscribe(sj.all_events_filter())
        await eventually(
            lambda: _true(errors.violated(sj.all_events_filter())), timeout=5, what="sub refused"
        )
    finally:
        await wk.close()


async def test_raw_succeeded_events_from_the_worker_user_do_not_complete_a_task(
    settings: Settings, nats_server: EmbeddedNats, provisioned: None
) -> None:
    """F8: the worker user may publish attempt events, without the decider or OCC. Two raw
    `succeeded` on a scheduled task are stored, but fold as nothing: the task stays scheduled in
    the read model and in the log's own fold (domain.state.accepts)."""
    async with _services(settings) as http:
        r = await http.post("/v1/tasks", json={"type": "demo.echo", "delay": 3600})
        assert r.status_code == 202, r.text
        task_id = r.json()["id"]
        errors = Errors()
        wk = await _raw(settings.nats_url, "worker", errors)
        try:
            js = wk.jetstream(timeout=5.0)
            forged = b'{"event":"succeeded","attempt":7,"result":{"forged":1}}'
            subject = sj.event_subject(TENANT, "default", task_id, "succeeded")
            await js.publish(subject, forged)
            last = (await js.publish(subject, forged)).seq
        finally:
            await wk.close()
        assert errors.seen == []
        r = await http.get(f"/v1/tasks/{task_id}", params={"min_seq": last, "consistency": "wait"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["status"], body["attempts"], body.get("result")) == ("scheduled", 0, None)
        folded = (await http.get(f"/v1/tasks/{task_id}", params={"as_of_seq": last})).json()
        assert folded["status"] == "scheduled"
        # Cancelling it still works: the forged events did not make it terminal.
        assert (await http.post(f"/v1/tasks/{task_id}:cancel")).status_code in (200, 202)


async def test_no_reply_subject_or_worker_junk_writes_into_a_task_or_breaks_it(
    settings: Settings, nats_server: EmbeddedNats, provisioned: None
) -> None:
    """A tenant's pass (2026-12-06): the gateway answered a command request on whatever reply
    subject it named, with its own rights, so an app user with no API key stored a 401 on another
    task's event subject. Such a message, or junk the worker user publishes on an attempt event's
    subject, then broke the task for good: its every command answered 500 and its timer never
    fired. The gateway now answers only on inboxes, and a task's load leaves out what is not an
    event."""
    async with _services(settings) as http:
        r = await http.post("/v1/tasks", json={"type": "demo.echo", "payload": 5, "delay": 3})
        assert r.status_code == 202, r.text
        task_id = r.json()["id"]
        target = sj.event_subject(TENANT, "default", task_id, "progressed")
        errors = Errors()
        app = await _raw(
            settings.nats_url, app_user_name(TENANT), errors, inbox_prefix=app_inbox_prefix(TENANT)
        )
        wk = await _raw(settings.nats_url, "worker", errors)
        admin = await connect(settings, name="perm-admin")
        try:
            await app.publish(sj.cmd_subject(TENANT, "get"), b"{}", reply=target)
            # Served in order: once a later request is answered, the one before was seen.
            answer = await app.request(sj.cmd_subject(TENANT, "get"), b"{}", timeout=10)
            assert answer.headers and answer.headers[sj.REPLY_STATUS] == "422", answer.data  # no id
            info = await admin.jetstream().stream_info(sj.EVENTS_STREAM, subjects_filter=target)
            assert not info.state.subjects, "a reply was stored on the task's event subject"
            junk = await wk.jetstream(timeout=5.0).publish(target, b'{"not": "an event"}')
        finally:
            for c in (app, wk, admin):
                await c.close()
        assert errors.seen == []
        # The task still runs when due (its timer loads it) and answers reads at the junk's seq.
        await eventually(lambda: _is(http, task_id, "succeeded"), timeout=30, what="the task ran")
        folded = await http.get(f"/v1/tasks/{task_id}", params={"as_of_seq": junk.seq})
        assert folded.status_code == 200 and folded.json()["status"] == "scheduled", folded.text
        assert (await http.post(f"/v1/tasks/{task_id}:archive")).status_code in (200, 202)


async def test_a_paused_queue_holds_and_releases_tickets_on_the_worker_user(
    settings: Settings, nats_server: EmbeddedNats, provisioned: None
) -> None:
    """The worker follows queue pauses, holds and puts back tickets with its own permissions."""
    admin = await connect(settings, name="perm-admin")
    try:
        async with _services(settings) as http:
            assert (await http.post("/v1/queues/default:pause")).status_code == 202
            task_id = (await http.post("/v1/tasks", json={"type": "demo.echo"})).json()["id"]

            async def held() -> bool:
                with contextlib.suppress(nats.js.errors.NotFoundError):
                    subject = sj.held_work_subject(TENANT, "default")
                    held = await admin.jetstream().get_last_msg(sj.EVENTS_STREAM, subject)
                    return task_id in (held.headers or {}).get(sj.DISPATCH_SUBJECT, "")
                return False

            await eventually(held, timeout=60, what="the ticket held")
            assert await _status(http, task_id) in ("queued", "")
            assert (await http.post("/v1/queues/default:resume")).status_code == 202
            await eventually(lambda: _is(http, task_id, "succeeded"), timeout=60, what="released and run")
    finally:
        await admin.close()
    assert _violations(nats_server) == []


async def test_a_ticket_is_handed_over_between_workers_on_the_worker_user(
    settings: Settings, nats_server: EmbeddedNats, provisioned: None
) -> None:
    """A worker without a task's handler offers the ticket to one with it (its copy, its notice, the
    other's durable) with the worker user's permissions."""
    from ordo.workers import Registry, TaskContext
    from ordo.workers.demo import registry as demo
    from ordo.workers.runtime import Worker

    without = Registry()

    @without.task("known")
    async def known(ctx: TaskContext) -> None:
        return None

    worker = _as(settings, "worker").with_(unknown_type_wait_s=60.0, backoff_base_s=0.2)
    admin = await connect(settings, name="perm-admin")
    conns = [await connect(worker, name="perm-worker-old"), await connect(worker, name="perm-worker-new")]
    handler = CommandHandler(EventStore(admin), Timers(admin, settings.timer_lead_s))
    old = Worker(conns[0], CommandHandler(EventStore(conns[0]), Timers(conns[0], 0.5)), without, worker)
    new = Worker(conns[1], CommandHandler(EventStore(conns[1]), Timers(conns[1], 0.5)), demo, worker)
    runs = [asyncio.create_task(old.run())]
    try:
        task_id = await _submit(handler, TENANT)

        async def handed_over() -> bool:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                subject = sj.handover_subject(TENANT, "default", lane_for("demo.echo"))
                await admin.jetstream().get_last_msg(sj.EVENTS_STREAM, subject)
                return True
            return False

        await eventually(handed_over, timeout=30, what="the ticket's copy handed over")
        runs.append(asyncio.create_task(new.run()))

        async def succeeded() -> bool:
            state, _, _ = await handler.load(TENANT, task_id)
            return state.status.value == "succeeded" and state.attempt == 1

        await eventually(succeeded, timeout=30, what="the task run by the worker with its handler")
    finally:
        await old.shutdown()
        await new.shutdown()
        await asyncio.wait_for(asyncio.gather(*runs, return_exceptions=True), 30)
        for c in (admin, *conns):
            await c.close()
    assert _violations(nats_server) == []


async def _submit(handler: CommandHandler, tenant: str) -> str:
    task_id = new_task_id()
    cmd = SubmitTask(
        task_id=task_id,
        tenant=tenant,
        queue="default",
        task_type="demo.echo",
        now=datetime.now(UTC),
        payload=msgspec.Raw(b"1"),
    )
    await handler.execute(tenant, cmd)
    return task_id


async def _violated(errors: Errors, subject: str) -> bool:
    return errors.violated(subject)


async def _true(value: bool) -> bool:
    return value


async def test_an_app_user_sees_only_its_own_tenant(settings: Settings, nats_server: EmbeddedNats) -> None:
    admin = await connect(settings, name="perm-admin")
    await provision(admin, settings)
    errors = Errors()
    app = await _raw(settings.nats_url, app_user_name(TENANT), errors, inbox_prefix=app_inbox_prefix(TENANT))
    try:
        # No core subscription to the event subjects, not even its own tenant's: it would also see
        # appends the stream refused (an optimistic-concurrency loser), events that never happened.
        await app.subscribe(sj.tenant_events_filter(TENANT))
        await app.subscribe(sj.tenant_events_filter(OTHER))
        for refused in (sj.tenant_events_filter(TENANT), sj.tenant_events_filter(OTHER)):
            await eventually(partial(_violated, errors, refused), timeout=5, what=refused)
        js = app.jetstream(timeout=2.0)
        # A durable (push) consumer of its own tenant's events, in its own name space, created in
        # the filtered form and delivered to the tenant's own `ordo.deliver.<tenant>.>` space.
        deliver = f"ordo.deliver.{TENANT}.own"
        own = await app.subscribe(deliver)
        await js.add_consumer(
            sj.EVENTS_STREAM,
            ConsumerConfig(
                name=sj.app_consumer(TENANT, 1),
                durable_name=sj.app_consumer(TENANT, 1),
                filter_subject=sj.tenant_events_filter(TENANT),
                deliver_subject=deliver,
                ack_policy=AckPolicy.EXPLICIT,
            ),
        )
        with pytest.raises(nats.errors.TimeoutError):
            await js.add_consumer(
                sj.EVENTS_STREAM,
                ConsumerConfig(
                    name=sj.app_consumer(TENANT, 2),
                    durable_name=sj.app_consumer(TENANT, 2),
                    filter_subject=sj.all_events_filter(),
                ),
            )
        with pytest.raises(nats.errors.TimeoutError):
            await js.publish(sj.event_subject(TENANT, "default", "forged", "succeeded"), b"{}")
        # Its own tenant's events arrive (an admin stands in for the gateway appending them).
        handler = CommandHandler(EventStore(admin), Timers(admin, settings.timer_lead_s))
        await _submit(handler, OTHER)
        task_id = await _submit(handler, TENANT)
        delivered = await own.next_msg(timeout=5)
        assert task_id in delivered.subject
        await delivered.ack()
    finally:
        await app.close()
        await admin.close()


async def test_an_app_user_cannot_see_delete_or_take_over_the_work_consumers(
    settings: Settings, nats_server: EmbeddedNats, provisioned: None
) -> None:
    """F4: the app user of one tenant stopped dispatch for every tenant by deleting `work_*`."""
    from ordo.infra.nats_conn import ensure_consumer
    from ordo.workers.consumer import work_consumer_config

    admin = await connect(settings, name="perm-admin")
    errors = Errors()
    app = await _raw(settings.nats_url, app_user_name(TENANT), errors, inbox_prefix=app_inbox_prefix(TENANT))
    try:
        work = work_consumer_config("default", 1, settings)
        assert work.name is not None
        await ensure_consumer(admin.jetstream(), sj.EVENTS_STREAM, work)
        js = app.jetstream(timeout=1.0)
        refused = (nats.errors.TimeoutError, nats.errors.NoRespondersError)
        mine = sj.tenant_events_filter(TENANT)
        for name in (work.name, sj.PROJECTION_CONSUMER, sj.app_consumer(OTHER, 1)):
            with pytest.raises(refused):
                await js.delete_consumer(sj.EVENTS_STREAM, name)
            with pytest.raises(refused):
                await js.consumer_info(sj.EVENTS_STREAM, name)
            # Re-created (or updated in place) by name with the app's own filter.
            with pytest.raises(refused):
                await js.add_consumer(
                    sj.EVENTS_STREAM, ConsumerConfig(name=name, durable_name=name, filter_subject=mine)
                )
        with pytest.raises(refused):  # a name outside its own name space
            await js.add_consumer(
                sj.EVENTS_STREAM, ConsumerConfig(name="mine", durable_name="mine", filter_subject=mine)
            )
        info = await admin.jetstream().consumer_info(sj.EVENTS_STREAM, work.name)
        assert info.config.filter_subject == work.filter_subject, "the work consumer is untouched"
        # Its own names: create, read, pull and ack, delete.
        own = sj.app_consumer(TENANT, 3)
        await js.add_consumer(
            sj.EVENTS_STREAM,
            ConsumerConfig(name=own, durable_name=own, filter_subject=mine, ack_policy=AckPolicy.EXPLICIT),
        )
        handler = CommandHandler(EventStore(admin), Timers(admin, settings.timer_lead_s))
        task_id = await _submit(handler, TENANT)
        pull = await js.pull_subscribe_bind(own, stream=sj.EVENTS_STREAM)
        [msg] = await pull.fetch(1, timeout=5)
        assert task_id in msg.subject
        await msg.ack_sync(timeout=5)
        assert (await js.consumer_info(sj.EVENTS_STREAM, own)).num_ack_pending == 0
        await js.delete_consumer(sj.EVENTS_STREAM, own)
    finally:
        await app.close()
        await admin.close()


def test_ordo_up_writes_the_passwords_owner_only(tmp_path: Path) -> None:
    from ordo.embedded.nats_auth import load_or_create_passwords

    path = tmp_path / "nats-users.json"
    first = load_or_create_passwords(path, TENANT)
    assert set(first) == {*SERVICES, app_user_name(TENANT)}
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_passwords(path, TENANT) == first  # kept across restarts


async def test_a_wrong_password_stops_the_process_at_once_saying_so(settings: Settings) -> None:
    """nats-py tries again forever, logging the refusal each time: a worker started with the wrong
    password looked like one waiting for its server."""
    for user, password in (("worker", "not-the-password"), ("", "")):
        wrong = settings.with_(nats_user=user, nats_password=password)
        with pytest.raises(ProvisioningError, match="ORDO_NATS_PASSWORD"):
            await asyncio.wait_for(connect(wrong, name="wrong-password"), 10)
    right = await connect(settings.with_(nats_user="worker", nats_password=PASSWORDS["worker"]), name="ok")
    assert right.is_connected
    await right.close()


async def test_a_user_that_may_not_change_streams_is_told_so_not_kept_waiting(
    settings: Settings, provisioned: None
) -> None:
    """Found by an operator's pass: `ordo rebuild` as the `worker` user logged "stream ORDO_EVENTS not
    ready yet (nats: timeout); retrying" for a minute, as for a busy cluster."""
    worker = await connect(_as(settings, "worker"), name="perm-provision")
    try:
        with pytest.raises(ProvisioningError, match="needs the `admin` user"):
            await asyncio.wait_for(provision(worker, _as(settings, "worker")), 20)
    finally:
        await worker.close()

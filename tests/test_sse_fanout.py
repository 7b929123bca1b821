"""SSE fan-out (gateway/live.py): one tail reader per gateway serves every stream.

- 50 per-task and 10 global clients (half filtered) each receive exactly their filtered log, in
  order, once: history from the read model, then live; the tail reads each commit at most once.
- A client that stops reading is cut once its buffer is full, while the others keep receiving; it
  reconnects with Last-Event-ID and has every event exactly once.
- Live commits come from the projector's committed feed (no read-model query); a chunk lost on the
  way is read back from the read model, with no gap and no duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
from nats.aio.client import Client as NATS

from ordo.domain.commands import SubmitTask
from ordo.gateway.live import TailHub, frame
from ordo.gateway.routes_events import STATUS_EVENTS
from ordo.infra import subjects as sj
from ordo.infra.command_handler import CommandHandler
from ordo.infra.event_store import StoredEvent
from ordo.infra.ids import new_task_id
from ordo.infra.pg import create_pool
from ordo.infra.settings import Settings
from ordo.infra.tasks import cancel_and_wait
from ordo.projections import committed_feed, task_events
from ordo.projections.reader import LogReader
from ordo.projections.registry import FAMILIES
from ordo.projections.runner import NOTIFY_CHANNEL, ProjectionRunner, RunnerConfig
from tests.helpers import eventually
from tests.sse import read_events
from tests.test_auth_support import Gateway, gateway_server


class Client:
    """An EventSource: follows `path`, reconnects with the last id it received."""

    def __init__(
        self, http: httpx.AsyncClient, path: str, params: dict[str, str], hang_up_after: int = 0
    ) -> None:
        self.http = http
        self.path = path
        self.params = params
        self.hang_up_after = hang_up_after  # > 0: disconnect after this many events, and resume
        self.seqs: list[int] = []
        self.connections = 0
        self.ended = 0  # streams the server ended

    async def run(self) -> None:
        while True:
            headers = {"Last-Event-ID": str(self.seqs[-1])} if self.seqs else {}
            try:
                async with self.http.stream("GET", self.path, params=self.params, headers=headers) as r:
                    assert r.status_code == 200, r.status_code
                    self.connections += 1
                    got = 0
                    async for event in read_events(r):
                        if event.event == "task_event":
                            self.seqs.append(int(event.id or 0))
                            got += 1
                            if got == self.hang_up_after:
                                break
                    else:
                        self.ended += 1
            except (httpx.HTTPError, OSError):
                pass
            await asyncio.sleep(0.1)  # reconnect backoff, as EventSource does


def _matcher(path: str, params: dict[str, str]) -> Callable[[StoredEvent], bool]:
    task_id = path.split("/")[3] if path.startswith("/v1/tasks/") else params.get("task_id")
    types: set[str] | None = set(params["type"].split(",")) if "type" in params else None
    if "status" in params:
        by_status = set(STATUS_EVENTS[params["status"]])
        types = by_status if types is None else types & by_status

    def match(e: StoredEvent) -> bool:
        return (
            (task_id is None or e.task_id == task_id)
            and ("queue" not in params or e.queue == params["queue"])
            and (types is None or e.name in types)
        )

    return match


@contextlib.asynccontextmanager
async def _projected_gateway(settings: Settings, nc: NATS) -> AsyncIterator[Gateway]:
    projector = ProjectionRunner(nc, settings.database_url)
    run = asyncio.create_task(projector.run())
    try:
        async with gateway_server(settings) as gw:
            yield gw
    finally:
        await projector.shutdown()
        await asyncio.wait_for(run, 30)


@contextlib.asynccontextmanager
async def _clients(clients: list[Client]) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(c.run()) for c in clients]
    try:
        yield
    finally:
        await cancel_and_wait(*tasks)


class Commits:
    """Counts the projector's commits (its NOTIFYs) on a LISTEN connection of the test's own."""

    def __init__(self) -> None:
        self.seqs: list[int] = []
        self._conn: asyncpg.Connection | None = None

    async def start(self, dsn: str) -> None:
        self._conn = await asyncpg.connect(dsn)
        await self._conn.add_listener(NOTIFY_CHANNEL, lambda *a: self.seqs.append(int(a[-1])))

    async def stop(self) -> None:
        if self._conn is not None:
            await self._conn.close()


async def test_60_clients_each_get_their_filtered_log_once_in_order_from_the_committed_feed(
    settings: Settings, nc: NATS, handler: CommandHandler
) -> None:
    commits = Commits()
    await commits.start(settings.database_url)
    async with (
        _projected_gateway(settings, nc) as gw,
        httpx.AsyncClient(base_url=gw.base_url, timeout=60, limits=httpx.Limits(max_connections=200)) as http,
    ):
        hub: TailHub = gw.app.state.services.hub
        r = await http.post(
            "/v1/tasks:batch", json={"tasks": [{"type": "x", "queue": f"q{i % 2}"} for i in range(50)]}
        )
        assert r.status_code == 202, r.text
        ids = [item["id"] for item in r.json()["items"]]
        before = min(item["seq"] for item in r.json()["items"]) - 1
        filters: list[dict[str, str]] = [
            {},
            {"queue": "q1"},
            {"status": "cancelled"},
            {"type": "paused,resumed"},
            {"queue": "q0", "type": "cancelled"},
        ]
        clients = [Client(http, f"/v1/tasks/{task_id}/stream", {}) for task_id in ids] + [
            Client(http, "/v1/events/stream", {**filters[i % len(filters)], "after": str(before)})
            for i in range(10)
        ]
        last_submitted = max(item["seq"] for item in r.json()["items"])
        await eventually(lambda: _true(hub.position >= last_submitted), 30, what="submits projected")
        baseline = _catch_up_queries()
        async with _clients(clients):
            # History first: every stream reads one page from the read model, then joins the hub.
            await eventually(
                lambda: _true(_catch_up_queries() - baseline >= 60 and hub.subscribers == 60),
                60,
                what="60 streams caught up",
            )
            queries, chunks, catch_up = hub.tail_queries, hub.feed_chunks, _catch_up_queries()
            notified = len(commits.seqs)
            # Live: three events per task, sent while every stream is open.
            for verb in ("pause", "resume", "cancel"):
                for task_id in ids:
                    r = await http.post(f"/v1/tasks/{task_id}:{verb}")
                    assert r.status_code == 202, r.text
            log, last = await handler.store.load_filter(sj.tenant_events_filter(settings.tenant))
            expected = [[e.seq for e in log if _matcher(c.path, c.params)(e)] for c in clients]

            async def everyone_done() -> bool:
                return all(len(c.seqs) >= len(want) for c, want in zip(clients, expected, strict=True))

            await eventually(everyone_done, 120, what="every client saw its filtered log")
            await eventually(lambda: _true(hub.position >= last), 30, what="hub at the end of the log")
            for c, want in zip(clients, expected, strict=True):
                assert c.seqs == want, (c.path, c.params, c.seqs, want)
                assert c.connections == 1
            assert all(len(c.seqs) == 4 for c in clients[:50])  # submitted, paused, resumed, cancelled
            # Each commit reached the hub once, for 60 streams: as a chunk of the committed feed, or
            # (a chunk later than its notification by more than the grace) one read-model query.
            live_commits = len(commits.seqs) - notified
            fed, queried = hub.feed_chunks - chunks, hub.tail_queries - queries
            assert fed > 0 and 0 < fed + queried <= live_commits, (fed, queried, live_commits)
            assert _catch_up_queries() == catch_up
            metrics = (await http.get("/metrics")).text
            assert "ordo_sse_tail_queries_total " in metrics and "ordo_sse_cuts_total" in metrics
            assert "ordo_sse_feed_chunks_total " in metrics
    await commits.stop()


async def test_a_client_that_stops_reading_is_cut_and_resumes_without_a_gap(
    settings: Settings, nc: NATS, handler: CommandHandler
) -> None:
    # A long send timeout: the end comes from the hub's bounded buffer, not from a stalled write.
    settings = settings.with_(sse_send_timeout_s=120.0)
    async with _projected_gateway(settings, nc) as gw:
        hub: TailHub = gw.app.state.services.hub
        hub.config = replace(hub.config, max_buffer_bytes=256 * 1024)
        start = hub.position
        # The slow client: a small receive window, and it reads nothing after the first line.
        slow = httpx.AsyncClient(
            base_url=gw.base_url,
            timeout=120,
            transport=httpx.AsyncHTTPTransport(socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)]),
        )
        async with slow, httpx.AsyncClient(base_url=gw.base_url, timeout=60) as http:
            healthy = Client(http, "/v1/events/stream", {"queue": "small", "after": str(start)})
            async with _clients([healthy]):
                seqs: list[int] = []
                cut = False
                async with slow.stream(
                    "GET", "/v1/events/stream", params={"queue": "big", "after": str(start)}
                ) as stream:
                    lines = stream.aiter_lines()
                    assert (await anext(lines)).startswith(("id:", ":"))
                    big = {"type": "x", "queue": "big", "payload": "b" * 50_000}
                    for _ in range(60):  # about 30 MB at most; the cut comes far earlier
                        r = await http.post("/v1/tasks:batch", json={"tasks": [big] * 10})
                        assert r.status_code == 202, r.text
                        if hub.cuts:
                            break
                    await eventually(lambda: _true(hub.cuts == 1), 60, what="the slow client cut")
                    # The gateway goes on for everyone else meanwhile.
                    small = await http.post(
                        "/v1/tasks:batch", json={"tasks": [{"type": "x", "queue": "small"}] * 5}
                    )
                    small_seqs = [item["seq"] for item in small.json()["items"]]
                    await eventually(
                        lambda: _true(healthy.seqs == small_seqs), 60, what="the healthy client unaffected"
                    )
                    # Now it reads: what was on the way, then the end of the stream.
                    event_id: str | None = None
                    async for line in lines:
                        if line.startswith("id:"):
                            event_id = line.partition(":")[2].strip()
                        elif line.startswith("event: task_event") and event_id is not None:
                            seqs.append(int(event_id))
                        elif line.startswith(": behind"):
                            cut = True
                assert cut
                # EventSource reconnects with the last id it received and catches up.
                resumed = Client(http, "/v1/events/stream", {"queue": "big"})
                resumed.seqs = [seqs[-1]] if seqs else [start]
                log, _ = await handler.store.load_filter(sj.tenant_events_filter(settings.tenant))
                want = [e.seq for e in log if e.queue == "big" and e.seq > start]
                async with _clients([resumed]):
                    await eventually(
                        lambda: _true(len(seqs) + len(resumed.seqs) - 1 >= len(want)), 90, what="resumed"
                    )
                assert seqs + resumed.seqs[1:] == want
                assert hub.cuts == 1


async def test_clients_hanging_up_and_resuming_during_a_load_join_the_live_feed_exactly(
    settings: Settings, nc: NATS, handler: CommandHandler
) -> None:
    """Every resume is a hand-over from the read model to the live feed while commits arrive."""
    async with (
        _projected_gateway(settings, nc) as gw,
        httpx.AsyncClient(base_url=gw.base_url, timeout=60, limits=httpx.Limits(max_connections=100)) as http,
    ):
        hub: TailHub = gw.app.state.services.hub
        start = hub.position
        clients = [
            Client(
                http, "/v1/events/stream", {**({"queue": "q1"} if i % 2 else {}), "after": str(start)}, 3 + i
            )
            for i in range(20)
        ]
        async with _clients(clients):
            await eventually(lambda: _true(hub.subscribers == 20), 60, what="20 streams open")
            for i in range(30):
                tasks = [{"type": "x", "queue": f"q{j % 2}"} for j in range(10)]
                r = await http.post("/v1/tasks:batch", json={"tasks": tasks})
                assert r.status_code == 202, r.text
                if i % 3 == 0:
                    await http.post(f"/v1/tasks/{r.json()['items'][0]['id']}:cancel")
            log, _ = await handler.store.load_filter(sj.tenant_events_filter(settings.tenant))
            expected = [[e.seq for e in log if _matcher(c.path, c.params)(e)] for c in clients]

            async def everyone_done() -> bool:
                return all(len(c.seqs) >= len(want) for c, want in zip(clients, expected, strict=True))

            await eventually(everyone_done, 120, what="every client saw its filtered log")
            for c, want in zip(clients, expected, strict=True):
                assert c.seqs == want, (c.params, c.hang_up_after, c.seqs, want)
            assert sum(c.connections for c in clients) > 200  # many resumes, each a hand-over


async def test_a_lost_chunk_of_the_committed_feed_is_read_back_without_a_gap(
    settings: Settings, nc: NATS, handler: CommandHandler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every other batch's chunks never reach the gateway: those ranges come from the read model."""
    real, batches = committed_feed.publish, []

    async def lossy(nc: NATS, after: int, upto: int, batch: list[Any]) -> None:
        batches.append(upto)
        if len(batches) % 2:
            await real(nc, after, upto, batch)

    monkeypatch.setattr(committed_feed, "publish", lossy)
    async with (
        _projected_gateway(settings, nc) as gw,
        httpx.AsyncClient(base_url=gw.base_url, timeout=60) as http,
    ):
        hub: TailHub = gw.app.state.services.hub
        start = hub.position
        clients = [
            Client(http, "/v1/events/stream", {"after": str(start)}),
            Client(http, "/v1/events/stream", {}),
        ]
        async with _clients(clients):
            await eventually(lambda: _true(hub.subscribers == 2), 60, what="2 streams open")
            queries, chunks = hub.tail_queries, hub.feed_chunks
            for _ in range(12):
                r = await http.post("/v1/tasks:batch", json={"tasks": [{"type": "x"} for _ in range(5)]})
                assert r.status_code == 202, r.text
                last = r.json()["items"][-1]["seq"]
                await eventually(lambda: _true(hub.position >= last), 30, what="projected")  # noqa: B023
            log, _ = await handler.store.load_filter(sj.tenant_events_filter(settings.tenant))
            want = [e.seq for e in log if e.seq > start]

            async def done() -> bool:
                return len(clients[0].seqs) >= len(want)

            await eventually(done, 60, what="the client saw the whole log")
            assert clients[0].seqs == want
            live = [s for s in clients[1].seqs if s > start]  # the second joined live: a suffix, exact
            assert live == want[len(want) - len(live) :] and live
            assert len(batches) >= 4
            assert hub.feed_chunks - chunks > 0 and hub.tail_queries - queries > 0


async def test_a_frame_of_the_committed_feed_equals_the_frame_read_back_from_the_read_model(
    settings: Settings, nc: NATS, handler: CommandHandler
) -> None:
    payloads: list[Any] = [
        {"text": 'é ü 日本 \u0000 "q" \\', "n": [1, -2, 3.25, 1e300, None, True], "deep": {"a": [{"b": {}}]}},
        "plain",
        12345678901234567890,
    ]
    async with _projected_gateway(settings, nc) as gw, httpx.AsyncClient(base_url=gw.base_url) as http:
        hub: TailHub = gw.app.state.services.hub
        start = hub.position
        for i, payload in enumerate(payloads):
            body = {
                "type": "x",
                "queue": f"q{i}",
                "payload": payload,
                "tags": ["t"],
                "idempotency_key": f"k{i}",
            }
            r = await http.post("/v1/tasks", json=body)
            assert r.status_code in (200, 201, 202), r.text
            await http.post(f"/v1/tasks/{r.json()['id']}:cancel")
        _, last = await handler.store.load_filter(sj.tenant_events_filter(settings.tenant))
        await eventually(lambda: _true(hub.position >= last), 30, what="projected")
        pool = await create_pool(settings.database_url)
        try:
            rows = await task_events.events_after(pool, settings.tenant, start, 100)
        finally:
            await pool.close()
        read_back = [frame(entry) for entry in rows]
        # The feed's frames are built from the records the projector reads (its reader's decoding).
        reader = LogReader(nc, FAMILIES, start + 1)
        await reader.start()
        batch: list[Any] = []
        try:
            while not batch or batch[-1][1].seq < last:  # a batch holds what has arrived so far
                batch += await asyncio.wait_for(reader.batch(100, upto=last), 30)
        finally:
            await reader.close()
        fed = [committed_feed.frame(committed_feed.entry_of(e)) for f, e in batch if f == "task"]
        assert len(fed) == len(payloads) * 2 and fed == read_back


def _catch_up_queries() -> float:
    from ordo.gateway.live import METRICS

    return sum(METRICS.catch_up_queries.values.values())


async def _true(value: Any) -> bool:
    return bool(value)


async def test_the_committed_feed_goes_out_only_while_a_gateway_asks_for_it(
    settings: Settings, nc: NATS, handler: CommandHandler
) -> None:
    """Nobody watching: commits are not published. A gateway's request turns the feed on for
    `feed_want_ttl_s`; once it lapses, commits stop going out again."""
    chunks: list[committed_feed.Chunk] = []

    async def on_chunk(msg: Any) -> None:
        chunks.append(committed_feed.decode_chunk(msg.data))

    def published() -> set[int]:
        return {row.seq for c in chunks for row in c.rows if row.tenant == settings.tenant}

    async def submit() -> int:
        tenant, now = settings.tenant, datetime.now(UTC)
        command = SubmitTask(task_id=new_task_id(), tenant=tenant, queue="default", task_type="x", now=now)
        return (await handler.execute(settings.tenant, command)).last_seq

    async def ask() -> None:
        await nc.publish(committed_feed.WANT_SUBJECT, b"")
        await eventually(lambda: _true(projector.feed_wanted), 10, what="the request heard")

    async def published_while_asked(seq: int) -> bool:
        """Whether `seq` was published; asks again meanwhile, as a gateway's hub does while it has a
        stream (a request lasts only `feed_want_ttl_s`, shorter than a slow commit)."""
        await nc.publish(committed_feed.WANT_SUBJECT, b"")
        return seq in published()

    sub = await nc.subscribe(committed_feed.SUBJECT, cb=on_chunk)
    projector = ProjectionRunner(nc, settings.database_url, RunnerConfig(feed_want_ttl_s=0.5))
    run = asyncio.create_task(projector.run())
    try:
        unseen = await submit()
        await eventually(lambda: _true(projector.last_seq >= unseen), 30, what="projected")
        await ask()
        seen = await submit()
        await eventually(lambda: published_while_asked(seen), 30, what="published while asked")
        await eventually(lambda: _true(not projector.feed_wanted), 10, what="the request lapsed")
        lapsed = await submit()
        await eventually(lambda: _true(projector.last_seq >= lapsed), 30, what="projected")
        await ask()
        # Chunks arrive in commit order: once the next one is here, an earlier one would be too.
        barrier = await submit()
        await eventually(lambda: published_while_asked(barrier), 30, what="published while asked")
        assert unseen not in published() and lapsed not in published()
        assert seen in published()
    finally:
        await sub.unsubscribe()
        await projector.shutdown()
        await asyncio.wait_for(run, 30)


async def test_a_filtered_stream_catches_up_a_stretch_of_the_log_per_query_exactly(
    settings: Settings, nc: NATS, handler: CommandHandler
) -> None:
    """A stream without a task reads its history a stretch of sequences at a time (the filters are
    not served by an index in sequence order): a rare queue costs several small queries instead of
    one scan of everything since the resume point, and every stream still gets exactly its log."""
    async with (
        _projected_gateway(settings, nc) as gw,
        httpx.AsyncClient(base_url=gw.base_url, timeout=60) as http,
    ):
        hub: TailHub = gw.app.state.services.hub
        queues = ["q0", "q1"] * 14 + ["rare", "rare"]
        r = await http.post("/v1/tasks:batch", json={"tasks": [{"type": "x", "queue": q} for q in queues]})
        assert r.status_code == 202, r.text
        seqs = [item["seq"] for item in r.json()["items"]]
        before, last = min(seqs) - 1, max(seqs)
        await eventually(lambda: _true(hub.position >= last), 30, what="submits projected")
        hub.config = replace(hub.config, catch_up_stretch=5)
        log, _ = await handler.store.load_filter(sj.tenant_events_filter(settings.tenant))
        filters: list[dict[str, str]] = [{"queue": "rare"}, {}, {"queue": "q1", "type": "submitted"}]
        for only in filters:
            params = {**only, "after": str(before)}
            want = [e.seq for e in log if before < e.seq <= last and _matcher("/v1/events/stream", params)(e)]
            client = Client(http, "/v1/events/stream", params)
            queries = _catch_up_queries()

            async def caught_up(c: Client = client, w: list[int] = want) -> bool:
                return len(c.seqs) >= len(w)

            async with _clients([client]):
                await eventually(caught_up, 30, what="caught up")
            assert client.seqs == want, params
            assert _catch_up_queries() - queries >= (last - before) // 5, params  # a stretch each

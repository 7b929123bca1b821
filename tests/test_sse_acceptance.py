"""Acceptance 3: 100 SSE clients (half filtered) through a gateway restart and a resume on a second
gateway while the projection lags each see exactly the filtered log; a stalled client is dropped."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
from nats.aio.client import Client as NATS
from sse_starlette.sse import AppStatus

from ordo.infra import subjects as sj
from ordo.infra.command_handler import CommandHandler
from ordo.infra.event_store import StoredEvent
from ordo.infra.settings import Settings
from ordo.infra.tasks import cancel_and_wait
from ordo.projections.runner import ProjectionRunner, checkpoint
from tests.helpers import eventually
from tests.sse import read_events
from tests.test_auth_support import gateway_server

FILTERS: list[dict[str, str]] = [
    {},
    {"queue": "q1"},
    {"status": "cancelled"},
    {"type": "scheduled,cancelled"},
    {"queue": "q2", "type": "submitted"},
]


def _matcher(flt: dict[str, str]) -> Callable[[StoredEvent], bool]:
    from ordo.gateway.routes_events import STATUS_EVENTS

    types: set[str] | None = set(flt["type"].split(",")) if "type" in flt else None
    if "status" in flt:
        by_status = set(STATUS_EVENTS[flt["status"]])
        types = by_status if types is None else types & by_status

    def match(e: StoredEvent) -> bool:
        return ("queue" not in flt or e.queue == flt["queue"]) and (types is None or e.name in types)

    return match


class Client:
    def __init__(self, flt: dict[str, str], gateway: Callable[[], str]) -> None:
        self.flt = flt
        self.gateway = gateway
        self.seqs: list[int] = []
        self.connections = 0

    async def run(self) -> None:
        while True:
            headers = {"Last-Event-ID": str(self.seqs[-1])} if self.seqs else {}
            params = self.flt if self.seqs else {**self.flt, "after": "0"}
            try:
                async with httpx.AsyncClient(
                    base_url=self.gateway(), timeout=httpx.Timeout(60, connect=5)
                ) as c:
                    async with c.stream("GET", "/v1/events/stream", params=params, headers=headers) as r:
                        assert r.status_code == 200, r.status_code
                        self.connections += 1
                        async for event in read_events(r):
                            if event.event == "task_event":
                                self.seqs.append(int(event.id or 0))
            except (httpx.HTTPError, OSError):
                pass
            await asyncio.sleep(0.1)  # reconnect backoff, as EventSource does


async def _submit(http: httpx.AsyncClient, n: int, offset: int) -> list[str]:
    tasks: list[dict[str, Any]] = []
    for i in range(offset, offset + n):
        task: dict[str, Any] = {"type": "demo.echo", "queue": f"q{i % 3}", "payload": {"pad": "p" * 1500}}
        if i % 4 == 0:
            task["delay"] = 3600
        tasks.append(task)
    r = await http.post("/v1/tasks:batch", json={"tasks": tasks})
    assert r.status_code == 202, r.text
    ids = [i["id"] for i in r.json()["items"]]
    for task_id in ids[::5]:
        assert (await http.post(f"/v1/tasks/{task_id}:cancel")).status_code == 202
    return ids


async def test_100_clients_resume_exactly_across_gateways_while_the_projection_lags(
    settings: Settings, nc: NATS, handler: CommandHandler
) -> None:
    settings = settings.with_(sse_send_timeout_s=3.0, sse_ping_s=1.0, max_payload_bytes=256 * 1024)
    drain, AppStatus.enable_automatic_graceful_drain = AppStatus.enable_automatic_graceful_drain, False
    projector = ProjectionRunner(nc, settings.database_url)
    runs = [asyncio.create_task(projector.run())]
    stack = contextlib.AsyncExitStack()
    clients: list[Client] = []
    tasks: list[asyncio.Task[None]] = []
    sockets: list[socket.socket] = []
    try:
        a = await stack.enter_async_context(gateway_server(settings))
        b = await stack.enter_async_context(gateway_server(settings))
        current = {"url": a.base_url}
        # Idle connections expire before uvicorn closes them (5 s): no reuse race on a big POST.
        http = await stack.enter_async_context(
            httpx.AsyncClient(base_url=b.base_url, timeout=60, limits=httpx.Limits(keepalive_expiry=1))
        )
        await _submit(http, 60, 0)
        clients = [
            Client(FILTERS[1 + i % (len(FILTERS) - 1)] if i % 2 else {}, lambda: current["url"])
            for i in range(100)
        ]
        tasks = [asyncio.create_task(c.run()) for c in clients]
        # A stalled client on gateway B: a tiny receive window, and it never reads.
        stalled = socket.socket()
        sockets.append(stalled)
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
        stalled.connect(("127.0.0.1", int(b.base_url.rsplit(":", 1)[1])))
        stalled.sendall(
            b"GET /v1/events/stream?after=0 HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
        )
        await eventually(lambda: _all(lambda: all(c.connections for c in clients)), 120, what="100 connected")
        # The projection stops (lags) while more is written; then their gateway goes away.
        await projector.shutdown()
        await asyncio.wait_for(runs[0], 30)
        await _submit(http, 60, 60)
        current["url"] = b.base_url
        a.server.should_exit = True
        await eventually(
            lambda: _all(lambda: all(c.connections >= 2 for c in clients)), 120, what="resumed on B"
        )
        # Gateway A comes back (a restart); clients stay on B; the projector catches up.
        await stack.enter_async_context(gateway_server(settings))
        projector = ProjectionRunner(nc, settings.database_url)
        runs.append(asyncio.create_task(projector.run()))
        await _submit(http, 60, 120)
        log, last = await handler.store.load_filter(sj.tenant_events_filter(settings.tenant))
        expected = [[e.seq for e in log if _matcher(c.flt)(e)] for c in clients]

        async def everyone_done() -> bool:
            return all(len(c.seqs) >= len(want) for c, want in zip(clients, expected, strict=True))

        await eventually(everyone_done, 180, what="every client saw its filtered log")
        for c, want in zip(clients, expected, strict=True):
            assert c.seqs == want, (c.flt, len(c.seqs), len(want))
        assert sum(1 for c in clients if c.flt) == 50
        await cancel_and_wait(*tasks)
        # A stalled client on gateway B (tiny receive window, never reads) following a queue of big
        # tasks, and ten healthy clients following another queue on the same gateway.
        stalled = socket.socket()
        sockets.append(stalled)
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
        stalled.connect(("127.0.0.1", int(b.base_url.rsplit(":", 1)[1])))
        request = f"GET /v1/events/stream?queue=big&after={last} HTTP/1.1\r\nHost: x\r\n\r\n"
        stalled.sendall(request.encode())
        healthy = [Client({"queue": "small"}, lambda: b.base_url) for _ in range(10)]
        for c in healthy:
            c.seqs.append(last)  # resume from the end of the log
        tasks = [asyncio.create_task(c.run()) for c in healthy]
        big = {"type": "demo.echo", "queue": "big", "payload": "b" * 60_000}
        for _ in range(4):  # ~7 MB of events for the stalled client: more than every buffer holds
            r = await http.post("/v1/tasks:batch", json={"tasks": [big] * 30})
            assert r.status_code == 202
        small = await http.post("/v1/tasks:batch", json={"tasks": [{"type": "x", "queue": "small"}] * 20})
        small_seqs = [i["seq"] for i in small.json()["items"]]

        async def healthy_got_everything() -> bool:
            return all(c.seqs[1:] == small_seqs for c in healthy)

        limits = b.app.state.services.limits
        try:
            await eventually(healthy_got_everything, 60, what="healthy clients unaffected")
        except AssertionError as exc:
            got = [(c.connections, len(c.seqs), c.seqs[:2], c.seqs[-2:]) for c in healthy[:3]]
            pg = await asyncpg.connect(settings.database_url)
            try:
                rows = await pg.fetch("SELECT queue, count(*), max(seq) FROM task_events GROUP BY queue")
                cp = await checkpoint(pg)
            finally:
                await pg.close()
            raise AssertionError(
                f"{exc}: wanted {small_seqs[:2]}..{small_seqs[-2:]}, got {got}; checkpoint {cp}, "
                f"read model {[tuple(r) for r in rows]}, open streams {limits.open_streams}"
            ) from None

        async def only_healthy_left() -> bool:
            return bool(limits.open_streams == len(healthy))

        # Without reading a byte: the server drops it once a write waited sse_send_timeout_s.
        await eventually(only_healthy_left, 90, what="stalled client dropped")
        stalled.close()
    finally:
        for sock in sockets:  # a gateway does not finish shutting down while a stalled stream is open
            sock.close()
        await cancel_and_wait(*tasks)
        await stack.aclose()
        await projector.shutdown()
        await asyncio.gather(*runs, return_exceptions=True)
        AppStatus.enable_automatic_graceful_drain = drain


async def _all(check: Callable[[], bool]) -> bool:
    return check()

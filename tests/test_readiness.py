"""Readiness tells the truth about what a request would meet (found by an operator's pass,
2026-12-06): with the nats-server frozen, `/readyz` answered ready in 2 ms (it only asked whether the
socket was connected) while every submit failed with 503 after 15 s."""

from __future__ import annotations

import os
import signal

from nats.aio.client import Client as NATS

from ordo.embedded.nats import EmbeddedNats
from ordo.infra import subjects as sj
from tests.conftest import System
from tests.helpers import eventually


async def test_readiness_is_503_while_jetstream_does_not_answer(
    gateway_only: System, nats_server: EmbeddedNats
) -> None:
    http = gateway_only.http
    assert (await http.get("/readyz")).status_code == 200
    assert "workers" not in (await http.get("/healthz")).json()  # it never listed any
    pid = nats_server.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        r = await http.get("/readyz", timeout=15)
        assert r.status_code == 503 and r.json()["nats"] is False, r.text
    finally:
        os.kill(pid, signal.SIGCONT)

    async def ready() -> bool:
        return (await http.get("/readyz")).status_code == 200

    await eventually(ready, timeout=30, what="ready again")


async def test_readiness_is_503_while_the_event_log_is_missing(gateway_only: System, nc: NATS) -> None:
    """Found by a user's pass: the nats-server's data lost while everything ran, submits answered 503
    for good while readiness stayed green."""
    http = gateway_only.http
    await nc.jetstream().delete_stream(sj.EVENTS_STREAM)

    async def not_ready() -> bool:
        r = await http.get("/readyz")
        return r.status_code == 503 and r.json()["nats"] is False

    await eventually(not_ready, timeout=30, what="readiness without the event log")

"""Readiness tells the truth about what a request would meet (found by an operator's pass,
2026-12-06): with the nats-server frozen, `/readyz` answered ready in 2 ms (it only asked whether the
socket was connected) while every submit failed with 503 after 15 s."""

from __future__ import annotations

import os
import signal

from ordo.embedded.nats import EmbeddedNats
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

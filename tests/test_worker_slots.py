"""A worker never runs more tasks at once than its concurrency, and every slot comes back: a backlog
larger than the slots runs in full, at most `worker_concurrency` at a time (the fetch takes only the
slots that are free; each ending attempt hands its slot back)."""

from __future__ import annotations

import uuid

import pytest
from nats.aio.client import Client as NATS

from ordo.infra.command_handler import CommandHandler
from ordo.infra.settings import Settings
from ordo.workers import Worker
from ordo.workers.demo import registry as demo_registry
from tests.test_worker_points import running, submit, until

SLOTS = 3


@pytest.mark.timeout(60)
async def test_a_backlog_runs_whole_and_never_more_than_the_slots_at_once(
    nc: NATS, handler: CommandHandler, settings: Settings
) -> None:
    queue = "q" + uuid.uuid4().hex[:10]
    sleeps = [
        await submit(handler, settings, queue, "demo.sleep", {"seconds": 0.3}) for _ in range(4 * SLOTS)
    ]
    echoes = [await submit(handler, settings, queue, "demo.echo", i) for i in range(2 * SLOTS)]
    worker = Worker(nc, handler, demo_registry, settings.with_(worker_concurrency=SLOTS), queues=(queue,))
    async with running(worker):
        done = {t: await until(handler, settings, t, "succeeded", within=40) for t in sleeps + echoes}
    spans = []
    for history in done.values():
        start = next(e.stored_at for e in history if e.name == "attempt_started")
        end = next(e.stored_at for e in history if e.name == "succeeded")
        spans.append((start, end))
    peak = max(sum(1 for s, e in spans if s <= at < e) for at, _ in spans)
    assert peak == SLOTS  # all slots used, never one more
    assert worker.running == 0

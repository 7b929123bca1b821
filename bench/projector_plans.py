"""The projector's own CPU per event, without PostgreSQL or NATS: each projection's plan (its fold,
its rows, the statement's JSON) for W1-like batches, and the committed feed's chunks.

N tasks are folded in two batches, as the projector meets them under W1: first every `submitted`,
then every task's `attempt_started` and `succeeded`; the memory holds what the first batch left
(nothing is read back). Prints the best of `--repeat` runs per part, in µs of CPU per event.

    .venv/bin/python -m bench.projector_plans [--tasks 5000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from bench.common import emit, load_average
from ordo.domain import events as ev
from ordo.infra.event_store import StoredEvent
from ordo.projections import attempts, committed_feed, rollups, task_events, tasks
from ordo.projections.batch_statement import _as_json, statement
from ordo.projections.memory import Memories

_TRACEPARENT = {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}


def _batches(n: int) -> tuple[list[StoredEvent], list[StoredEvent]]:
    now = datetime.now(UTC)

    def stored(seq: int, task_id: str, event: ev.Event, name: str) -> StoredEvent:
        return StoredEvent(
            seq=seq,
            subject=f"ordo.evt.t.default.b1.{task_id}.{name}",
            tenant="t",
            queue="default",
            task_id=task_id,
            name=name,
            event=event,  # type: ignore[arg-type]
            stored_at=now + timedelta(microseconds=seq * 50),
            headers=dict(_TRACEPARENT),
        )

    ids = [f"01J{i:023d}" for i in range(n)]
    submitted = [
        stored(i + 1, t, ev.Submitted(task_type="demo.echo", queue="default", tenant="t"), "submitted")
        for i, t in enumerate(ids)
    ]
    rest: list[StoredEvent] = []
    seq = n
    started = ev.AttemptStarted(attempt=1, worker_id="w", lease_until=now + timedelta(seconds=30))
    succeeded = ev.Succeeded(attempt=1, result=msgspec.Raw(b'{"ok":true}'))
    for t in ids:
        rest.append(stored(seq + 1, t, started, "attempt_started"))
        rest.append(stored(seq + 2, t, succeeded, "succeeded"))
        seq += 2
    return submitted, rest


async def _plan_cpu(module: Any, batches: tuple[list[StoredEvent], ...], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        memories = Memories()
        memory = memories.of(module.NAME)
        t0 = time.process_time()
        for batch in batches:
            write = await module.plan(None, batch, memory)
            if write is not None:
                _as_json(*statement([write]))
            memories.commit()
        best = min(best, time.process_time() - t0)
    return best


def _feed_cpu(events: list[StoredEvent], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        committed_feed.chunks(0, len(events), events)
        best = min(best, time.process_time() - t0)
    return best


async def run(n: int, repeat: int) -> dict[str, float]:
    batches = _batches(n)
    events = len(batches[0]) + len(batches[1])
    out: dict[str, float] = {}
    for module in (tasks, task_events, attempts, rollups):
        out[module.NAME] = round(await _plan_cpu(module, batches, repeat) * 1e6 / events, 2)
    out["committed_feed"] = round(_feed_cpu([*batches[0], *batches[1]], repeat) * 1e6 / events, 2)
    out["total"] = round(sum(out.values()), 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    load_start = load_average()
    per_event = asyncio.run(run(args.tasks, args.repeat))
    emit(
        {
            "bench": "projector_plans",
            "tasks": args.tasks,
            "events": 3 * args.tasks,
            "cpu_us_per_event": per_event,
            "loadavg_start": load_start,
        }
    )


if __name__ == "__main__":
    main()

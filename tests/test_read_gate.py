"""Batch submits keep pace with the read side (infra/read_gate.py, decision 59): a batch submit goes
out in pieces, each waiting while the read model trails the log by more than the window (at most the
backlog, narrowed while pieces show late), and it never waits on a projector that is gone, stuck, or
catching up from far behind."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from nats.aio.client import Client as NATS

from ordo.infra import read_gate
from ordo.infra import subjects as sj
from ordo.infra.command_handler import CommandHandler
from ordo.infra.event_store import EventStore
from ordo.infra.read_gate import ReadGate
from ordo.infra.settings import Settings
from ordo.infra.timers import Timers
from ordo.infra.wiring import command_handler
from ordo.projections.runner import ProjectionRunner
from tests.conftest import run_system
from tests.helpers import eventually
from tests.test_projections_failover import submissions


async def _announce(nc: NATS, seq: int) -> None:
    await nc.publish(read_gate.SUBJECT, read_gate.announcement(seq))
    await nc.flush()


async def _pending_after(task: asyncio.Task[float], seconds: float) -> bool:
    """Whether `task` is still running `seconds` from now (it waits on something)."""
    done, _ = await asyncio.wait({task}, timeout=seconds)
    return not done


async def test_the_gate_waits_while_the_read_model_trails_and_goes_on_when_it_moves(nc: NATS) -> None:
    # `fresh_s` 30: a waiting piece looks again on an announcement, not on a timeout.
    gate = ReadGate(nc, backlog=10, max_wait_s=30, fresh_s=30)
    await gate.admit(0)  # subscribed
    await _announce(nc, 100)
    await eventually(lambda: _at(gate, 100), timeout=10, what="the position heard")
    assert gate.window == 2  # a burst starts at a quarter of the backlog
    assert await gate.admit(102) == 0.0  # within the window: at once
    waiting = asyncio.create_task(gate.admit(200))
    assert await _pending_after(waiting, 0.3), "100 events behind, the piece went out"
    await _announce(nc, 150)
    assert await _pending_after(waiting, 0.3), "still 50 behind"
    await _announce(nc, 199)
    waited = await asyncio.wait_for(waiting, 10)
    assert 0.5 <= waited < 10
    assert gate.waits == 1


async def test_a_waiting_piece_goes_when_an_earlier_piece_is_shown(nc: NATS) -> None:
    """With a piece of this process on its way, a waiting piece looks again when the read model shows
    it (one goes out as one is shown), not at an announcement that falls short of it."""
    gate = ReadGate(nc, backlog=8, max_wait_s=30, fresh_s=30)
    await gate.admit(0)
    assert gate.window == 2
    await _announce(nc, 5)
    await eventually(lambda: _at(gate, 5), timeout=10, what="the position heard")
    gate.stored(10)
    waiting = asyncio.create_task(gate.admit(10))
    assert await _pending_after(waiting, 0.3), "5 events behind a window of 2, the piece went out"
    await _announce(nc, 9)
    await eventually(lambda: _at(gate, 9), timeout=10, what="the position heard")
    assert await _pending_after(waiting, 0.3), "the piece up to 10 is not shown yet"
    await _announce(nc, 10)
    assert await asyncio.wait_for(waiting, 10) < 10
    assert gate.waits == 1


async def test_the_window_widens_while_pieces_show_in_time_and_narrows_once_a_round_when_late(
    nc: NATS,
) -> None:
    """How far the read model may trail moves as a congestion window: a burst starts at a quarter of
    the backlog; each piece shown within `lag_s` of its store widens it by a sixteenth, up to the
    backlog; a late piece narrows it by a third, once for all the pieces stored before it narrowed,
    never below the quarter; a burst after a quiet spell (`fresh_s`) starts at the quarter again.
    (A piece's store time is given: "shown late" needs no waiting.)"""
    gate = ReadGate(nc, backlog=160, max_wait_s=30, fresh_s=30, lag_s=2.0)
    await gate.admit(0)
    assert (gate.floor, gate.window, gate.piece) == (40, 40, 10)
    last = 0

    async def shown(age_s: float, pieces: int = 1) -> int:
        """Store `pieces` pieces `age_s` ago, announce the read model past them: the window after."""
        nonlocal last
        at = time.monotonic() - age_s
        for _ in range(pieces):
            last += 10
            gate.stored(last, at=at)
        await _announce(nc, last)
        await eventually(lambda: _at(gate, last), timeout=10, what="the position heard")
        return gate.window

    assert await shown(0.0) == 50
    assert await shown(0.0, pieces=20) == 160  # at most the backlog
    assert gate.piece == 40
    assert await shown(10.0, pieces=3) == 106  # three late pieces stored before it narrowed: once
    assert await shown(10.0) == 70  # stored after that: again
    assert await shown(10.0, pieces=1) == 46
    assert await shown(10.0, pieces=1) == 40  # never below the quarter
    assert await shown(0.0, pieces=10) == 140
    gate.stored(last + 1, at=time.monotonic() - 31)  # the burst's last piece, longer ago than fresh_s
    await gate.admit(last + 1)
    assert gate.window == 40


async def test_the_gate_does_not_wait_on_a_silent_or_far_behind_read_model(nc: NATS) -> None:
    gate = ReadGate(nc, backlog=10, max_wait_s=30, fresh_s=0.5)
    await gate.admit(0)
    # Nothing heard yet: no projector, no pacing.
    assert await gate.admit(1_000) == 0.0
    # Far behind (more than 50 x the backlog): catching up, not outrun; no pacing either.
    await _announce(nc, 1)
    await eventually(lambda: _at(gate, 1), timeout=10, what="the position heard")
    assert await gate.admit(1 + gate.far_behind + 1) == 0.0
    # Behind within reach, then the projector falls silent: the wait ends once the last word is
    # older than `fresh_s`, far before `max_wait_s`.
    started = time.monotonic()
    waited = await gate.admit(100)
    assert 0 < waited < 5 and time.monotonic() - started < 5


async def test_the_gate_waits_at_most_its_budget(nc: NATS) -> None:
    gate = ReadGate(nc, backlog=10, max_wait_s=0.3, fresh_s=30)
    await gate.admit(0)
    await _announce(nc, 1)
    await eventually(lambda: _at(gate, 1), timeout=10, what="the position heard")
    waited = await asyncio.wait_for(gate.admit(100), 10)
    assert 0.3 <= waited < 5
    assert await gate.admit(100, budget=0) == 0.0


async def test_one_batch_submit_waits_at_most_max_wait_s_in_all(settings: Settings, nc: NATS) -> None:
    """A read model that answers but never moves (announced by hand, fresh): a batch of 80 pieces
    (of one task: a quarter of the backlog) waits its budget once, not per piece."""
    gate = ReadGate(nc, backlog=4, max_wait_s=0.5, fresh_s=30)
    paced = CommandHandler(EventStore(nc), Timers(nc, settings.timer_lead_s), gate=gate)
    await gate.admit(0)
    first = await paced.submit_many(settings.tenant, submissions(settings.tenant, 2))
    await _announce(nc, first[0].last_seq - 1)  # behind, within reach, and never moving
    await eventually(lambda: _at(gate, first[0].last_seq - 1), timeout=10, what="the position heard")
    started = time.monotonic()
    outcomes = await paced.submit_many(settings.tenant, submissions(settings.tenant, 80))
    assert len(outcomes) == 80
    assert 0.5 <= gate.waited_s < 1.5
    assert time.monotonic() - started < 10


async def _at(gate: ReadGate, seq: int) -> bool:
    return gate.position == seq


async def test_a_batch_submit_keeps_the_read_model_within_its_backlog(settings: Settings, nc: NATS) -> None:
    """A slow read side (every commit followed by 50 ms of other work) against a submit of 1,000
    tasks: unpaced, the log runs hundreds of events ahead of the read model; paced, never more than
    the backlog and one piece (plus what a commit in flight has not announced yet)."""
    backlog = 100
    gate = ReadGate(nc, backlog=backlog, max_wait_s=60, lag_s=30)
    unpaced = CommandHandler(EventStore(nc), Timers(nc, settings.timer_lead_s))
    js = nc.jetstream()

    async def slow(_seq: int) -> None:
        await asyncio.sleep(0.05)  # the read side's pace, not a wait for something

    async with _projecting(settings, nc, gate, slow) as (paced, runner):

        async def widest_gap(handler: CommandHandler) -> int:
            """The most the log ran ahead of the projector's commits during a 1,000-task submit and
            until the projector had applied it."""
            widest = 0
            submit = asyncio.create_task(
                handler.submit_many(settings.tenant, submissions(settings.tenant, 1000))
            )
            deadline = time.monotonic() + 60
            while not submit.done() or runner.last_seq < submit.result()[-1].last_seq:
                assert time.monotonic() < deadline, "the submit was not applied"
                stored = (await js.stream_info(sj.EVENTS_STREAM)).state.last_seq
                widest = max(widest, stored - runner.last_seq)
                await asyncio.wait({submit}, timeout=0.005)
            return widest

        assert await widest_gap(unpaced) > 300, "the test's projector keeps up unpaced: it proves nothing"
        gap = await widest_gap(paced)
        # Admitted at `backlog` or less, a piece adds `piece`; a commit's announcement follows it.
        assert gap <= backlog + gate.piece + 10, gap
        assert gate.waits > 0
        # Every piece showed within `lag_s` (30 s here): the handler timed each, and the window
        # widened from a quarter of the backlog to all of it.
        assert gate.window == backlog


@contextlib.asynccontextmanager
async def _projecting(
    settings: Settings, nc: NATS, gate: ReadGate, after_commit: Callable[[int], Awaitable[None]]
) -> AsyncIterator[tuple[CommandHandler, ProjectionRunner]]:
    """A projector running with `after_commit`, and a handler paced by `gate` whose first submit
    the projector has applied."""
    paced = CommandHandler(EventStore(nc), Timers(nc, settings.timer_lead_s), gate=gate)
    runner = ProjectionRunner(nc, settings.database_url, after_commit=after_commit)
    running = asyncio.create_task(runner.run())
    try:
        await gate.admit(0)
        warm = await paced.submit_many(settings.tenant, submissions(settings.tenant, 1))
        await eventually(lambda: _projected(runner, warm[-1].last_seq), timeout=30, what="the projector up")
        yield paced, runner
    finally:
        await runner.shutdown()
        await asyncio.wait_for(running, 30)


async def _projected(runner: ProjectionRunner, seq: int) -> bool:
    return runner.last_seq >= seq


async def test_a_batch_submit_does_not_wait_on_a_projector_stuck_in_a_commit(
    settings: Settings, nc: NATS
) -> None:
    """The projector hangs after a commit (as in a hung PostgreSQL): it holds the events that
    arrive and falls silent, and a batch submit goes on within the gate's `fresh_s`, not piece after
    piece of `max_wait_s`."""
    stuck = asyncio.Event()
    release = asyncio.Event()

    async def hang(_seq: int) -> None:
        if stuck.is_set():
            await release.wait()

    gate = ReadGate(nc, backlog=10, max_wait_s=20)
    async with _projecting(settings, nc, gate, hang) as (paced, _runner):
        try:
            stuck.set()
            started = time.monotonic()
            outcomes = await paced.submit_many(settings.tenant, submissions(settings.tenant, 200))
            assert len(outcomes) == 200
            # 100 pieces of 2 against a projector that never announces again: a 20 s budget unless
            # the gate lets go once it has heard nothing for `fresh_s`.
            assert time.monotonic() - started < read_gate.FRESH_S + 10
        finally:
            release.set()


def test_the_gate_is_a_setting() -> None:
    on = Settings.from_env({})
    assert on.submit_backlog > 0
    off = Settings.from_env({"ORDO_SUBMIT_BACKLOG": "0"})
    assert off.submit_backlog == 0


async def test_the_wired_handler_is_paced_unless_switched_off(settings: Settings, nc: NATS) -> None:
    paced = command_handler(nc, settings)
    assert paced.gate is not None and paced.gate.backlog == settings.submit_backlog
    off = Settings(nats_url=settings.nats_url, database_url=settings.database_url, submit_backlog=0)
    assert command_handler(nc, off).gate is None
    # A worker and the scheduler submit no batches: no gate, no subscription their NATS user lacks.
    assert command_handler(nc, settings, batch_submits=False).gate is None


async def test_the_gateway_paces_its_batch_submits_and_counts_the_waits(
    settings: Settings, nc: NATS, handler: CommandHandler
) -> None:
    """`POST /v1/tasks:batch` through the gateway's own (wired) handler: paced, every task accepted,
    and /metrics says how long the pieces waited."""
    paced = settings.with_(submit_backlog=20)
    async with run_system(paced, nc, handler, worker=False) as system:
        body = {"tasks": [{"type": "demo.echo", "payload": i} for i in range(1000)]}
        r = await system.http.post("/v1/tasks:batch", json=body)
        assert r.status_code == 202, r.text
        assert r.json()["count"] == 1000
        text = (await system.http.get("/metrics")).text
        pieces = _metric(text, "ordo_submit_paced_total")
        assert pieces is not None and pieces > 0, text
        assert (_metric(text, "ordo_submit_paced_seconds_total") or 0) > 0
        window = _metric(text, "ordo_submit_window")
        assert window is not None and 5 <= window <= 20, text


def _metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None

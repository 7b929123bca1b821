"""The projector's commit pacing (projections/runner.py `_paced`): a steady stream of events is applied
in at most one commit per interval (ORDO_PROJECTION_COMMIT_INTERVAL_S); an event after a quiet spell
is applied at once when there is no linger, and after the linger (ORDO_PROJECTION_LINGER_S) together
with what arrived meanwhile when there is one; events that arrived while a batch was applied are not
held on top of that apply when they are many."""

from __future__ import annotations

import asyncio

from nats.aio.client import Client as NATS

from ordo.domain.commands import CancelTask
from ordo.infra import subjects as sj
from ordo.infra.command_handler import CommandHandler
from ordo.infra.pg import connect
from ordo.infra.settings import Settings
from ordo.projections.runner import ProjectionRunner, RunnerConfig
from tests.helpers import eventually
from tests.test_projections_failover import submissions


async def test_a_stream_of_events_is_committed_once_per_interval(
    settings: Settings, nc: NATS, handler: CommandHandler
) -> None:
    commands = submissions(settings.tenant, 12)
    (first,) = await handler.submit_many(settings.tenant, commands[:1])
    commits: list[int] = []

    async def committed(seq: int) -> None:
        commits.append(seq)

    interval = 2.0  # far longer than the submits below take, on any machine
    config = RunnerConfig(batch_size=100, commit_interval_s=interval)
    runner = ProjectionRunner(nc, settings.database_url, config, after_commit=committed)
    running = asyncio.create_task(runner.run())
    try:
        await eventually(lambda: _applied(commits, first.last_seq), timeout=30, what="the first task")
        started = asyncio.get_running_loop().time()
        last = 0
        for command in commands[1:]:  # one event after another, each its own arrival
            (out,) = await handler.submit_many(settings.tenant, [command])
            last = out.last_seq
        sent_within = asyncio.get_running_loop().time() - started
        await eventually(lambda: _applied(commits, last), timeout=30, what="the stream applied")
        after_first = [seq for seq in commits if seq > first.last_seq]
        # Eleven arrivals; without pacing, about one commit each.
        assert len(after_first) <= int(sent_within / interval) + 2, (sent_within, commits)

        # A quiet spell, then one event: applied at once (a commit of its own, not held back).
        commits.clear()
        loop = asyncio.get_running_loop()
        await eventually(lambda: _quiet(runner, interval), timeout=interval + 5, what="a quiet spell")
        cancelled = (await handler.execute(settings.tenant, CancelTask(task_id=commands[0].task_id))).last_seq
        waited = loop.time()
        await eventually(lambda: _applied(commits, cancelled), timeout=30, what="the lone event")
        assert commits == [cancelled]
        assert loop.time() - waited < interval, "a lone event was held"
    finally:
        await runner.shutdown()
        await asyncio.wait_for(running, 30)


async def _applied(commits: list[int], seq: int) -> bool:
    return bool(commits) and commits[-1] >= seq


async def _quiet(runner: ProjectionRunner, interval: float) -> bool:
    """Whether the interval since the runner's last commit has passed (its own clock)."""
    return asyncio.get_running_loop().time() - runner.committed_at >= interval


async def test_after_a_quiet_spell_the_first_event_lingers_and_takes_what_comes_meanwhile(
    settings: Settings, nc: NATS, handler: CommandHandler
) -> None:
    """ORDO_PROJECTION_LINGER_S: the first event after a quiet spell is held for the linger and
    committed together with what arrived during it (decision 50)."""
    commands = submissions(settings.tenant, 2)
    outs = await handler.submit_many(settings.tenant, commands)
    commits: list[int] = []
    committed_at: dict[int, float] = {}
    loop = asyncio.get_running_loop()

    async def committed(seq: int) -> None:
        commits.append(seq)
        committed_at[seq] = loop.time()

    linger = 1.0  # far longer than the two appends below take, on any machine
    config = RunnerConfig(batch_size=100, commit_interval_s=0.01, linger_s=linger)
    runner = ProjectionRunner(nc, settings.database_url, config, after_commit=committed)
    running = asyncio.create_task(runner.run())
    try:
        last = max(out.last_seq for out in outs)
        await eventually(lambda: _applied(commits, last), timeout=30, what="the submits")
        await eventually(lambda: _quiet(runner, 0.01), timeout=5, what="a quiet spell")
        commits.clear()
        appended = loop.time()
        first = (await handler.execute(settings.tenant, CancelTask(task_id=commands[0].task_id))).last_seq
        second = (await handler.execute(settings.tenant, CancelTask(task_id=commands[1].task_id))).last_seq
        await eventually(lambda: _applied(commits, second), timeout=30, what="both events")
        assert first < second
        assert commits == [second], "the first event was not held for the one after it"
        assert committed_at[second] - appended >= 0.8 * linger, "the first event did not linger"
    finally:
        await runner.shutdown()
        await asyncio.wait_for(running, 30)


async def test_events_that_arrived_during_a_long_apply_are_not_held_after_it(
    settings: Settings, nc: NATS, handler: CommandHandler
) -> None:
    """Behind (a batch of a tenth of `batch_size` or more arrived while the one before was
    applied), the batch is applied at once after the commit, not held for the interval."""
    commands = submissions(settings.tenant, 3)
    (first,) = await handler.submit_many(settings.tenant, commands[:1])
    loop = asyncio.get_running_loop()
    commits: list[tuple[int, float]] = []

    async def committed(seq: int) -> None:
        commits.append((seq, loop.time()))

    interval = 2.0
    config = RunnerConfig(batch_size=10, commit_interval_s=interval)  # a tenth: one event
    runner = ProjectionRunner(nc, settings.database_url, config, after_commit=committed)
    running = asyncio.create_task(runner.run())
    holder = await connect(settings.database_url)
    try:
        await eventually(lambda: _reached(commits, first.last_seq), timeout=30, what="the first task")
        async with holder.transaction():  # the next apply waits on the checkpoints (a slow apply)
            await holder.execute("SELECT name FROM projection_checkpoints FOR UPDATE")
            (second,) = await handler.submit_many(settings.tenant, commands[1:2])

            async def waiting() -> bool:
                return bool(
                    await holder.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND datname = current_database() AND pid <> pg_backend_pid()"
                    )
                )

            await eventually(waiting, timeout=interval + 10, what="the second event's apply waiting")
            (third,) = await handler.submit_many(settings.tenant, commands[2:])  # arrives meanwhile
            await eventually(lambda: _delivered(nc, third.last_seq), timeout=10, what="the third event read")
        await eventually(lambda: _reached(commits, third.last_seq), timeout=30, what="the third event")
        at = dict(commits)
        assert second.last_seq in at and third.last_seq in at, commits  # two commits, not one
        assert at[third.last_seq] - at[second.last_seq] < interval / 2, "held after the slow apply"
    finally:
        await holder.close()
        await runner.shutdown()
        await asyncio.wait_for(running, 30)


async def _reached(commits: list[tuple[int, float]], seq: int) -> bool:
    return bool(commits) and commits[-1][0] >= seq


async def _delivered(nc: NATS, seq: int) -> bool:
    """Whether a consumer of the event log (the projector's reader) was handed `seq`."""
    infos = await nc.jetstream().consumers_info(sj.EVENTS_STREAM)
    return any(info.delivered is not None and (info.delivered.stream_seq or 0) >= seq for info in infos)

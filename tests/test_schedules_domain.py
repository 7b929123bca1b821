"""Schedule decider and cron rules, pure: fixed clocks, given events / when command / then events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ordo.domain import schedule_commands as sc
from ordo.domain import schedule_events as se
from ordo.domain.schedule_cron import InvalidCron, next_after, normalize, zone
from ordo.domain.schedule_decide import InvalidSchedule, decide, tick_task_id, upcoming
from ordo.domain.schedule_state import ScheduleState, evolve, initial

T = se.TaskTemplate(type="demo.echo")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc,arg-type]


def fires(expr: str, tz: str, after: datetime, n: int) -> list[datetime]:
    spec = se.ScheduleSpec(cron=normalize(expr), timezone=tz, task=T)
    return upcoming(spec, after, n)


# ---- DST: the documented rule ----------------------------------------------------------------------


def test_berlin_spring_forward_0230_fires_once_at_0330_local() -> None:
    berlin = zone("Europe/Berlin")
    got = fires("30 2 * * *", "Europe/Berlin", utc(2024, 3, 30, 12), 3)
    assert [t.astimezone(berlin).strftime("%m-%d %H:%M %z") for t in got] == [
        "03-31 03:30 +0200",  # 02:30 does not exist: shifted by the gap
        "04-01 02:30 +0200",
        "04-02 02:30 +0200",
    ]


def test_berlin_fall_back_0230_fires_once_at_first_occurrence() -> None:
    got = fires("30 2 * * *", "Europe/Berlin", utc(2024, 10, 26, 12), 2)
    assert got == [utc(2024, 10, 27, 0, 30), utc(2024, 10, 28, 1, 30)]  # 02:30 CEST, then CET


def test_new_york_spring_forward_and_fall_back() -> None:
    ny = zone("America/New_York")
    spring = fires("30 2 * * *", "America/New_York", utc(2024, 3, 9, 12), 2)
    assert [t.astimezone(ny).strftime("%d %H:%M %z") for t in spring] == ["10 03:30 -0400", "11 02:30 -0400"]
    fall = fires("30 1 * * *", "America/New_York", utc(2024, 11, 2, 12), 2)
    assert fall == [utc(2024, 11, 3, 5, 30), utc(2024, 11, 4, 6, 30)]  # 01:30 EDT once, then EST


def test_every_minute_through_the_repeated_hour_fires_each_wall_minute_once() -> None:
    got = fires("* * * * *", "America/New_York", utc(2024, 11, 3, 5, 58), 4)
    # 01:59 EDT, then the repeated 01:00-01:59 EST is skipped: 02:00 EST (07:00 UTC).
    assert got == [
        utc(2024, 11, 3, 5, 59),
        utc(2024, 11, 3, 7, 0),
        utc(2024, 11, 3, 7, 1),
        utc(2024, 11, 3, 7, 2),
    ]


def test_hourly_across_a_gap_never_fires_twice_at_one_instant() -> None:
    got = fires("@hourly", "Europe/Berlin", utc(2024, 3, 30, 23, 30), 4)
    assert got == sorted(set(got)) and len(got) == 4
    assert got[:3] == [utc(2024, 3, 31, 0), utc(2024, 3, 31, 1), utc(2024, 3, 31, 2)]


def test_six_fields_are_seconds_first_like_nats_server() -> None:
    assert normalize("*/15 * * * * *") == "*/15 * * * * *"
    assert normalize("0 9 * * 1-5") == "0 0 9 * * 1-5"
    assert next_after(normalize("5 * * * * *"), zone("UTC"), utc(2024, 1, 1)) == utc(2024, 1, 1, 0, 0, 5)


@pytest.mark.parametrize(
    "expr",
    [
        "0 0 L * *",
        "* * * * 7",
        "5/15 * * * *",
        "0 0 1 * 1",
        "@every 1s",
        "* * * *",
        "H * * * *",
        "1 2 3 4 5 6 7",
        "5-2 * * * *",
        "0 0 ? * *",
        "0 0 1W * *",
        "0 0 * * 1#2",
        "61 * * * *",
        "",
    ],
)
def test_expressions_the_two_dialects_read_differently_are_rejected(expr: str) -> None:
    with pytest.raises(InvalidCron):
        normalize(expr)


def test_unknown_zone_and_impossible_schedules_are_invalid() -> None:
    with pytest.raises(InvalidCron):
        zone("Mars/Olympus")
    state = initial("s1")
    bad = [
        se.ScheduleSpec(cron="* * * * *", timezone="Nope/Zone", task=T),
        se.ScheduleSpec(cron="0 0 30 2 *", timezone="UTC", task=T),
        se.ScheduleSpec(
            cron="* * * * *", timezone="UTC", task=T, start_at=utc(2030, 1, 2), end_at=utc(2030, 1, 1)
        ),
    ]
    for spec in bad:
        with pytest.raises(InvalidSchedule):
            decide(sc.CreateSchedule(schedule_id="s1", tenant="t", spec=spec, now=utc(2024, 1, 1)), state)


# ---- decider: ticks, overlap, catch-up -------------------------------------------------------------


def created(spec: se.ScheduleSpec, now: datetime) -> ScheduleState:
    state = initial("s1")
    for e in decide(sc.CreateSchedule(schedule_id="s1", tenant="t", spec=spec, now=now), state):
        state = evolve(state, e)
    return state


def tick(
    state: ScheduleState, at: datetime, now: datetime, prev: sc.PreviousRun | None = None
) -> list[se.ScheduleEvent]:
    return decide(sc.Tick(schedule_id="s1", tenant="t", tick_at=at, now=now, previous=prev), state)


def every_second(**kw: object) -> se.ScheduleSpec:
    return se.ScheduleSpec(cron=normalize("* * * * * *"), timezone="UTC", task=T, **kw)  # type: ignore[arg-type]


def test_a_tick_fires_once_with_a_derived_task_id_and_a_duplicate_decides_nothing() -> None:
    t0 = utc(2024, 1, 1, 0, 0, 1)
    state = created(every_second(), utc(2024, 1, 1))
    assert state.next_at == t0
    events = tick(state, t0, t0 + timedelta(milliseconds=3))
    assert events == [
        se.ScheduleFired(tick_at=t0, task_id=tick_task_id("t", "s1", t0), next_at=t0 + timedelta(seconds=1))
    ]
    after = evolve(state, events[0])
    assert tick(after, t0, t0 + timedelta(milliseconds=5)) == []  # redelivered or second scheduler


def test_overlap_policies() -> None:
    t0 = utc(2024, 1, 1, 0, 0, 1)
    running = sc.PreviousRun(task_id="prev", active=True)
    skip = tick(created(every_second(overlap=se.OverlapPolicy.SKIP), utc(2024, 1, 1)), t0, t0, running)
    assert [type(e) for e in skip] == [se.ScheduleSkipped] and skip[0].running_task_id == "prev"  # type: ignore[attr-defined]
    allow = tick(created(every_second(overlap=se.OverlapPolicy.ALLOW), utc(2024, 1, 1)), t0, t0, running)
    assert [type(e) for e in allow] == [se.ScheduleFired]
    cancel = tick(
        created(every_second(overlap=se.OverlapPolicy.CANCEL_PREVIOUS), utc(2024, 1, 1)), t0, t0, running
    )
    assert isinstance(cancel[0], se.ScheduleFired) and cancel[0].cancelled_task_id == "prev"
    state = created(every_second(overlap=se.OverlapPolicy.BUFFER_ONE), utc(2024, 1, 1))
    buffered = tick(state, t0, t0, running)
    assert [type(e) for e in buffered] == [se.ScheduleBuffered]
    state = evolve(state, buffered[0])
    t1 = t0 + timedelta(seconds=1)
    full = tick(state, t1, t1, running)
    assert isinstance(full[0], se.ScheduleSkipped) and full[0].reason == "buffer_full"
    assert tick(state, t0, t1, running) == []  # the buffered tick keeps waiting
    done = tick(state, t0, t1, sc.PreviousRun(task_id="prev", active=False))
    assert isinstance(done[0], se.ScheduleFired) and done[0].buffered and done[0].tick_at == t0


@pytest.mark.parametrize(
    ("policy", "types"),
    [
        (se.CatchupPolicy.SKIP, [se.ScheduleMissed, se.ScheduleFired]),
        (se.CatchupPolicy.RUN_ONCE, [se.ScheduleMissed, se.ScheduleCaughtUp, se.ScheduleFired]),
        (se.CatchupPolicy.RUN_ALL, [se.ScheduleCaughtUp] * 5 + [se.ScheduleFired]),
    ],
)
@pytest.mark.parametrize("overlap", list(se.OverlapPolicy))
def test_catch_up_after_downtime(
    policy: se.CatchupPolicy, types: list[type], overlap: se.OverlapPolicy
) -> None:
    """The runs a catch-up asks for and the latest tick's start together, whatever `overlap` says
    (with the default `skip`, the first caught_up run skipped every other one)."""
    t0 = utc(2024, 1, 1, 0, 0, 1)
    state = created(every_second(catchup=policy, overlap=overlap), utc(2024, 1, 1))
    now = t0 + timedelta(seconds=5, milliseconds=300)  # ticks t0..t0+5 are due; t0+5 is on time
    events = tick(state, t0, now)
    assert [type(e) for e in events] == types
    assert events[-1].tick_at == t0 + timedelta(seconds=5)  # type: ignore[attr-defined]
    assert all(e.next_at == t0 + timedelta(seconds=6) for e in events)  # type: ignore[attr-defined]
    if policy is se.CatchupPolicy.SKIP:
        first = events[0]
        assert isinstance(first, se.ScheduleMissed)
        assert first == se.ScheduleMissed(
            count=5, first_at=t0, last_at=t0 + timedelta(seconds=4), next_at=first.next_at
        )
    if policy is se.CatchupPolicy.RUN_ONCE:
        assert events[0].count == 4 and events[1].tick_at == t0 + timedelta(seconds=4)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("overlap", "types"),
    [
        (se.OverlapPolicy.SKIP, [se.ScheduleSkipped] * 3),
        (se.OverlapPolicy.BUFFER_ONE, [se.ScheduleSkipped, se.ScheduleSkipped, se.ScheduleBuffered]),
        (se.OverlapPolicy.CANCEL_PREVIOUS, [se.ScheduleCaughtUp, se.ScheduleCaughtUp, se.ScheduleFired]),
        (se.OverlapPolicy.ALLOW, [se.ScheduleCaughtUp, se.ScheduleCaughtUp, se.ScheduleFired]),
    ],
)
def test_catch_up_beside_a_run_from_before_the_downtime(overlap: se.OverlapPolicy, types: list[type]) -> None:
    t0 = utc(2024, 1, 1, 0, 0, 1)
    state = created(every_second(catchup=se.CatchupPolicy.RUN_ALL, overlap=overlap), utc(2024, 1, 1))
    running = sc.PreviousRun(task_id="prev", active=True)
    events = tick(state, t0, t0 + timedelta(seconds=2, milliseconds=300), running)
    assert [type(e) for e in events] == types
    fired = events[-1]
    cancelled = fired.cancelled_task_id if isinstance(fired, se.ScheduleFired) else None
    assert cancelled == ("prev" if overlap is se.OverlapPolicy.CANCEL_PREVIOUS else None)


def test_pause_resume_delete_and_trigger() -> None:
    now = utc(2024, 1, 1)
    state = created(every_second(), now)
    paused = decide(sc.PauseSchedule(schedule_id="s1"), state)
    state = evolve(state, paused[0])
    assert state.next_at is None and decide(sc.PauseSchedule(schedule_id="s1"), state) == []
    assert tick(state, now + timedelta(seconds=1), now + timedelta(seconds=1)) == []
    resumed = decide(sc.ResumeSchedule(schedule_id="s1", now=now + timedelta(seconds=10)), state)
    assert resumed == [se.ScheduleResumed(next_at=now + timedelta(seconds=11))]
    trig = decide(sc.TriggerSchedule(schedule_id="s1", now=now, task_id="x"), state)
    assert trig == [se.ScheduleTriggered(at=now, task_id="x")]
    state = evolve(state, decide(sc.DeleteSchedule(schedule_id="s1"), state)[0])
    assert decide(sc.DeleteSchedule(schedule_id="s1"), state) == []
    assert not state.exists and state.next_at is None


def test_an_update_that_leaves_a_schedule_unable_to_fire_is_refused_but_an_ended_one_may_be_edited() -> None:
    t0 = utc(2024, 1, 1)
    state = created(every_second(end_at=utc(2024, 1, 2)), t0)

    def update(now: datetime, **changes: object) -> list[se.ScheduleEvent]:
        spec = every_second(**{"end_at": utc(2024, 1, 2), **changes})
        return decide(sc.UpdateSchedule(schedule_id="s1", spec=spec, now=now), state)

    with pytest.raises(InvalidSchedule, match="never fire"):
        update(t0 + timedelta(hours=1), end_at=utc(2023, 1, 1))  # was firing; would not
    assert update(t0 + timedelta(hours=1), description="hourly report")  # still fires: fine
    after_end = utc(2024, 1, 3)  # already past its end: its description may still change
    (edited,) = update(after_end, description="retired")
    assert isinstance(edited, se.ScheduleUpdated) and edited.next_at is None


def test_a_schedule_past_its_end_is_ended_and_an_edit_of_its_end_makes_it_active_again() -> None:
    """A user's pass (2026-12-06): a schedule past its `end_at` said `active` for good."""
    t0 = utc(2024, 1, 1, 0, 0, 1)
    state = created(every_second(end_at=t0), utc(2024, 1, 1))
    assert state.status == "active"
    for e in tick(state, t0, t0):
        state = evolve(state, e)
    assert state.next_at is None and state.status == "ended"
    later = every_second(end_at=t0 + timedelta(hours=1))
    (updated,) = decide(sc.UpdateSchedule(schedule_id="s1", spec=later, now=t0 + timedelta(seconds=2)), state)
    assert evolve(state, updated).status == "active"
    paused = evolve(state, decide(sc.PauseSchedule(schedule_id="s1"), state)[0])
    assert paused.status == "paused"


@pytest.mark.parametrize("reason", ["paused", "updated", "deleted"])
def test_a_buffered_tick_dropped_by_a_pause_an_edit_or_a_delete_is_recorded_as_skipped(reason: str) -> None:
    """A user's pass (2026-12-06): a tick buffered behind a running task vanished when the schedule
    was paused, with no fired, skipped or missed decision and in no counter."""
    t0 = utc(2024, 1, 1, 0, 0, 1)
    state = created(every_second(overlap=se.OverlapPolicy.BUFFER_ONE), utc(2024, 1, 1))
    running = sc.PreviousRun(task_id="prev", active=True)
    state = evolve(state, tick(state, t0, t0, running)[0])
    assert state.buffered_at == t0
    command: sc.AnyScheduleCommand = sc.DeleteSchedule(schedule_id="s1")
    if reason == "paused":
        command = sc.PauseSchedule(schedule_id="s1")
    elif reason == "updated":
        command = sc.UpdateSchedule(schedule_id="s1", spec=every_second(description="x"), now=t0)
    events = decide(command, state)
    skipped = events[0]
    assert isinstance(skipped, se.ScheduleSkipped) and len(events) == 2
    assert (skipped.tick_at, skipped.reason) == (t0, reason)
    for e in events:
        state = evolve(state, e)
    assert state.buffered_at is None and state.skipped == 1

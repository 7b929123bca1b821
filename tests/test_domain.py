"""The decider, as given-events / when-command / then-events tables, over every (status, command)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from ordo.domain import commands as c
from ordo.domain import events as ev
from ordo.domain.backoff import backoff_seconds
from ordo.domain.decide import decide
from ordo.domain.errors import DomainError, IdempotencyConflict
from ordo.domain.state import TaskState, accepts, evolve, fold
from ordo.domain.status import TaskStatus

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SUB = ev.Submitted(task_type="x", queue="default", tenant="t")
START = ev.AttemptStarted(attempt=1, worker_id="w", lease_until=T0 + timedelta(seconds=30), dispatch=1)
FAIL = ev.AttemptFailed(attempt=1, error=ev.ErrorInfo(kind="E"))

GIVEN: dict[str, list[ev.Event]] = {
    "scheduled": [SUB, ev.Scheduled(run_at=T0 + timedelta(hours=1))],
    "queued": [SUB],
    "paused": [SUB, ev.Paused()],
    "running": [SUB, START],
    "retrying": [
        SUB,
        START,
        FAIL,
        ev.RetryScheduled(attempt=1, retry_at=T0 + timedelta(seconds=5)),
    ],
    "cancelling": [SUB, START, ev.CancelRequested()],
    "succeeded": [SUB, START, ev.Succeeded(attempt=1)],
    "failed": [SUB, START, FAIL, ev.Failed(attempt=1), ev.DeadLettered()],
    "cancelled": [SUB, ev.Cancelled()],
}


def commands_for(s: TaskState) -> dict[str, c.TaskCommand]:
    """One command of each kind, addressed as a worker/operator would in that state."""
    return {
        "SubmitTask": c.SubmitTask(task_id="a", tenant="t", queue="default", task_type="x", now=T0),
        "EnqueueDue": c.EnqueueDue(task_id="a", due_at=s.due_at or T0),
        "StartAttempt": c.StartAttempt(
            task_id="a", dispatch=s.dispatch, worker_id="w2",
            now=T0 + timedelta(seconds=60), lease_until=T0 + timedelta(seconds=90),
        ),
        "ExtendLease": c.ExtendLease(
            task_id="a", attempt=1, worker_id="w", lease_until=T0 + timedelta(seconds=60)
        ),
        "ReportProgress": c.ReportProgress(task_id="a", attempt=1, worker_id="w", pct=50),
        "CompleteAttempt": c.CompleteAttempt(task_id="a", attempt=1, worker_id="w"),
        "FailAttempt": c.FailAttempt(
            task_id="a", attempt=1, worker_id="w", error=ev.ErrorInfo(kind="E"),
            retry_at=T0 + timedelta(seconds=5),
        ),
        "ConfirmCancelled": c.ConfirmCancelled(task_id="a", attempt=1, worker_id="w"),
        "ReleaseAttempt": c.ReleaseAttempt(task_id="a", attempt=1, worker_id="w"),
        "CancelTask": c.CancelTask(task_id="a"),
        "PauseTask": c.PauseTask(task_id="a"),
        "ResumeTask": c.ResumeTask(task_id="a"),
        "UpdateTask": c.UpdateTask(task_id="a", now=T0, priority=1),
        "ReplayTask": c.ReplayTask(task_id="a"),
        "ArchiveTask": c.ArchiveTask(task_id="a"),
        "UnarchiveTask": c.UnarchiveTask(task_id="a"),
    }  # fmt: skip


# status -> command -> the events decided ("-" for none) or "!Error".
THEN: dict[str, dict[str, str]] = {
    "scheduled": {
        "SubmitTask": "!TaskAlreadyExists",
        "EnqueueDue": "queued",
        "StartAttempt": "-",
        "ExtendLease": "zombie_rejected",
        "ReportProgress": "zombie_rejected",
        "CompleteAttempt": "zombie_rejected",
        "FailAttempt": "zombie_rejected",
        "ConfirmCancelled": "zombie_rejected",
        "ReleaseAttempt": "zombie_rejected",
        "CancelTask": "cancelled",
        "PauseTask": "paused",
        "ResumeTask": "-",
        "UpdateTask": "updated",
        "ReplayTask": "!InvalidTransition",
        "ArchiveTask": "!InvalidTransition",
        "UnarchiveTask": "-",
    },
    "queued": {
        "SubmitTask": "!TaskAlreadyExists",
        "EnqueueDue": "-",
        "StartAttempt": "attempt_started",
        "ExtendLease": "zombie_rejected",
        "ReportProgress": "zombie_rejected",
        "CompleteAttempt": "zombie_rejected",
        "FailAttempt": "zombie_rejected",
        "ConfirmCancelled": "zombie_rejected",
        "ReleaseAttempt": "zombie_rejected",
        "CancelTask": "cancelled",
        "PauseTask": "paused",
        "ResumeTask": "-",
        "UpdateTask": "updated",
        "ReplayTask": "!InvalidTransition",
        "ArchiveTask": "!InvalidTransition",
        "UnarchiveTask": "-",
    },
    "paused": {
        "SubmitTask": "!TaskAlreadyExists",
        "EnqueueDue": "-",
        "StartAttempt": "-",
        "ExtendLease": "zombie_rejected",
        "ReportProgress": "zombie_rejected",
        "CompleteAttempt": "zombie_rejected",
        "FailAttempt": "zombie_rejected",
        "ConfirmCancelled": "zombie_rejected",
        "ReleaseAttempt": "zombie_rejected",
        "CancelTask": "cancelled",
        "PauseTask": "-",
        "ResumeTask": "resumed",
        "UpdateTask": "updated",
        "ReplayTask": "!InvalidTransition",
        "ArchiveTask": "!InvalidTransition",
        "UnarchiveTask": "-",
    },
    "running": {
        "SubmitTask": "!TaskAlreadyExists",
        "EnqueueDue": "-",
        "StartAttempt": "attempt_timed_out attempt_started",
        "ExtendLease": "lease_extended",
        "ReportProgress": "progressed",
        "CompleteAttempt": "succeeded",
        "FailAttempt": "attempt_failed retry_scheduled",
        "ConfirmCancelled": "zombie_rejected",
        "ReleaseAttempt": "attempt_released",
        "CancelTask": "cancel_requested",
        "PauseTask": "!InvalidTransition",
        "ResumeTask": "!InvalidTransition",
        "UpdateTask": "!InvalidTransition",
        "ReplayTask": "!InvalidTransition",
        "ArchiveTask": "!InvalidTransition",
        "UnarchiveTask": "-",
    },
    "retrying": {
        "SubmitTask": "!TaskAlreadyExists",
        "EnqueueDue": "queued",
        "StartAttempt": "-",
        "ExtendLease": "zombie_rejected",
        "ReportProgress": "zombie_rejected",
        "CompleteAttempt": "zombie_rejected",
        "FailAttempt": "-",
        "ConfirmCancelled": "zombie_rejected",
        "ReleaseAttempt": "zombie_rejected",
        "CancelTask": "cancelled",
        "PauseTask": "paused",
        "ResumeTask": "-",
        "UpdateTask": "!InvalidTransition",
        "ReplayTask": "!InvalidTransition",
        "ArchiveTask": "!InvalidTransition",
        "UnarchiveTask": "-",
    },
    "cancelling": {
        "SubmitTask": "!TaskAlreadyExists",
        "EnqueueDue": "-",
        "StartAttempt": "attempt_timed_out cancelled",
        "ExtendLease": "lease_extended",
        "ReportProgress": "progressed",
        "CompleteAttempt": "succeeded",
        "FailAttempt": "attempt_failed cancelled",
        "ConfirmCancelled": "cancelled",
        "ReleaseAttempt": "attempt_released cancelled",
        "CancelTask": "-",
        "PauseTask": "!InvalidTransition",
        "ResumeTask": "!InvalidTransition",
        "UpdateTask": "!InvalidTransition",
        "ReplayTask": "!InvalidTransition",
        "ArchiveTask": "!InvalidTransition",
        "UnarchiveTask": "-",
    },
    "succeeded": {
        "SubmitTask": "!TaskAlreadyExists",
        "EnqueueDue": "-",
        "StartAttempt": "-",
        "ExtendLease": "zombie_rejected",
        "ReportProgress": "zombie_rejected",
        "CompleteAttempt": "-",
        "FailAttempt": "zombie_rejected",
        "ConfirmCancelled": "zombie_rejected",
        "ReleaseAttempt": "zombie_rejected",
        "CancelTask": "!InvalidTransition",
        "PauseTask": "!InvalidTransition",
        "ResumeTask": "!InvalidTransition",
        "UpdateTask": "!InvalidTransition",
        "ReplayTask": "!InvalidTransition",
        "ArchiveTask": "archived",
        "UnarchiveTask": "-",
    },
    "failed": {
        "SubmitTask": "!TaskAlreadyExists",
        "EnqueueDue": "-",
        "StartAttempt": "-",
        "ExtendLease": "zombie_rejected",
        "ReportProgress": "zombie_rejected",
        "CompleteAttempt": "zombie_rejected",
        "FailAttempt": "-",
        "ConfirmCancelled": "zombie_rejected",
        "ReleaseAttempt": "zombie_rejected",
        "CancelTask": "!InvalidTransition",
        "PauseTask": "!InvalidTransition",
        "ResumeTask": "!InvalidTransition",
        "UpdateTask": "!InvalidTransition",
        "ReplayTask": "replayed",
        "ArchiveTask": "archived",
        "UnarchiveTask": "-",
    },
    "cancelled": {
        "SubmitTask": "!TaskAlreadyExists",
        "EnqueueDue": "-",
        "StartAttempt": "-",
        "ExtendLease": "zombie_rejected",
        "ReportProgress": "zombie_rejected",
        "CompleteAttempt": "zombie_rejected",
        "FailAttempt": "zombie_rejected",
        "ConfirmCancelled": "-",
        "ReleaseAttempt": "zombie_rejected",
        "CancelTask": "-",
        "PauseTask": "!InvalidTransition",
        "ResumeTask": "!InvalidTransition",
        "UpdateTask": "!InvalidTransition",
        "ReplayTask": "replayed",
        "ArchiveTask": "archived",
        "UnarchiveTask": "-",
    },
}


def _outcome(command: c.TaskCommand, state: TaskState) -> str:
    try:
        return " ".join(ev.event_name(e) for e in decide(command, state)) or "-"
    except DomainError as exc:
        return "!" + type(exc).__name__


CASES = [(status, name) for status in GIVEN for name in THEN[status]]


def test_an_archived_task_is_unarchived_once() -> None:
    state = fold("a", [*GIVEN["succeeded"], ev.Archived()])
    assert state.archived
    events = decide(c.UnarchiveTask(task_id="a"), state)
    assert [ev.event_name(e) for e in events] == ["unarchived"]
    state = evolve(state, events[0])
    assert not state.archived and state.status == TaskStatus.SUCCEEDED
    assert decide(c.UnarchiveTask(task_id="a"), state) == []  # listed already: nothing to append


def test_the_table_covers_every_status_and_command() -> None:
    assert set(GIVEN) == {s.value for s in TaskStatus}
    for status in GIVEN:
        assert set(THEN[status]) == set(commands_for(fold("a", GIVEN[status])))


@pytest.mark.parametrize(("status", "command"), CASES)
def test_decide(status: str, command: str) -> None:
    state = fold("a", GIVEN[status])
    assert state.status == status
    assert _outcome(commands_for(state)[command], state) == THEN[status][command]


@pytest.mark.parametrize(("status", "command"), CASES)
def test_decided_events_evolve_without_error(status: str, command: str) -> None:
    state = fold("a", GIVEN[status])
    try:
        events = decide(commands_for(state)[command], state)
    except DomainError:
        return
    for event in events:
        state = evolve(state, event)
    assert state.version == len(GIVEN[status]) + len(events)


@pytest.mark.parametrize(("status", "command"), CASES)
def test_every_decided_event_is_accepted_by_evolve(status: str, command: str) -> None:
    state = fold("a", GIVEN[status])
    try:
        events = decide(commands_for(state)[command], state)
    except DomainError:
        return
    for event in events:
        assert accepts(state, event), (event, state.status)
        state = evolve(state, event)


LEASE = T0 + timedelta(seconds=30)
# Events written raw (no decider, no optimistic concurrency) by a credential that may publish
# attempt events: given a status, each folds as nothing (the task's state is unchanged).
IGNORED: dict[str, list[ev.Event]] = {
    "scheduled": [
        ev.Succeeded(attempt=7, result=msgspec.Raw(b'{"forged":1}')),
        ev.Succeeded(attempt=0),
        ev.Failed(attempt=0),
        ev.AttemptFailed(attempt=0, error=ev.ErrorInfo(kind="E")),
        ev.RetryScheduled(attempt=0, retry_at=T0),
        ev.AttemptStarted(attempt=1, worker_id="x", lease_until=LEASE),
        ev.AttemptReleased(attempt=0),
        ev.Cancelled(attempt=3),
    ],
    "queued": [
        ev.Succeeded(attempt=0),
        ev.Succeeded(attempt=1),
        ev.AttemptStarted(attempt=5, worker_id="x", lease_until=LEASE),
        ev.LeaseExtended(attempt=1, lease_until=LEASE),
        ev.Progressed(attempt=1, pct=50),
        ev.Submitted(task_type="y", queue="other", tenant="t"),
    ],
    "paused": [ev.Succeeded(attempt=0), ev.AttemptStarted(attempt=1, worker_id="x", lease_until=LEASE)],
    "running": [
        ev.Succeeded(attempt=2),
        ev.Succeeded(attempt=0),
        ev.AttemptStarted(attempt=2, worker_id="x", lease_until=LEASE),  # its lease is held
        ev.AttemptStarted(attempt=1, worker_id="x", lease_until=LEASE),
        ev.Failed(attempt=1),  # no failure report of the attempt came first
        ev.RetryScheduled(attempt=1, retry_at=T0),
        ev.AttemptReleased(attempt=2),
        ev.Cancelled(attempt=1),  # a running task is cancelled through cancel_requested
        ev.DeadLettered(reason="forged"),
    ],
    "retrying": [
        ev.Succeeded(attempt=1),
        ev.Failed(attempt=1),
        ev.AttemptStarted(attempt=2, worker_id="x", lease_until=LEASE),
    ],
    "cancelling": [ev.Succeeded(attempt=2), ev.Failed(attempt=1), ev.Cancelled(attempt=0)],
    "succeeded": [
        ev.Succeeded(attempt=1, result=msgspec.Raw(b'{"forged":1}')),
        ev.Failed(attempt=1),
        ev.Cancelled(attempt=1),
        ev.AttemptStarted(attempt=2, worker_id="x", lease_until=LEASE),
        ev.AttemptFailed(attempt=1, error=ev.ErrorInfo(kind="E")),
        ev.DeadLettered(),
    ],
    "failed": [ev.Succeeded(attempt=1), ev.Cancelled(attempt=1), ev.Failed(attempt=1)],
    "cancelled": [ev.Succeeded(attempt=0), ev.Cancelled(), ev.Failed(attempt=0)],
}
IGNORED_CASES = [(status, i) for status, forged in IGNORED.items() for i in range(len(forged))]


def test_the_ignored_table_covers_every_status() -> None:
    assert set(IGNORED) == {s.value for s in TaskStatus}


@pytest.mark.parametrize(("status", "index"), IGNORED_CASES)
def test_an_event_the_decider_could_not_have_appended_folds_as_nothing(status: str, index: int) -> None:
    given = fold("a", GIVEN[status])
    forged = IGNORED[status][index]
    assert not accepts(given, forged)
    after = evolve(given, forged)
    assert after == msgspec.structs.replace(given, version=given.version + 1)


def test_two_raw_succeeded_on_a_scheduled_task_leave_it_scheduled() -> None:
    forged = ev.Succeeded(attempt=7, result=msgspec.Raw(b'{"forged":1}'))
    state = fold("a", [*GIVEN["scheduled"], forged, forged])
    assert (state.status, state.attempt, state.result) == (TaskStatus.SCHEDULED, 0, None)


def test_events_before_submitted_fold_as_nothing() -> None:
    state = fold("a", [ev.Cancelled(), ev.Succeeded(attempt=0)])
    assert not state.exists and state.status is TaskStatus.QUEUED


def test_commands_on_a_missing_task_are_not_found() -> None:
    state = fold("a", [])
    for name, command in commands_for(state).items():
        if name != "SubmitTask":
            assert _outcome(command, state) == "!TaskNotFound"


def test_submit_with_future_run_at_is_scheduled_and_past_run_at_is_queued() -> None:
    empty = fold("a", [])
    later = c.SubmitTask(
        task_id="a", tenant="t", queue="q", task_type="x", now=T0, run_at=T0 + timedelta(seconds=5)
    )
    assert fold("a", decide(later, empty)).status is TaskStatus.SCHEDULED
    past = c.SubmitTask(
        task_id="a", tenant="t", queue="q", task_type="x", now=T0, run_at=T0 - timedelta(seconds=5)
    )
    assert fold("a", decide(past, empty)).status is TaskStatus.QUEUED


def test_idempotent_resubmit_same_body_is_nothing_and_different_body_conflicts() -> None:
    first = c.SubmitTask(
        task_id="a",
        tenant="t",
        queue="q",
        task_type="x",
        now=T0,
        idempotency_key="k",
        body_hash="h1",
    )
    state = fold("a", decide(first, fold("a", [])))
    assert decide(first, state) == []
    with pytest.raises(IdempotencyConflict):
        decide(msgspec.structs.replace(first, body_hash="h2"), state)


def test_attempts_exhausted_fail_and_dead_letter() -> None:
    state = fold("a", [ev.Submitted(task_type="x", queue="q", tenant="t", max_attempts=1), START])
    events = decide(
        c.FailAttempt(task_id="a", attempt=1, worker_id="w", error=ev.ErrorInfo(kind="E"), retry_at=T0),
        state,
    )
    assert [ev.event_name(e) for e in events] == ["attempt_failed", "failed", "dead_lettered"]


def test_lost_lease_with_no_attempts_left_dead_letters_on_redelivery() -> None:
    state = fold("a", [ev.Submitted(task_type="x", queue="q", tenant="t", max_attempts=1), START])
    cmd = c.StartAttempt(
        task_id="a", dispatch=1, worker_id="w2", now=T0 + timedelta(minutes=5), lease_until=T0
    )
    names = [ev.event_name(e) for e in decide(cmd, state)]
    assert names == ["attempt_timed_out", "failed", "dead_lettered"]


def test_a_ticket_returning_while_the_lease_is_held_is_refused() -> None:
    from ordo.domain.errors import LeaseHeld

    state = fold("a", [SUB, START])
    cmd = c.StartAttempt(task_id="a", dispatch=1, worker_id="w2", now=T0, lease_until=T0)
    with pytest.raises(LeaseHeld):
        decide(cmd, state)


def test_a_late_result_from_an_old_attempt_is_rejected_as_a_zombie() -> None:
    second = ev.AttemptStarted(attempt=2, worker_id="w2", lease_until=T0, dispatch=1)
    state = fold("a", [SUB, START, ev.AttemptTimedOut(attempt=1, reason="lease_expired"), second])
    events = decide(c.CompleteAttempt(task_id="a", attempt=1, worker_id="w"), state)
    assert events == [ev.ZombieRejected(attempt=1, current_attempt=2, what="succeeded", worker_id="w")]


def test_replay_gives_a_fresh_budget_and_numbering_continues() -> None:
    failed = fold("a", GIVEN["failed"])
    state = fold("a", [*GIVEN["failed"], *decide(c.ReplayTask(task_id="a"), failed)])
    assert state.status is TaskStatus.QUEUED and state.attempts_left == 3 and state.attempt == 1
    started = decide(
        c.StartAttempt(task_id="a", dispatch=state.dispatch, worker_id="w", now=T0, lease_until=T0),
        state,
    )
    assert started[0] == ev.AttemptStarted(attempt=2, worker_id="w", lease_until=T0, dispatch=state.dispatch)


def test_a_released_attempt_goes_back_to_queued_without_using_the_budget() -> None:
    state = fold("a", [SUB, START])
    events = decide(c.ReleaseAttempt(task_id="a", attempt=1, worker_id="w"), state)
    assert events == [ev.AttemptReleased(attempt=1, worker_id="w", reason="worker shutdown")]
    state = fold("a", [SUB, START, *events])
    assert (state.status, state.dispatch, state.attempts_left) == (TaskStatus.QUEUED, 1, 3)
    # The released ticket (same dispatch number) starts attempt 2 at once: no lease to wait out.
    again = c.StartAttempt(task_id="a", dispatch=1, worker_id="w2", now=T0, lease_until=T0)
    assert [ev.event_name(e) for e in decide(again, state)] == ["attempt_started"]
    assert decide(c.ReleaseAttempt(task_id="a", attempt=1, worker_id="w"), state) == []


def test_resume_re_tickets_a_queued_task_so_the_old_ticket_is_stale() -> None:
    state = fold("a", [SUB, ev.Paused(), ev.Resumed()])
    assert state.status is TaskStatus.QUEUED and state.dispatch == 2
    old = c.StartAttempt(task_id="a", dispatch=1, worker_id="w", now=T0, lease_until=T0)
    assert decide(old, state) == []


def test_recorded_old_payloads_still_decode() -> None:
    fixtures = [
        b'{"event":"submitted","task_type":"demo.echo","queue":"default","tenant":"default","payload":{"x":1}}',
        b'{"event":"attempt_started","attempt":1,"worker_id":"w1","lease_until":"2026-01-01T00:00:30Z"}',
        b'{"event":"succeeded","attempt":1,"result":{"x":1}}',
    ]
    history = [ev.decode_event(f) for f in fixtures]
    assert fold("a", history).status is TaskStatus.SUCCEEDED


@pytest.mark.parametrize("attempt", [1, 2, 30, 1024, 1025, 10**6])
def test_backoff_is_capped_at_any_attempt_a_replayed_task_reaches(attempt: int) -> None:
    """A task replayed again and again counts attempts past 1,024, where 2.0 ** (attempt - 1) raised
    in the worker, so the handler's error was lost and the attempt sat out its lease."""
    delay = backoff_seconds(attempt, base=1.0, cap=300.0, jitter=0.5)  # jitter 0.5: no spread
    assert delay == min(300.0, 2.0 ** min(attempt - 1, 20))
    assert 0 < backoff_seconds(attempt, base=400.0, cap=500.0, jitter=0.99) <= 600.0

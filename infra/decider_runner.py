"""The loop every aggregate's handler runs: load -> fold -> decide -> append, retried on conflict.

Tasks, schedules and queues each have a decider in `ordo.domain` and their own effects (tickets,
timers, a nested task command); what they share is this loop. `load` returns the state folded from
the log and the sequence the append must expect; `decide` may await (a schedule tick asks about its
previous run); `store` appends and performs the effects, raising ConcurrencyError when another
writer got there first, which reloads and decides again, at most `retries` times.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from ordo.infra.event_store import ConcurrencyError

S = TypeVar("S")
E = TypeVar("E")
R = TypeVar("R")


@dataclass(frozen=True)
class Decision(Generic[S, E]):
    """A decision taken on `before` (at log sequence `last_seq`): its events and the state after."""

    before: S
    after: S
    events: list[E]
    last_seq: int


async def run_decider(
    what: str,
    load: Callable[[], Awaitable[tuple[S, int]]],
    decide: Callable[[S], Awaitable[list[E]]],
    evolve: Callable[[S, E], S],
    store: Callable[[Decision[S, E]], Awaitable[R]],
    unchanged: Callable[[Decision[S, E]], Awaitable[R]],
    retries: int = 8,
) -> R:
    """Decide on the latest state and store the events; `unchanged` answers a decision of none."""
    for _ in range(retries):
        before, last_seq = await load()
        events = await decide(before)
        after = before
        for event in events:
            after = evolve(after, event)
        decision = Decision(before, after, events, last_seq)
        if not events:
            return await unchanged(decision)
        try:
            return await store(decision)
        except ConcurrencyError:
            continue
    raise ConcurrencyError(f"{what}: too many concurrent changes")

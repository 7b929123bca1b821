"""A ticket of a type this worker has no handler for, handed to a worker that has one (decision 54).

The worker without the handler hands the band ticket back (a NAK with a delay, Executor._deferred),
and a NAK'd ticket goes to whichever pull request of its band the server holds first, often the
same worker's own long poll. So it also publishes a copy of the dispatch (its origin subject and
sequence, like a type-limit lane's: infra/dispatch.py) on the type's handover subject
`ordo.work.<tenant>.<queue>.wait.<lane>`, until one is stored for the dispatch (a Nats-Msg-Id of
task and origin sequence), and a notice on core NATS, `ordo.worker.wait.<queue>.<lane>` (at most
every 0.5 s per queue and type: Executor._offer).

A worker with the handler listens for its queues' notices; one for a type it has makes it take what
waits on that type's durable (`wait_<queue>_<lane>`, created by the first worker that reads it, and
shared by every worker with the handler), up to its free slots, without waiting. The copy is then a
ticket like any other: its start expects the origin's sequence, so the copy and the band ticket
start the task once between them, and the one left over finds it started (a stale ticket, acked).
Nothing is lost on the way: the band ticket stays on its consumer until the task has started, and
the copy's worker holds the copy as its attempt's lease. A worker without the handler never starts
a task another worker started (Executor._start). No long poll waits on a handover
durable: it is read only when a notice says a copy waits.
"""

from __future__ import annotations

import logging

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig

from ordo.infra import subjects as sj
from ordo.infra.dispatch import Dispatch
from ordo.infra.settings import Settings
from ordo.workers.consumer import dispatch_consumer_config
from ordo.workers.limits import copy_headers, lane_for

log = logging.getLogger("ordo.worker.handover")


def consumer_config(queue: str, task_type: str, settings: Settings) -> ConsumerConfig:
    """The durable every worker with `task_type`'s handler reads the type's handed-over copies from."""
    lane = lane_for(task_type)
    description = f"Ordo tickets of type {task_type} in queue {queue} for a worker with its handler"
    return dispatch_consumer_config(
        sj.handover_consumer(queue, lane), description, sj.handover_filter(queue, lane), settings
    )


async def hand_over(nc: NATS, dispatch: Dispatch, msg: Msg, task_type: str, *, copy: bool) -> bool:
    """Offer the dispatch to the workers with `task_type`'s handler: its `copy` on the handover
    subject (until one is stored; the server drops a repeat by its id), then a notice. True once
    the copy is stored. Best effort: the band ticket, handed back meanwhile, still carries the task."""
    lane = lane_for(task_type)
    try:
        if copy:
            headers = copy_headers(msg, dispatch)
            headers[sj.MSG_ID] = f"wait-{dispatch.tenant}-{dispatch.task_id}-{dispatch.seq}"
            subject = sj.handover_subject(dispatch.tenant, dispatch.queue, lane)
            await nc.jetstream().publish(subject, msg.data, headers=headers)
        await nc.publish(sj.handover_notice_subject(dispatch.queue, lane), b"")
    except nats.errors.Error as exc:
        log.warning("ticket of %s not offered to another worker: %s", dispatch.task_id, exc)
        return False
    return True

"""NATS users with least-privilege permissions, one per Ordo service, plus tenant-scoped app users.

The permissions are data: `ordo up` renders them into the embedded servers' configuration with
passwords it generates, and `deploy/nats-auth.conf` (compose) is the same rendering with passwords
taken from the environment; a test keeps the two in step.

- `admin`: everything (the `ordo up` supervisor, `ordo rebuild`): creates and updates the streams.
- `gateway`, `scheduler`, `projector`: what each service touches, on every tenant (they serve all).
- `worker`: fetch and ack dispatch tickets, read task histories, append the attempt events and the
  tickets and retry timers they imply, hold a paused tenant's tickets, follow queue pauses,
  heartbeat, answer its control subject. Nothing else: a worker cannot submit, request a cancel,
  forge another kind of event or change a stream. Within the attempt events it is trusted with
  every tenant's tasks, as a worker is: it can start one, report its outcome or end it cancelled.
- `app-<tenant>`: another service of one tenant: the NATS command API of its tenant, its tenant's
  lifecycle events (durable consumers named `app_<tenant>_1` .. `app_<tenant>_8`, filtered to the
  tenant, pulled or delivered to `ordo.deliver.<tenant>.>`), replies on its own inbox prefix
  `_INBOX.<tenant>`. It cannot see or touch any other consumer. It may not subscribe to the event
  subjects themselves: a core subscription also sees an append the stream refused (the loser of an
  optimistic-concurrency race), an event that never happened.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ordo.infra import subjects as sj

_API = "$JS.API"
_EVENTS = sj.EVENTS_STREAM
_TIMERS = sj.TIMERS_STREAM
_WORKERS = sj.WORKERS_STREAM

# The events a worker's commands append (domain.decide: start, lease, progress, outcome, release).
WORKER_EVENTS = (
    "attempt_started",
    "lease_extended",
    "progressed",
    "attempt_failed",
    "attempt_timed_out",
    "retry_scheduled",
    "succeeded",
    "failed",
    "dead_lettered",
    "cancelled",
    "attempt_released",
    "zombie_rejected",
)
SERVICES = ("admin", "gateway", "scheduler", "projector", "worker")


@dataclass(frozen=True)
class Permissions:
    """Allowed publish and subscribe subjects; `responses` lets a service answer requests."""

    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()
    responses: bool = False
    unrestricted: bool = False


@dataclass(frozen=True)
class NatsUser:
    name: str
    password: str
    permissions: Permissions = field(default_factory=Permissions)


def _stream_reads(*streams: str) -> tuple[str, ...]:
    out = [f"{_API}.INFO"]
    for s in streams:
        out += [f"{_API}.STREAM.INFO.{s}", f"{_API}.DIRECT.GET.{s}", f"{_API}.DIRECT.GET.{s}.>"]
    return tuple(out)


def service_permissions(service: str) -> Permissions:
    """The permissions of one Ordo service (see the module docstring)."""
    inbox = ("_INBOX.>",)
    if service == "admin":
        return Permissions(unrestricted=True)
    if service == "gateway":
        # The HTTP and NATS APIs act on every tenant: commands, queue control (consumer pause),
        # provisioning at start, worker control, the command subjects it serves.
        return Permissions(
            publish=("ordo.>", f"{_API}.>", "$JS.ACK.>", "$JS.FC.>"),
            subscribe=("ordo.>", *inbox),
            responses=True,
        )
    if service == "scheduler":
        return Permissions(
            publish=(
                f"{sj.EVT_PREFIX}.>",
                f"{sj.WORK_PREFIX}.>",
                f"{sj.SCHED_PREFIX}.>",
                f"{sj.TIMER_PREFIX}.>",
                f"{sj.DUE_PREFIX}.>",  # a timer due at once is published fired (infra/timers.py)
                *_stream_reads(_EVENTS, _TIMERS, _WORKERS),
                f"{_API}.STREAM.CREATE.*",
                f"{_API}.STREAM.UPDATE.*",
                f"{_API}.STREAM.PURGE.{_TIMERS}",
                f"{_API}.CONSUMER.*.{_TIMERS}.>",
                f"{_API}.CONSUMER.DURABLE.CREATE.{_TIMERS}.{sj.SCHEDULER_CONSUMER}",
                f"{_API}.CONSUMER.MSG.NEXT.{_TIMERS}.{sj.SCHEDULER_CONSUMER}",
                f"$JS.ACK.{_TIMERS}.>",
            ),
            subscribe=inbox,
        )
    if service == "projector":
        return Permissions(
            publish=(
                *_stream_reads(_EVENTS, _TIMERS, _WORKERS),
                f"{_API}.STREAM.CREATE.*",
                f"{_API}.STREAM.UPDATE.*",
                f"{_API}.CONSUMER.CREATE.{_EVENTS}",
                f"{_API}.CONSUMER.CREATE.{_EVENTS}.>",
                f"{_API}.CONSUMER.DELETE.{_EVENTS}.>",
                f"{_API}.CONSUMER.INFO.{_EVENTS}.>",
                "$JS.FC.>",
                "ordo.committed",  # projections/committed_feed.py: what a batch committed, to gateways
                "ordo.projected",  # infra/read_gate.py: the read model's position, to batch submitters
            ),
            # gateways asking for the feed; batch submitters asking for the read model's position
            subscribe=("ordo.committed.want", "ordo.projected.ask", *inbox),
        )
    if service == "worker":
        return Permissions(
            publish=(
                *_stream_reads(_EVENTS, _TIMERS, _WORKERS),
                f"{_API}.CONSUMER.CREATE.{_EVENTS}.*.{sj.WORK_PREFIX}.>",
                # band consumers filter the runnable events (filtered create: the filter is checked)
                *(
                    f"{_API}.CONSUMER.CREATE.{_EVENTS}.*.{sj.runnable_filter('*', b)}"
                    for b in range(len(sj.BAND_TOKENS))
                ),
                f"{_API}.CONSUMER.INFO.{_EVENTS}.*",
                f"{_API}.CONSUMER.MSG.NEXT.{_EVENTS}.*",
                f"$JS.ACK.{_EVENTS}.>",
                # attempt events only, never a runnable one (the dispatch token is `n`)
                *(sj.event_subject("*", "*", "*", e) for e in WORKER_EVENTS),
                f"{sj.WORK_PREFIX}.>",
                f"{sj.TIMER_PREFIX}.task.>",
                sj.due_subject("*", "*"),  # a retry due at once, published fired (infra/timers.py)
                f"{sj.WORKER_PREFIX}.hb.>",
                f"{sj.WORKER_PREFIX}.wait.>",  # a ticket handed over (workers/handover.py)
                "ordo.projected.ask",  # infra/read_gate.py: a worker keeps pace (decision 60)
            ),
            subscribe=(
                sj.events_named_filter("cancel_requested"),
                f"{sj.WORKER_PREFIX}.wait.>",
                f"{sj.QUEUE_PREFIX}.>",  # queue pause and resume (workers/queue_pause.py)
                f"{sj.WORKER_PREFIX}.ctl.>",
                "ordo.projected",  # the read model's position (infra/read_gate.py, decision 60)
                *inbox,
            ),
            responses=True,
        )
    raise ValueError(f"unknown service {service!r}")


def app_permissions(tenant: str) -> Permissions:
    """Another service of `tenant`: its command API, its events, nothing of another tenant.

    Consumer management is limited to the tenant's own consumer names (`subjects.app_consumers`):
    the shared work consumers, the projector's and any other tenant's are out of reach, for
    create (an update could re-filter them), delete and info alike, and so are their acks.
    """
    own: list[str] = []
    for name in sj.app_consumers(tenant):
        own += [
            # The filtered form of creation: the server checks that the subject's filter is the
            # consumer's, so the consumer can only ever see this tenant's events.
            f"{_API}.CONSUMER.CREATE.{_EVENTS}.{name}.{sj.EVT_PREFIX}.{tenant}.>",
            f"{_API}.CONSUMER.INFO.{_EVENTS}.{name}",
            f"{_API}.CONSUMER.DELETE.{_EVENTS}.{name}",
            f"{_API}.CONSUMER.MSG.NEXT.{_EVENTS}.{name}",
            f"$JS.ACK.{_EVENTS}.{name}.>",
        ]
    return Permissions(
        publish=(
            f"{sj.CMD_PREFIX}.{tenant}.>",
            f"{_API}.INFO",
            # Not STREAM.INFO: with a `subjects_filter` it lists every tenant's subjects (task ids,
            # queues, schedule ids).
            *own,
            "$JS.FC.>",
        ),
        # Not the event subjects: only what the stream stored reaches an app, through its consumers.
        subscribe=(f"ordo.deliver.{tenant}.>", f"_INBOX.{tenant}.>"),
    )


def app_user_name(tenant: str) -> str:
    return f"app-{tenant}"


def app_inbox_prefix(tenant: str) -> str:
    """The inbox prefix an app user of `tenant` must connect with (nats-py `inbox_prefix`)."""
    return f"_INBOX.{tenant}"


def _render_permissions(p: Permissions, indent: str) -> list[str]:
    if p.unrestricted:
        return []
    lines = [f"{indent}permissions: {{"]
    lines.append(f"{indent}  publish: {{ allow: {json.dumps(list(p.publish))} }}")
    lines.append(f"{indent}  subscribe: {{ allow: {json.dumps(list(p.subscribe))} }}")
    if p.responses:
        lines.append(f"{indent}  allow_responses: true")
    lines.append(f"{indent}}}")
    return lines


def render_authorization(users: Sequence[NatsUser]) -> str:
    """An `authorization { users: [...] }` block for nats-server's configuration.

    A password that starts with `$` is written bare, as a reference to an environment variable
    (compose); any other is quoted.
    """
    lines = ["authorization {", "  users: ["]
    for u in users:
        password = u.password if u.password.startswith("$") else json.dumps(u.password)
        lines.append("    {")
        lines.append(f"      user: {json.dumps(u.name)}")
        lines.append(f"      password: {password}")
        lines += _render_permissions(u.permissions, "      ")
        lines.append("    }")
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


def users_for(passwords: Mapping[str, str], tenant: str) -> list[NatsUser]:
    """The service users and the app user of `tenant`, with the given passwords (by user name)."""
    out = [NatsUser(s, passwords[s], service_permissions(s)) for s in SERVICES]
    app = app_user_name(tenant)
    out.append(NatsUser(app, passwords[app], app_permissions(tenant)))
    return out


def load_or_create_passwords(path: Path, tenant: str) -> dict[str, str]:
    """Passwords of every user, generated once and kept in `path` (mode 0600)."""
    wanted = [*SERVICES, app_user_name(tenant)]
    current: dict[str, str] = {}
    if path.exists():
        current = {str(k): str(v) for k, v in json.loads(path.read_text()).items()}
    if all(name in current for name in wanted):
        return current
    for name in wanted:
        current.setdefault(name, secrets.token_urlsafe(24))
    tmp = path.with_name(path.name + ".tmp")
    tmp.touch(mode=0o600)
    os.chmod(tmp, 0o600)
    tmp.write_text(json.dumps(current, indent=2) + "\n")
    os.replace(tmp, path)
    return current


def compose_users(tenant: str) -> list[NatsUser]:
    """The users of compose.yaml: passwords from the NATS servers' environment."""
    env = {s: f"$ORDO_NATS_{s.upper()}_PASSWORD" for s in SERVICES}
    env[app_user_name(tenant)] = "$ORDO_NATS_APP_PASSWORD"
    return users_for(env, tenant)

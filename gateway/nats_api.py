"""The NATS command API: request/reply on `ordo.cmd.<tenant>.<verb>`, served by every gateway.

Other services send the same JSON bodies as the HTTP API, with the same `Authorization: Bearer <key>`
(as a NATS header), and get the same answers: the reply's `Ordo-Status` header carries the HTTP
status the gateway would have answered, `Ordo-Error` the problem type slug on failure, and the body
is the HTTP response body (a problem+json document on failure). Gateways share the subscription in a
queue group, so each request is answered once. Documented in docs/nats-api.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any, Literal

import msgspec
from nats.aio.subscription import Subscription

from ordo.gateway import task_service
from ordo.gateway.auth import Principal, Role, authenticate
from ordo.gateway.consistency import Consistency
from ordo.gateway.problems import Problem, classify, problem_body
from ordo.gateway.services import Services
from ordo.infra import subjects as sj
from ordo.infra.raw_client import RawClient

log = logging.getLogger("ordo.nats_api")
_json = msgspec.json.Encoder()
# Answers go only to inboxes (`_INBOX.<tenant>.…` for the shipped app users, `_INBOX.…` for a
# client's default prefix): never to a subject a stream stores, another service's or a tenant's.
REPLY_PREFIX = b"_INBOX."
_REFUSED_LOG_EVERY_S = 10.0


def reply_allowed(reply: bytes) -> bool:
    """A reply subject the gateway answers on: under `_INBOX.`, no wildcard, no space."""
    return (
        reply.startswith(REPLY_PREFIX)
        and len(reply) > len(REPLY_PREFIX)
        and b"*" not in reply
        and b">" not in reply
        and not any(c <= 32 for c in reply)
    )


class _IdRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    id: str
    as_of_seq: Annotated[int, msgspec.Meta(ge=0, le=2**62)] | None = None  # as GET /v1/tasks/{id}


class _GetRequest(_IdRequest, forbid_unknown_fields=True, frozen=True):
    """`get` reads its own writes as GET /v1/tasks/{id} does: `min_seq` (a write's `seq`) waits,
    bounded, until the read model holds it; `consistency: "wait"` waits for the task's newest event."""

    min_seq: Annotated[int, msgspec.Meta(ge=0, le=2**62)] | None = None
    consistency: Literal["wait", "eventual"] | None = None


_id_decoder = msgspec.json.Decoder(_IdRequest)
_get_decoder = msgspec.json.Decoder(_GetRequest)
Handler = Callable[[Services, Principal, bytes], Awaitable[tuple[int, Any]]]


def _task_id(data: bytes, decoder: msgspec.json.Decoder[Any] = _id_decoder) -> Any:
    try:
        return decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise Problem(422, "invalid-request", f'expected {{"id": "<task id>"}}: {exc}') from exc


async def _submit(svc: Services, who: Principal, data: bytes) -> tuple[int, Any]:
    return await task_service.submit(svc, who, data)


async def _batch(svc: Services, who: Principal, data: bytes) -> tuple[int, Any]:
    return 202, await task_service.submit_batch(svc, who, data)


async def _get(svc: Services, who: Principal, data: bytes) -> tuple[int, Any]:
    req: _GetRequest = _task_id(data, _get_decoder)
    if req.as_of_seq is None:
        task_id = task_service.check_id(req.id)
        await Consistency.asked(req.consistency, req.min_seq).ensure(svc, who.tenant, task_id)
    return 200, await task_service.get(svc, who, req.id, req.as_of_seq)


def _simple(verb: str) -> Handler:
    async def run(svc: Services, who: Principal, data: bytes) -> tuple[int, Any]:
        return 202, await task_service.simple_command(svc, who, verb, _task_id(data).id)

    return run


# verb -> (least role, handler). Keep in step with infra.subjects.CMD_VERBS and docs/nats-api.md.
VERBS: dict[str, tuple[Role, Handler]] = {
    "submit": (Role.SUBMITTER, _submit),
    "batch": (Role.SUBMITTER, _batch),
    "get": (Role.VIEWER, _get),
    "cancel": (Role.OPERATOR, _simple("cancel")),
    "retry": (Role.OPERATOR, _simple("retry")),
    "pause": (Role.OPERATOR, _simple("pause")),
    "resume": (Role.OPERATOR, _simple("resume")),
}


class _Request(msgspec.Struct, gc=False):
    """A command request as the server delivered it (the part of a `Msg` this API reads)."""

    subject: str
    reply: str
    data: bytes
    headers: dict[str, str]


# Requests past the ones in flight wait in arrival order, up to this many and this many bytes of
# bodies (nats-py's own bound on a subscription's backlog); beyond, a request is answered 503 at
# once instead of being held (or dropped) without a word.
MAX_WAITING = 10_000
MAX_WAITING_BYTES = 64 * 1024 * 1024


class NatsApi:
    """Serves command requests with bounded concurrency; `start`/`stop` are safe to call twice.

    The subscription's messages come unparsed from the client's read loop (`RawClient.raw`): no
    `Msg`, no header dict built by nats-py, no task of nats-py's between the socket and this API (on
    an idle gateway 40 µs of the 270 from a submit's arrival to its append). Up to
    `max_in_flight` are served at once, the next `MAX_WAITING` (and `MAX_WAITING_BYTES`) wait their turn
    in order."""

    def __init__(self, svc: Services, max_in_flight: int = 64) -> None:
        if not isinstance(svc.nc, RawClient):
            raise TypeError("the NATS command API needs the client of ordo.infra.nats_conn.connect")
        self._svc = svc
        self._nc = svc.nc
        self._sub: Subscription | None = None
        self._max_in_flight = max_in_flight
        self._waiting: deque[_Request] = deque()
        self._waiting_bytes = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.refused = 0  # requests not served: their reply subject was not an inbox
        self._refused_logged = -_REFUSED_LOG_EVERY_S

    async def start(self) -> None:
        if self._sub is None:
            self._sub = await self._nc.raw(sj.cmd_filter(), self._on_raw, queue=sj.CMD_QUEUE_GROUP)

    async def stop(self) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            self._nc.drop_raw(sub)
            await sub.unsubscribe()
        self._waiting.clear()
        self._waiting_bytes = 0
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _on_raw(self, subject: bytes, reply: bytes, data: bytes, headers: bytes) -> None:
        """Called in the client's read loop: must not block."""
        if reply and not reply_allowed(reply):
            self._refuse(subject, reply)
            return
        request = _Request(
            subject.decode("utf-8", "replace"),
            reply.decode("utf-8", "replace"),
            data,
            RawClient._parse_header_lines(headers) if headers else {},
        )
        if len(self._tasks) < self._max_in_flight:
            self._spawn(self._serve(request))
        elif len(self._waiting) < MAX_WAITING and self._waiting_bytes + len(data) <= MAX_WAITING_BYTES:
            self._waiting.append(request)
            self._waiting_bytes += len(data)
        else:
            busy = Problem(
                503, "busy", "too many command requests waiting; retry shortly", {"Retry-After": "1"}
            )
            self._spawn(self._send_problem(request, busy))

    def _refuse(self, subject: bytes, reply: bytes) -> None:
        """A request whose reply subject is not an inbox is not served: the answer would be published
        with the gateway's own rights (every tenant's event log among them) on a subject its sender
        may not publish to."""
        self.refused += 1
        now = asyncio.get_running_loop().time()
        if now - self._refused_logged >= _REFUSED_LOG_EVERY_S:
            self._refused_logged = now
            log.warning(
                "request on %r not served: its reply subject %r is not an inbox (%s…); %d refused so far",
                subject[:200].decode("utf-8", "replace"),
                reply[:200].decode("utf-8", "replace"),
                REPLY_PREFIX.decode(),
                self.refused,
            )

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._waiting and len(self._tasks) < self._max_in_flight:
            request = self._waiting.popleft()
            self._waiting_bytes -= len(request.data)
            self._spawn(self._serve(request))

    async def _serve(self, msg: _Request) -> None:
        try:
            status, body = await self._answer(msg)
        except Exception as exc:  # noqa: BLE001 - every request gets an answer; unexpected ones are logged
            problem = classify(exc)
            if problem is None:
                log.error("unexpected error serving %s", msg.subject, exc_info=exc)
                problem = Problem(500, "internal-error", "an unexpected error occurred; it was logged")
            await self._send_problem(msg, problem)
            return
        await self._send(msg, _json.encode(body), {sj.REPLY_STATUS: str(status)})

    async def _send_problem(self, msg: _Request, problem: Problem) -> None:
        headers = {sj.REPLY_STATUS: str(problem.status), sj.REPLY_ERROR: problem.slug}
        if problem.headers and "Retry-After" in problem.headers:
            headers["Retry-After"] = problem.headers["Retry-After"]
        await self._send(msg, _json.encode(problem_body(problem)), headers)

    async def _send(self, msg: _Request, body: bytes, headers: dict[str, str]) -> None:
        if msg.reply:
            await self._nc.publish_fast(msg.reply, body, headers)

    async def _answer(self, msg: _Request) -> tuple[int, Any]:
        svc = self._svc
        try:
            tenant, verb = sj.parse_cmd_subject(msg.subject)
        except ValueError as exc:
            raise Problem(404, "not-found", str(exc)) from exc
        if verb not in VERBS:
            raise Problem(404, "not-found", f"unknown command {verb!r}; one of {sorted(VERBS)}")
        if len(msg.data) > svc.settings.max_body_bytes:
            raise Problem(413, "body-too-large", f"request exceeds {svc.settings.max_body_bytes} bytes")
        if svc.settings.auth:
            who = await authenticate(svc, _authorization(msg.headers))
        else:
            who = Principal(tenant=svc.settings.tenant, role=Role.ADMIN)
        if who.tenant != tenant:
            # Another tenant's subject looks exactly like a missing one: no existence oracle.
            raise Problem(404, "not-found", f"no tenant {tenant!r} for this key")
        role, handler = VERBS[verb]
        if who.role < role:
            raise Problem(403, "forbidden", f"{verb} needs the {role.name.lower()} role")
        return await handler(svc, who, msg.data)


def _authorization(headers: dict[str, str]) -> str | None:
    """The `Authorization` header in any case, as HTTP reads it (NATS keeps a header's case)."""
    value = headers.get(sj.AUTHORIZATION)
    if value is not None:
        return value
    return next((v for k, v in headers.items() if k.lower() == "authorization"), None)

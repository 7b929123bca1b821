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
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from ordo.gateway import task_service
from ordo.gateway.auth import Principal, Role, authenticate
from ordo.gateway.problems import Problem, classify, problem_body
from ordo.gateway.services import Services
from ordo.infra import subjects as sj

log = logging.getLogger("ordo.nats_api")
_json = msgspec.json.Encoder()


class _IdRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    id: str
    as_of_seq: int | None = None


_id_decoder = msgspec.json.Decoder(_IdRequest)
Handler = Callable[[Services, Principal, bytes], Awaitable[tuple[int, Any]]]


def _task_id(data: bytes) -> _IdRequest:
    try:
        return _id_decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise Problem(422, "invalid-request", f'expected {{"id": "<task id>"}}: {exc}') from exc


async def _submit(svc: Services, who: Principal, data: bytes) -> tuple[int, Any]:
    return await task_service.submit(svc, who, data)


async def _batch(svc: Services, who: Principal, data: bytes) -> tuple[int, Any]:
    return 202, await task_service.submit_batch(svc, who, data)


async def _get(svc: Services, who: Principal, data: bytes) -> tuple[int, Any]:
    req = _task_id(data)
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


class NatsApi:
    """Serves command requests with bounded concurrency; `start`/`stop` are safe to call twice."""

    def __init__(self, svc: Services, max_in_flight: int = 64) -> None:
        self._svc = svc
        self._sub: Subscription | None = None
        self._slots = asyncio.Semaphore(max_in_flight)
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        if self._sub is None:
            self._sub = await self._svc.nc.subscribe(
                sj.cmd_filter(), queue=sj.CMD_QUEUE_GROUP, cb=self._on_msg
            )

    async def stop(self) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            await sub.unsubscribe()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _on_msg(self, msg: Msg) -> None:
        await self._slots.acquire()
        task = asyncio.get_running_loop().create_task(self._serve(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, msg: Msg) -> None:
        try:
            status, body = await self._answer(msg)
            headers = {sj.REPLY_STATUS: str(status)}
        except Exception as exc:  # noqa: BLE001 - every request gets an answer; unexpected ones are logged
            problem = classify(exc)
            if problem is None:
                log.error("unexpected error serving %s", msg.subject, exc_info=exc)
                problem = Problem(500, "internal-error", "an unexpected error occurred; it was logged")
            status, body = problem.status, problem_body(problem)
            headers = {sj.REPLY_STATUS: str(status), sj.REPLY_ERROR: problem.slug}
            if problem.headers and "Retry-After" in problem.headers:
                headers["Retry-After"] = problem.headers["Retry-After"]
        finally:
            self._slots.release()
        if msg.reply:
            await self._svc.nc.publish(msg.reply, _json.encode(body), headers=headers)

    async def _answer(self, msg: Msg) -> tuple[int, Any]:
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
            who = await authenticate(svc, (msg.headers or {}).get(sj.AUTHORIZATION))
        else:
            who = Principal(tenant=svc.settings.tenant, role=Role.ADMIN)
        if who.tenant != tenant:
            # Another tenant's subject looks exactly like a missing one: no existence oracle.
            raise Problem(404, "not-found", f"no tenant {tenant!r} for this key")
        role, handler = VERBS[verb]
        if who.role < role:
            raise Problem(403, "forbidden", f"{verb} needs the {role.name.lower()} role")
        return await handler(svc, who, msg.data)

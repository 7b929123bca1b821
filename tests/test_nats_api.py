"""Acceptance 6: another service submits, cancels and follows tasks over NATS only (no HTTP)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import nats
from nats.js.api import ConsumerConfig, DeliverPolicy

from ordo.infra import subjects as sj
from tests.conftest import System
from tests.helpers import eventually


async def _call(nc: Any, tenant: str, verb: str, body: Any) -> tuple[int, str, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    msg = await nc.request(sj.cmd_subject(tenant, verb), data, timeout=10)
    headers = msg.headers or {}
    return int(headers[sj.REPLY_STATUS]), headers.get(sj.REPLY_ERROR, ""), json.loads(msg.data)


async def test_a_service_submits_cancels_and_follows_events_over_nats(gateway_only: System) -> None:
    tenant = gateway_only.settings.tenant
    service = await nats.connect(gateway_only.settings.nats_url, name="other-service")
    try:
        js = service.jetstream()
        # The service's own durable consumer on its tenant's lifecycle events.
        durable = "svc_" + uuid.uuid4().hex[:8]
        events = await js.pull_subscribe(
            sj.tenant_events_filter(tenant),
            durable=durable,
            stream=sj.EVENTS_STREAM,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
        )
        status, _, task = await _call(service, tenant, "submit", {"type": "demo.echo", "delay": 3600})
        assert status == 202 and task["status"] == "scheduled"
        # Read from the log at the write's sequence: no wait for the read model.
        status, _, got = await _call(service, tenant, "get", {"id": task["id"], "as_of_seq": task["seq"]})
        assert status == 200 and got["status"] == "scheduled"
        for bad in (-1, 2**62 + 1, 10**30, "1"):  # the bounds of GET /v1/tasks/{id}?as_of_seq=
            response = await _call(service, tenant, "get", {"id": task["id"], "as_of_seq": bad})
            assert response[:2] == (422, "invalid-request"), (bad, response)
        # Read your own write from the read model, as GET /v1/tasks/{id}?min_seq= does.
        status, _, got = await _call(service, tenant, "get", {"id": task["id"], "min_seq": task["seq"]})
        assert status == 200 and got["status"] == "scheduled" and got["last_seq"] >= task["seq"], got
        status, _, got = await _call(service, tenant, "get", {"id": task["id"], "consistency": "wait"})
        assert status == 200 and got["last_seq"] >= task["seq"], got
        beyond = await _call(service, tenant, "get", {"id": task["id"], "min_seq": 2**61})
        assert beyond[:2] == (422, "invalid-min-seq"), beyond
        odd = await _call(service, tenant, "get", {"id": task["id"], "consistency": "strong"})
        assert odd[:2] == (422, "invalid-request"), odd
        for verb in ("cancel", "pause"):  # only `get` reads
            refused = await _call(service, tenant, verb, {"id": task["id"], "min_seq": 1})
            assert refused[:2] == (422, "invalid-request"), (verb, refused)
        status, _, cancelled = await _call(service, tenant, "cancel", {"id": task["id"]})
        assert status == 202 and cancelled["status"] == "cancelled"
        seen: list[tuple[str, str]] = []
        while len([s for s in seen if s[0] == task["id"]]) < 3:
            for msg in await events.fetch(10, timeout=10):
                _, _, task_id, event = sj.parse_event_subject(msg.subject)
                seen.append((task_id, event))
                await msg.ack()
        assert [e for t, e in seen if t == task["id"]] == ["submitted", "scheduled", "cancelled"]
        # Batch, idempotent repeat, and the same errors as HTTP (status + slug headers, problem body).
        status, _, batch = await _call(service, tenant, "batch", {"tasks": [{"type": "a"}, {"type": "b"}]})
        assert status == 202 and batch["count"] == 2
        first = await _call(service, tenant, "submit", {"type": "a", "idempotency_key": "k"})
        again = await _call(service, tenant, "submit", {"type": "a", "idempotency_key": "k"})
        assert (first[0], again[0]) == (202, 200) and first[2]["id"] == again[2]["id"]
        status, error, problem = await _call(service, tenant, "submit", {"type": 1})
        assert (status, error) == (422, "invalid-request") and problem["type"].endswith("/invalid-request")
        status, error, problem = await _call(service, tenant, "batch", {"tasks": [{"type": "a"}, {}]})
        assert (status, error) == (422, "invalid-batch") and [e["index"] for e in problem["errors"]] == [1]
        assert (await _call(service, tenant, "submit", b"{not json"))[:2] == (422, "invalid-request")
        assert (await _call(service, tenant, "cancel", {"id": "nope"}))[:2] == (404, "task-not-found")
        assert (await _call(service, tenant, "cancel", {"id": task["id"]}))[0] == 202  # already: no-op
        assert (await _call(service, tenant, "retry", {"id": batch["items"][0]["id"]}))[:2] == (
            409,
            "invalid-transition",
        )
        assert (await _call(service, tenant, "explode", {}))[:2] == (404, "not-found")
        assert (await _call(service, "othertenant", "get", {"id": task["id"]}))[:2] == (404, "not-found")
    finally:
        await service.close()


async def test_requests_past_the_ones_in_flight_wait_in_order_then_get_a_503_busy(
    gateway_only: System, monkeypatch: Any
) -> None:
    """The command API serves up to its in-flight bound, keeps the next ones waiting in arrival
    order, and answers a request past that at once with 503 `busy` (not silence, not a drop)."""
    from ordo.gateway import nats_api
    from ordo.gateway.auth import Role

    release = asyncio.Event()
    served: list[str] = []

    async def slow_get(svc: Any, who: Any, data: bytes) -> tuple[int, Any]:
        served.append(json.loads(data)["id"])
        await release.wait()
        return 200, {"id": served[-1]}

    monkeypatch.setitem(nats_api.VERBS, "get", (Role.VIEWER, slow_get))
    monkeypatch.setattr(nats_api, "MAX_WAITING", 3)
    monkeypatch.setattr(nats_api, "MAX_WAITING_BYTES", 40)
    in_flight = 64  # NatsApi's default bound
    tenant = gateway_only.settings.tenant
    service = await nats.connect(gateway_only.settings.nats_url, name="busy-service")
    try:
        calls = [
            asyncio.create_task(_call(service, tenant, "get", {"id": f"t{i}"})) for i in range(in_flight + 2)
        ]
        await eventually(lambda: _true(len(served) == in_flight), 10, 0.01, "the in-flight bound reached")
        # Two wait (26 bytes of bodies): a third of 40 bytes is past the bytes' bound, one of 11 is not.
        status, error, problem = await _call(service, tenant, "get", {"id": "x" * 28})
        assert (status, error) == (503, "busy") and problem["type"].endswith("/busy")
        inbox = service.new_inbox()
        third = await service.subscribe(inbox, max_msgs=1)
        await service.publish(sj.cmd_subject(tenant, "get"), b'{"id": "s"}', reply=inbox)
        await service.flush()  # the server has passed it on before the next request
        status, error, _ = await _call(service, tenant, "get", {"id": "one-too-many"})  # the count's bound
        assert (status, error) == (503, "busy")
        release.set()
        answers = await asyncio.gather(*calls)
        assert [a[0] for a in answers] == [200] * (in_flight + 2)
        assert (await third.next_msg(timeout=10)).headers == {sj.REPLY_STATUS: "200"}
        waited = [f"t{in_flight}", f"t{in_flight + 1}", "s"]
        assert served[in_flight:] == waited  # the waiting ones, in arrival order
    finally:
        await service.close()


async def _true(value: bool) -> bool:
    return value

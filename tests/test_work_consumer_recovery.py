"""A work consumer deleted under a running worker is re-created by the worker: dispatch resumes."""

from __future__ import annotations

from ordo.domain.priority import DEFAULT_PRIORITY, band_for
from ordo.infra import subjects as sj
from tests.conftest import System
from tests.helpers import eventually


async def _status(system: System, task_id: str) -> str:
    """From the event log (the read model may lag)."""
    state, _, _ = await system.handler.load(system.settings.tenant, task_id)
    return str(state.status) if state.exists else ""


async def _run_echo(system: System) -> str:
    r = await system.http.post("/v1/tasks", json={"type": "demo.echo", "payload": 1})
    assert r.status_code == 202, r.text
    task_id = str(r.json()["id"])

    async def done() -> bool:
        return await _status(system, task_id) == "succeeded"

    await eventually(done, timeout=60, what=f"{task_id} succeeded")
    return task_id


async def test_a_deleted_work_consumer_is_recreated_and_the_next_task_on_its_band_runs(
    system: System,
) -> None:
    await _run_echo(system)  # the worker serves the band
    js = system.nc.jetstream()
    name = sj.work_consumer("default", band_for(DEFAULT_PRIORITY))
    await js.delete_consumer(sj.EVENTS_STREAM, name)  # an admin (or a leaked credential) removes it
    await _run_echo(system)  # same band: the worker re-created the consumer and ran it
    info = await js.consumer_info(sj.EVENTS_STREAM, name)
    assert info.config.filter_subject == sj.runnable_filter("default", band_for(DEFAULT_PRIORITY))

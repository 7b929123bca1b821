"""What the README's state-machine section says about a task updated while paused, and that the API
does it: the section once pointed at a "known issue below" that was nowhere."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.conftest import System

REPO = Path(__file__).resolve().parent.parent


def _state_machine_section() -> str:
    readme = (REPO / "README.md").read_text()
    return readme.split("## The task state machine", 1)[1].split("\n## ", 1)[0]


def test_the_state_machine_section_refers_to_no_missing_section() -> None:
    section = _state_machine_section()
    readme = (REPO / "README.md").read_text()
    for ref in re.findall(r"see the ([a-z -]+?) below", " ".join(section.split()), re.I):
        assert re.search(rf"^#+ .*{re.escape(ref)}", readme, re.I | re.M), f"no section for {ref!r}"
    footnote = re.search(r"^7\. (.*?)(?=^8\. )", section, re.S | re.M)
    assert footnote is not None and "`run_at`" in footnote.group(1), "footnote 7 says what run_at does"


async def test_a_run_at_patched_while_paused_is_honoured_after_resume(gateway_only: System) -> None:
    """Footnote 7: paused from `queued`, updated with a later `run_at`, resumed: it waits for it."""
    http = gateway_only.http
    sub = (await http.post("/v1/tasks", json={"type": "demo.echo"})).json()  # no worker: stays queued
    assert sub["status"] == "queued"
    assert (await http.post(f"/v1/tasks/{sub['id']}:pause")).json()["status"] == "paused"
    later = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    r = await http.patch(f"/v1/tasks/{sub['id']}", json={"run_at": later.isoformat()})
    assert r.status_code in (200, 202) and r.json()["status"] == "paused", r.text
    resumed = await http.post(f"/v1/tasks/{sub['id']}:resume")
    assert resumed.json()["status"] == "scheduled", resumed.text
    task = (await http.get(f"/v1/tasks/{sub['id']}", params={"min_seq": resumed.json()["seq"]})).json()
    assert task["status"] == "scheduled" and datetime.fromisoformat(task["run_at"]) == later, task

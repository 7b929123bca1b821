"""The README's two-minute tour works when pasted: its shell block runs against a real `ordo up`.

The block is taken from README.md as written; only the address (`localhost:8000`) and the data folder
(`.ordo/`) are pointed at this test's `ordo up`.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from ordo.embedded.processes import free_port
from tests.helpers import wait_for

REPO = Path(__file__).resolve().parent.parent


def shell_block(heading: str) -> str:
    """The one shell block of the README's section `heading`."""
    readme = (REPO / "README.md").read_text()
    section = readme.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    assert len(blocks) == 1, f"the section {heading!r} has exactly one shell block"
    return str(blocks[0])


def tour_block() -> str:
    return shell_block("A two-minute tour")


def key_block() -> str:
    """The HTTP API section's example of a key for an application (it reuses the tour's `$AUTH`)."""
    return shell_block("HTTP API")


@pytest.mark.skipif(shutil.which("curl") is None, reason="the tour uses curl")
def test_the_readme_tour_runs_as_written(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDO_")}
    log_path = tmp_path / "up.log"
    with log_path.open("wb") as log:
        up = subprocess.Popen(
            [sys.executable, "-m", "ordo.cli", "up", "--data-dir", str(data), "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    try:
        wait_for(lambda: "Admin API key" in log_path.read_text(), 120, "the admin key")

        def ready() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, 120, "ready")
        script = tour_block().replace("localhost:8000", f"127.0.0.1:{port}").replace(".ordo/", f"{data}/")
        done = subprocess.run(
            ["bash", "-u", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        out = done.stdout
        assert done.returncode == 0, done.stderr + out
        assert '"status":"queued"' in out, out
        assert '"type":"submitted"' in out, out
        assert "event: task_event" in out and '"type":"succeeded"' in out, out
        assert "unauthorized" not in out and "internal error" not in out, out
        assert not (tmp_path / "task.json").exists()
        auth = script.split("\n", 1)[0]  # AUTH=...
        key = subprocess.run(
            ["bash", "-u", "-c", auth + "\n" + key_block().replace("localhost:8000", f"127.0.0.1:{port}")],
            cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert key.returncode == 0 and '"role":"submitter"' in key.stdout and '"key":"' in key.stdout, key
        assert '"tenant":"team-b","role":"admin"' in key.stdout, key  # a second tenant, as README says
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(timeout=60)

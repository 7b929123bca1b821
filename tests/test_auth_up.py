"""`ordo up` creates a local admin key (ORDO_ADMIN_KEY sets it), prints it and a one-time UI link."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from ordo.embedded.processes import free_port
from tests.helpers import wait_for


def _anonymous_refused(url: str) -> bool:
    import asyncio

    import nats
    import nats.errors

    async def attempt() -> bool:
        try:
            nc = await nats.connect(url, allow_reconnect=False, connect_timeout=3)
        except (nats.errors.Error, OSError):
            return True
        await nc.close()
        return False

    return asyncio.run(attempt())


def test_up_prints_an_admin_key_and_a_one_time_link(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    out = tmp_path / "up.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDO_")}
    env.update(ORDO_ADMIN_KEY="local-admin-key-for-test")
    with out.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ordo.cli", "up", "--data-dir", str(tmp_path / "d"), "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parent.parent,
        )
    try:
        link = wait_for(
            lambda: re.search(r"sign-in link.*?: (http\S+)", out.read_text()), 120, "printed link"
        ).group(1)
        assert "Admin API key (tenant default): local-admin-key-for-test" in out.read_text()

        def ready() -> bool:
            try:
                return httpx.get(base + "/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, 120, "ready")
        assert httpx.get(base + "/v1/tasks", timeout=5).status_code == 401
        auth = {"Authorization": "Bearer local-admin-key-for-test"}
        assert httpx.get(base + "/v1/tasks", headers=auth, timeout=5).status_code == 200
        with httpx.Client() as browser:
            r = browser.get(link, timeout=5, follow_redirects=True)  # to the UI, cookie set
            assert r.status_code == 200 and "ordo_session" in browser.cookies
            assert browser.get(base + "/v1/whoami", timeout=5).json()["role"] == "admin"
        # Every service runs on its own NATS user (infra.nats_auth): a task still runs end to end,
        # nothing is refused, and a connection without a user is turned away.
        r = httpx.post(base + "/v1/tasks", json={"type": "demo.echo", "payload": 1}, headers=auth, timeout=10)
        assert r.status_code == 202, r.text
        task_url = f"{base}/v1/tasks/{r.json()['id']}"
        wait_for(
            lambda: httpx.get(task_url, headers=auth, timeout=5).json()["status"] == "succeeded",
            60,
            "succeeded",
        )
        assert "passwords in" in out.read_text()
        users = tmp_path / "d" / "nats-users.json"
        assert users.stat().st_mode & 0o777 == 0o600
        nats_log = (tmp_path / "d" / "nats" / "nats-server.log").read_text()
        assert "Violation" not in nats_log, [x for x in nats_log.splitlines() if "Violation" in x]
        conf = (tmp_path / "d" / "nats" / "nats-server.conf").read_text()
        listen = re.search(r'^listen: "([^"]+)"', conf, re.M)
        assert listen is not None and "authorization {" in conf
        assert _anonymous_refused(f"nats://{listen.group(1)}")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)

"""`ordo up` end to end: serves, runs a task, stops cleanly, and recovers after kill -9."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from ordo.embedded.processes import free_port

READY_TIMEOUT = 90.0


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _recorded_pids(data_dir: Path) -> dict[str, int]:
    """Every pid file under the data folder: the servers and the supervised children."""
    out: dict[str, int] = {}
    for path in data_dir.rglob("*.pid"):
        try:
            out[str(path.relative_to(data_dir))] = int(json.loads(path.read_text())["pid"])
        except (ValueError, KeyError, json.JSONDecodeError):
            continue
    postmaster = data_dir / "postgres" / "postmaster.pid"
    if postmaster.exists():
        out["postmaster"] = int(postmaster.read_text().split()[0])
    return out


def _wait(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


class Up:
    def __init__(self, data_dir: Path, port: int) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ORDO_")}
        env.update(ORDO_ACK_WAIT_S="3", ORDO_LEASE_EXTEND_EVERY_S="1")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ordo.cli",
                "up",
                "--data-dir",
                str(data_dir),
                "--port",
                str(port),
                "--no-auth",
            ],
            env=env,
            cwd=Path(__file__).resolve().parent.parent,
        )

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"ordo up exited with {self.proc.returncode}")
        try:
            return httpx.get(self.base + "/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "ordo-data"


def _run_echo(base: str) -> str:
    r = httpx.post(base + "/v1/tasks", json={"type": "demo.echo", "payload": {"x": 1}}, timeout=10)
    assert r.status_code == 202, r.text
    task_id: str = r.json()["id"]
    _wait(
        lambda: httpx.get(f"{base}/v1/tasks/{task_id}", timeout=5).json().get("status") == "succeeded",
        60,
        "task succeeded",
    )
    events = httpx.get(f"{base}/v1/tasks/{task_id}/events", timeout=5).json()["events"]
    assert [e["type"] for e in events] == ["submitted", "attempt_started", "succeeded"]
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    return task_id


def _postgres_refuses_local_users_without_the_password(data_dir: Path) -> None:
    """F10: the embedded PostgreSQL that `ordo up` started (and that its processes use) needs the
    password kept in the data folder; without it, TCP and the unix socket are refused."""
    port = int((data_dir / "postgres" / "postmaster.pid").read_text().splitlines()[3])
    password_file = data_dir / "postgres.password"
    assert password_file.stat().st_mode & 0o777 == 0o600

    async def attempt(**kw: object) -> bool:
        try:
            conn = await asyncpg.connect(user="postgres", database="postgres", port=port, timeout=10, **kw)
        except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError):
            return False
        await conn.close()
        return True

    async def checks() -> list[bool]:
        password = password_file.read_text().strip()
        return [
            await attempt(host="127.0.0.1"),
            await attempt(host=str(data_dir / "postgres")),
            await attempt(host="127.0.0.1", password=password),
        ]

    loop = asyncio.new_event_loop()  # not asyncio.run: it would unset pytest-asyncio's loop
    try:
        assert loop.run_until_complete(checks()) == [False, False, True]
    finally:
        loop.close()


def _idle_connection_outlives_the_clients_expiry(port: int) -> None:
    """An idle keep-alive connection is still open after httpx's own 5 s expiry, so the client, not
    the gateway, closes it: a gateway closing at that same moment cuts a request already sent (the
    client reads end-of-file and reports an error for a request the gateway never saw)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        assert response.status == 200 and response.read() and not response.will_close
        assert conn.sock is not None
        conn.sock.settimeout(6.0)
        with pytest.raises(TimeoutError):
            closed = conn.sock.recv(1) == b""
            raise AssertionError(f"the idle connection did not stay quiet (end of file: {closed})")
    finally:
        conn.close()


def _a_second_up_on_the_same_data_folder_is_refused(up: Up, data_dir: Path) -> None:
    """A second `ordo up` on a data folder in use exits 1 with a message, and leaves the first one's
    servers and children as they were (it used to stop them as leftovers)."""
    before = _recorded_pids(data_dir)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDO_")}
    second = subprocess.run(
        [sys.executable, "-m", "ordo.cli", "up", "--data-dir", str(data_dir), "--port", str(free_port())],
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 1 and "another `ordo up`" in second.stderr, second.stderr[-2000:]
    assert _recorded_pids(data_dir) == before
    assert all(_alive(p) for p in before.values()), before
    assert up.ready()


def test_up_serves_runs_a_task_and_stops_leaving_nothing(data_dir: Path) -> None:
    up = Up(data_dir, free_port())
    try:
        _wait(up.ready, READY_TIMEOUT, "ordo up ready")
        _run_echo(up.base)
        _postgres_refuses_local_users_without_the_password(data_dir)
        _idle_connection_outlives_the_clients_expiry(up.port)
        _a_second_up_on_the_same_data_folder_is_refused(up, data_dir)
        pids = _recorded_pids(data_dir)
        assert any("nats" in k for k in pids) and "postmaster" in pids, pids
        assert all(_alive(p) for p in pids.values()), pids
        up.proc.send_signal(signal.SIGINT)
        assert up.proc.wait(timeout=60) == 0
        _wait(lambda: not any(_alive(p) for p in pids.values()), 20, "children gone")
    finally:
        if up.proc.poll() is None:
            up.proc.kill()


def test_up_recovers_after_kill_9_and_finds_every_task(data_dir: Path) -> None:
    first = Up(data_dir, free_port())
    try:
        _wait(first.ready, READY_TIMEOUT, "first ordo up ready")
        task_id = _run_echo(first.base)
        first.proc.kill()  # SIGKILL: no clean-up runs in ordo up itself
        first.proc.wait(timeout=10)
    finally:
        if first.proc.poll() is None:
            first.proc.kill()
    second = Up(data_dir, free_port())
    try:
        _wait(second.ready, READY_TIMEOUT, "second ordo up ready")
        task = httpx.get(f"{second.base}/v1/tasks/{task_id}", timeout=5).json()
        assert task["status"] == "succeeded"
        _run_echo(second.base)
        pids = _recorded_pids(data_dir)
        second.proc.send_signal(signal.SIGTERM)
        assert second.proc.wait(timeout=60) == 0
        _wait(lambda: not any(_alive(p) for p in pids.values()), 20, "children gone")
    finally:
        if second.proc.poll() is None:
            second.proc.kill()


def test_up_refuses_a_port_in_use_and_a_bad_worker_count_before_starting_anything(tmp_path: Path) -> None:
    """Found by an operator's pass: on a port another server had, `ordo up` printed a sign-in link
    for that server and restarted its gateway forever; `--workers -1` was a traceback after the
    embedded servers had started."""
    import socket

    from ordo.cli import main

    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        assert main(["up", "--port", str(port), "--data-dir", str(tmp_path / "a")]) == 1
    assert not (tmp_path / "a").exists()
    with pytest.raises(SystemExit) as usage:
        main(["up", "--workers", "-1", "--data-dir", str(tmp_path / "b")])
    assert usage.value.code == 2 and not (tmp_path / "b").exists()


def test_a_gateway_waiting_for_nats_stops_on_sigterm(tmp_path: Path) -> None:
    """Found by an operator's pass: `ordo gateway` with NATS unreachable ignored SIGTERM and SIGINT
    (uvicorn only notes a signal while the app starts); only SIGKILL stopped it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDO_")}
    env.update(
        ORDO_NATS_URL=f"nats://127.0.0.1:{free_port()}", ORDO_DATABASE_URL="postgresql://x:y@127.0.0.1:1/z"
    )
    gateway = subprocess.Popen(
        [sys.executable, "-m", "ordo.cli", "gateway", "--port", str(free_port())],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        assert gateway.stderr is not None
        while "reconnecting" not in gateway.stderr.readline():  # its start waits for NATS
            assert time.monotonic() < deadline and gateway.poll() is None, "the gateway never started"
        gateway.send_signal(signal.SIGTERM)
        assert gateway.wait(timeout=10) == 0
        assert "stopped while starting" in gateway.stderr.read()
    finally:
        if gateway.poll() is None:
            gateway.kill()
            gateway.wait()

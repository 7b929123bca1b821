"""T09 and T13 under `ordo up`: SIGKILL the embedded nats-server, or the PostgreSQL postmaster, while
tasks are being submitted. `ordo up` starts the server again by itself (same data folder, same
port), every process reconnects by itself, and every task acknowledged with 202 succeeds exactly
once. A real `ordo up` subprocess with short timers; the servers' pids come from the data folder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from ordo.embedded.nats import find_nats_server
from ordo.embedded.processes import free_port, process_alive

READY_TIMEOUT = 90.0
BACK_WITHIN = 60.0


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll `predicate` until true; return the seconds it took."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)
    return time.monotonic() - start


class Up:
    """`ordo up --no-auth` in a subprocess, its output kept in a file for the log checks."""

    def __init__(self, root: Path, args: tuple[str, ...] = (), **env_vars: str) -> None:
        self.data_dir = root / "data"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = root / "ordo-up.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ORDO_")}
        env.update(ORDO_ACK_WAIT_S="3", ORDO_LEASE_EXTEND_EVERY_S="1", **env_vars)
        argv = [sys.executable, "-m", "ordo.cli", "up", "--data-dir", str(self.data_dir)]
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                [*argv, "--port", str(self.port), "--no-auth", "--workers", "2", *args],
                env=env,
                cwd=Path(__file__).resolve().parent.parent,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"ordo up exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
        try:
            return httpx.get(self.base + "/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def nats_pid(self, node: str = "") -> int | None:
        folder = self.data_dir / "nats-cluster" / node if node else self.data_dir / "nats"
        return _json_pid(folder / "nats-server.pid")

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postgres" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _json_pid(path: Path) -> int | None:
    try:
        return int(json.loads(path.read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


@pytest.fixture
def up(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Up]:
    running = Up(tmp_path, **getattr(request, "param", {}))
    try:
        try:
            _wait(running.ready, READY_TIMEOUT, "ordo up ready")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; ordo up's log ends with:\n{running.log()[-4000:]}") from exc
        yield running
    finally:
        running.stop()


class Submitter:
    """Submits demo.echo tasks back to back on a thread; keeps the ids answered 202."""

    def __init__(self, base: str) -> None:
        self._base = base
        self.accepted: list[str] = []
        self.answers: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Submitter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        with httpx.Client(base_url=self._base, timeout=10) as http:
            n = 0
            while not self._stop.is_set():
                n += 1
                try:
                    r = http.post("/v1/tasks", json={"type": "demo.echo", "payload": {"n": n}})
                except httpx.HTTPError as exc:
                    self.answers[type(exc).__name__] += 1
                    continue
                self.answers[str(r.status_code)] += 1
                if r.status_code == 202:
                    self.accepted.append(r.json()["id"])

    def accepted_more_than(self, n: int) -> Callable[[], bool]:
        return lambda: len(self.accepted) > n


def _replaced(up: Up, pid_of: Callable[[], int | None], killed: int) -> Callable[[], bool]:
    """True once another process than `killed` runs the server and `ordo up` is ready again."""

    def check() -> bool:
        pid = pid_of()
        return pid is not None and pid != killed and process_alive(pid) and up.ready()

    return check


def _every_task_succeeded_once(base: str, ids: list[str]) -> None:
    """Each accepted task ends `succeeded`, with exactly one `succeeded` event in its history."""
    pending = set(ids)
    with httpx.Client(base_url=base, timeout=10) as http:

        def settled() -> bool:
            for task_id in sorted(pending):
                r = http.get(f"/v1/tasks/{task_id}")
                if r.status_code != 200 or r.json()["status"] != "succeeded":
                    return False
                pending.discard(task_id)
            return True

        _wait(settled, 120, f"{len(ids)} accepted tasks succeeded (still pending: {len(pending)})")
        for task_id in ids:
            events = http.get(f"/v1/tasks/{task_id}/events").json()["events"]
            kinds = Counter(e["type"] for e in events)
            assert kinds["submitted"] == 1 and kinds["succeeded"] == 1, (task_id, events)


KILLS = 2


@pytest.mark.parametrize(
    ("up", "sig"),
    [
        pytest.param({}, signal.SIGKILL, id="sigkill"),
        pytest.param({"ORDO_SYNC_ALWAYS": "true"}, signal.SIGKILL, id="sigkill-sync-always"),
        pytest.param({}, signal.SIGTERM, id="sigterm"),
    ],
    indirect=["up"],
)
def test_t09_killing_the_nats_server_while_submitting_loses_no_accepted_task(up: Up, sig: int) -> None:
    took: list[float] = []
    with Submitter(up.base) as submitter:
        for _ in range(KILLS):
            first = up.nats_pid()
            assert first is not None and process_alive(first)
            _wait(submitter.accepted_more_than(len(submitter.accepted) + 30), 60, "30 tasks accepted")
            os.kill(first, sig)
            took.append(_wait(_replaced(up, up.nats_pid, first), BACK_WITHIN, "new nats-server, readyz 200"))
        _wait(submitter.accepted_more_than(len(submitter.accepted) + 30), 60, "30 tasks accepted after")
    backs = [round(t, 1) for t in took]
    signame = signal.Signals(sig).name
    print(f"\nT09 nats-server {signame} x{KILLS}: back in {backs} s; answers {dict(submitter.answers)}")
    _every_task_succeeded_once(up.base, submitter.accepted)
    log = up.log()
    assert log.count("embedded nats-server back") == KILLS
    # Reconnect loops: one line per process when the connection is lost and one when it is back.
    for name in ("ordo-gateway", "ordo-projector", "ordo-scheduler", "ordo-up"):
        lost, back = log.count(f"{name}: NATS connection lost"), log.count(f"{name}: NATS connection back")
        assert lost == back == KILLS, (name, lost, back)
    assert "nats: encountered error" not in log


# Longer than nats-py's default reconnect budget (60 attempts, 0.5 s apart): a client that gave up
# after it would never come back.
LONG_OUTAGE_S = 35.0


def test_a_nats_outage_longer_than_the_default_reconnect_budget_heals_too(tmp_path: Path) -> None:
    """The restarted server cannot start for 35 s (its binary refuses while a file exists): every
    process keeps reconnecting, logs one line for the outage, and every 202 task succeeds once."""
    blocked = tmp_path / "blocked"
    wrapper = tmp_path / "bin" / "nats-server"  # same name: pid files match the running server
    wrapper.parent.mkdir()
    wrapper.write_text(
        f'#!/bin/sh\nif [ -e "{blocked}" ]; then echo "blocked by the test"; exit 1; fi\n'
        f'exec "{find_nats_server()}" "$@"\n'
    )
    wrapper.chmod(0o755)
    up = Up(tmp_path, ORDO_NATS_SERVER=str(wrapper))
    try:
        _wait(up.ready, READY_TIMEOUT, "ordo up ready")
        first = up.nats_pid()
        assert first is not None
        with Submitter(up.base) as submitter:
            _wait(submitter.accepted_more_than(30), 60, "30 tasks accepted before the kill")
            blocked.touch()
            os.kill(first, signal.SIGKILL)
            down_at = time.monotonic()
            _wait(lambda: time.monotonic() - down_at > LONG_OUTAGE_S, LONG_OUTAGE_S + 5, "the long outage")
            during = len(submitter.accepted)
            blocked.unlink()
            took = _wait(_replaced(up, up.nats_pid, first), BACK_WITHIN, "new nats-server, readyz 200")
            _wait(submitter.accepted_more_than(len(submitter.accepted) + 30), 60, "30 tasks accepted after")
        print(f"\nlong NATS outage: back {took:.1f}s after unblocking; answers {dict(submitter.answers)}")
        assert during < len(submitter.accepted)
        _every_task_succeeded_once(up.base, submitter.accepted)
        log = up.log()
        assert log.count("embedded nats-server did not start") == 1 and "embedded nats-server back" in log
        for name in ("ordo-gateway", "ordo-projector", "ordo-scheduler", "ordo-up"):
            lost = log.count(f"{name}: NATS connection lost")
            assert lost == log.count(f"{name}: NATS connection back") == 1, (name, lost)
        assert "nats: encountered error" not in log
    finally:
        up.stop()


def test_t13_sigkill_of_the_postmaster_while_submitting_heals_the_read_side(up: Up) -> None:
    first = up.postmaster_pid()
    assert first is not None and process_alive(first)
    with Submitter(up.base) as submitter:
        _wait(submitter.accepted_more_than(30), 60, "30 tasks accepted before the kill")
        os.kill(first, signal.SIGKILL)
        killed_at = len(submitter.accepted)
        took = _wait(_replaced(up, up.postmaster_pid, first), BACK_WITHIN, "a new postmaster, /readyz 200")
        _wait(submitter.accepted_more_than(killed_at + 30), 60, "30 tasks accepted after the restart")
    print(f"\nT13 postmaster SIGKILL: back in {took:.1f}s; answers {dict(submitter.answers)}")
    _every_task_succeeded_once(up.base, submitter.accepted)
    log = up.log()
    assert "embedded PostgreSQL (pid" in log and "embedded PostgreSQL back" in log
    # The projector waits for PostgreSQL instead of crashing: one line lost, one back.
    assert "child projector exited" not in log
    assert log.count("ordo.projector: PostgreSQL unavailable") == 1, log[-5000:]
    assert log.count("ordo.projector: PostgreSQL back") == 1
    # asyncpg's pool-floor retries: one line each, no traceback (OncePerOutage).
    lines = log.splitlines()
    floor = [i for i, line in enumerate(lines) if "Failed to restore the pool connection floor" in line]
    assert all(not lines[i + 1].startswith("Traceback") for i in floor if i + 1 < len(lines))


def test_a_killed_node_of_the_local_cluster_is_restarted_by_ordo_up(tmp_path: Path) -> None:
    """`ordo up --cluster 3`: each node is watched; a SIGKILLed node comes back on its ports."""
    up = Up(tmp_path, ("--cluster", "3"))
    try:
        _wait(up.ready, READY_TIMEOUT, "ordo up --cluster 3 ready")
        first = up.nats_pid("n2")
        assert first is not None and process_alive(first)
        with Submitter(up.base) as submitter:
            _wait(submitter.accepted_more_than(20), 60, "20 tasks accepted before the kill")
            os.kill(first, signal.SIGKILL)
            _wait(_replaced(up, lambda: up.nats_pid("n2"), first), BACK_WITHIN, "node n2 restarted")
            _wait(submitter.accepted_more_than(len(submitter.accepted) + 20), 60, "20 tasks accepted after")
        _every_task_succeeded_once(up.base, submitter.accepted)
        assert up.log().count("embedded nats-server n2 back") == 1
    finally:
        up.stop()

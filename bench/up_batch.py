"""`ordo up` with its defaults, as a new user gets it: N no-op tasks through `POST /v1/tasks:batch`.

    .venv/bin/python -m bench.up_batch [--n 20000] [--workers 1] [--timeout 300] [--batch 10000]
    .venv/bin/python -m bench.up_batch --n 100 --run-in 3     # 100 tasks due at the same instant

Starts `python -m ordo.cli up --no-auth --port <free port> --data-dir <fresh temp dir>` (plus
`--workers` when it is not ordo up's default of 1) as a subprocess with no ORDO_* variable in its
environment (except ORDO_NATS_SERVER / ORDO_PG_BIN_DIR, which only say where the server binaries
are), waits until `GET /readyz` answers 200 (at most 120 s, not timed), then submits N
`{"type": "demo.echo", "payload": null}` tasks as a user's script would: one request of at most
`--batch` tasks (default: the gateway's `max_batch`, 10,000) after another (sequential, not
concurrent), each waiting for its 202.
After the last 202 it polls `GET /v1/stats` every 50 ms until `by_status.succeeded` reaches the
number of accepted tasks (or `--timeout` passes: then `timed_out: true` with the count reached).

Figures: `submit_s` (first request sent -> last 202 received) and `submit_per_s`; `e2e_s` (first
request sent -> the poll that saw every task succeeded) and `tasks_per_s`; `lost` (N minus the tasks
the API knows, summed over `by_status`; in a timed-out run this also counts tasks the read model
had not caught up with yet); the CPU seconds and peak RSS of the `ordo up` process tree
and of this client while measuring (`processes`). Then `ordo up` gets SIGINT (Ctrl-C) and has 60 s
to exit (then SIGTERM, 10 s, then SIGKILL: only the process started here); `stop_s`, `exit_code`
and `stray_pids` (processes of its tree still alive after it exited) say how that went. The temp
folder is removed. One JSON line; `target_s` is the goal for N = 20,000 end to end.

With `--run-in S`, every task is submitted with the same `run_at`, S seconds after the first request
is sent (issue 13: 100 tasks due at the same instant through `ordo up` defaults). After they have
succeeded, each task's timeline (`GET /v1/tasks/{id}/events`) gives `start_lateness_ms` (the stored
time of its `attempt_started` minus `run_at`) and `enqueue_lateness_ms` (of its `queued`), and
`early` counts starts before `run_at`; `target_ms` is the goal for the start's p99. The polls of
`/v1/stats` begin half a second after `run_at`, so that they do not load the system at that instant.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench.common import ROOT, ProcSampler, emit, load_average, summary, wait_ready
from ordo.embedded.processes import free_port
from ordo.infra.settings import Settings

HOST = "127.0.0.1"
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0
POLL_EVERY_S = 0.05
TARGET_S = 10
TARGET_AT_ONCE_MS = 20  # start lateness p99 of tasks due at one instant (issue 13)
_KEEP_ENV = ("ORDO_NATS_SERVER", "ORDO_PG_BIN_DIR")  # where the server binaries are, nothing else


def _tree(root: int) -> dict[int, str]:
    """{pid: command name} of `root` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    names: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            with open(f"/proc/{entry}/stat") as f:
                head, _, tail = f.read().rpartition(")")
            state, ppid = tail.split()[:2]
            if state != "Z":
                children.setdefault(int(ppid), []).append(int(entry))
                names[int(entry)] = head.partition("(")[2]
    out: dict[int, str] = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        out[pid] = names.get(pid, "?")
        todo.extend(children.get(pid, ()))
    return out


def _alive(pids: dict[int, str]) -> dict[int, str]:
    """The ones still running (not zombies) with the same command name (pids are reused)."""
    now: dict[int, str] = {}
    for pid, name in pids.items():
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/stat") as f:
                head, _, tail = f.read().rpartition(")")
            if tail.split()[0] != "Z" and head.partition("(")[2] == name:
                now[pid] = name
    return now


def _stop(proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    """Ctrl-C as a user does; SIGTERM, then SIGKILL if it does not exit. Only this pid."""
    t0 = time.perf_counter()
    how = "already exited"
    if proc.poll() is None:
        how = "sigint"
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            how = "sigterm"
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                how = "sigkill"
                proc.kill()
                proc.wait(timeout=10)
    return {"stop": how, "stop_s": round(time.perf_counter() - t0, 2), "exit_code": proc.returncode}


async def _stats(client: httpx.AsyncClient) -> dict[str, int] | None:
    try:
        resp = await client.get("/v1/stats", timeout=5.0)
    except httpx.HTTPError:
        return None
    if resp.status_code != 200:
        return None
    by_status: dict[str, int] = resp.json()["by_status"]
    return by_status


async def _measure(port: int, n: int, batch: int, timeout: float, run_in: float | None) -> dict[str, Any]:
    item: dict[str, Any] = {"type": "demo.echo", "payload": None}
    run_at = None
    if run_in is not None:
        run_at = datetime.now(UTC) + timedelta(seconds=run_in)
        item["run_at"] = run_at.isoformat()
    bodies = [json.dumps({"tasks": [item] * min(batch, n - i)}).encode() for i in range(0, n, batch)]
    accepted = 0
    errors: list[str] = []
    ids: list[str] = []
    headers = {"Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=120.0) as client:
        t0 = time.perf_counter()
        for body in bodies:  # one after another, each waiting for its 202
            try:
                resp = await client.post("/v1/tasks:batch", content=body, headers=headers)
            except httpx.HTTPError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            if resp.status_code == 202:
                answer = resp.json()
                accepted += int(answer["count"])
                ids += [t["id"] for t in answer["items"]]
            else:
                errors.append(f"{resp.status_code}: {resp.text[:300]}")
        t_submitted = time.perf_counter()
        if run_at is not None:
            # Nothing can succeed before `run_at`: the polls (a stats query each) start after it, so
            # that they do not load the gateway and PostgreSQL at the instant being measured.
            await asyncio.sleep(max(0.0, (run_at - datetime.now(UTC)).total_seconds() + 0.5))
        # Every task accepted has succeeded (or the timeout passed), as the API reports it.
        deadline = t_submitted + timeout
        by_status: dict[str, int] = {}
        polls = 0
        while True:
            polls += 1
            seen = await _stats(client)
            t_seen = time.perf_counter()
            if seen is not None:
                by_status = seen
            if by_status.get("succeeded", 0) >= accepted or t_seen > deadline:
                break
            await asyncio.sleep(POLL_EVERY_S)
        punctuality = {} if run_at is None else await _lateness(client, ids, run_at)
    succeeded = by_status.get("succeeded", 0)
    known = sum(by_status.values())
    e2e = t_seen - t0
    submit = t_submitted - t0
    return {
        "submit": "sequential",
        "requests": len(bodies),
        "batch_max": batch,
        "accepted": accepted,
        "submit_errors": errors[:10],
        "submit_s": round(submit, 3),
        "submit_per_s": round(accepted / submit, 1) if submit > 0 else None,
        "e2e_s": round(e2e, 3),
        "tasks_per_s": round(succeeded / e2e, 1) if e2e > 0 else None,
        "succeeded": succeeded,
        "timed_out": succeeded < accepted,
        "all_succeeded": succeeded >= n,
        "within_target": succeeded >= n and e2e <= TARGET_S,
        "by_status": {k: v for k, v in by_status.items() if v},
        "lost": n - known,
        "polls": polls,
        **punctuality,
    }


async def _lateness(client: httpx.AsyncClient, ids: list[str], run_at: datetime) -> dict[str, Any]:
    """Each task's `queued` and `attempt_started` stored times against `run_at`, from its timeline."""
    started: list[float] = []
    queued: list[float] = []
    for task_id in ids:
        resp = await client.get(f"/v1/tasks/{task_id}/events")
        resp.raise_for_status()
        for event in resp.json()["events"]:
            late = (datetime.fromisoformat(event["at"]) - run_at).total_seconds() * 1000
            if event["type"] == "attempt_started" and event["attempt"] == 1:
                started.append(late)
            elif event["type"] == "queued":
                queued.append(late)
    return {
        "run_at": run_at.isoformat(),
        "start_lateness_ms": summary(started, 50, 99),
        "enqueue_lateness_ms": summary(queued, 50, 99),
        "early": sum(1 for late in started if late < 0),
        "target_ms": TARGET_AT_ONCE_MS,
    }


def _tail(path: Path, lines: int = 40) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=1, help="ordo up --workers (its default: 1)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the last task")
    parser.add_argument(
        "--batch", type=int, default=Settings().max_batch, help="tasks per request (default: max_batch)"
    )
    parser.add_argument(
        "--run-in", type=float, default=None, help="every task due at one instant, this many seconds ahead"
    )
    args = parser.parse_args()

    result: dict[str, Any] = {"bench": "up_batch", "n": args.n, "workers": args.workers}
    if args.run_in is not None:
        result["run_in_s"] = args.run_in
    result["loadavg_start"] = load_average()
    data_dir = Path(tempfile.mkdtemp(prefix="ordo-up-bench-"))
    os.chmod(data_dir, 0o755)  # the embedded PostgreSQL may run as another user
    log_dir = Path(tempfile.mkdtemp(prefix="ordo-up-bench-log-"))
    log_path = log_dir / "ordo-up.log"
    port = free_port(HOST)
    argv = [sys.executable, "-m", "ordo.cli", "up", "--no-auth", "--port", str(port)]
    argv += ["--data-dir", str(data_dir)]
    if args.workers != 1:
        argv += ["--workers", str(args.workers)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDO_") or k in _KEEP_ENV}
    failed = False
    proc: subprocess.Popen[bytes] | None = None
    tree: dict[int, str] = {}
    try:
        with open(log_path, "wb") as log:
            # Its own session: a Ctrl-C on this benchmark reaches ordo up only through _stop().
            proc = subprocess.Popen(
                argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        t_start = time.perf_counter()
        wait_ready(f"http://{HOST}:{port}/readyz", proc, timeout=READY_TIMEOUT_S)
        result["ready_s"] = round(time.perf_counter() - t_start, 2)
        sampler = ProcSampler({"ordo_up": proc.pid, "bench": os.getpid()}, own_only=("bench",)).start()
        try:
            result.update(asyncio.run(_measure(port, args.n, args.batch, args.timeout, args.run_in)))
        finally:
            result["processes"] = sampler.stop()
        failed = bool(result["timed_out"] or result["submit_errors"] or result["lost"])
    except Exception as exc:  # noqa: BLE001 - reported in the JSON line, then cleaned up
        failed = True
        result["error"] = f"{type(exc).__name__}: {exc}"
        result.setdefault("timed_out", isinstance(exc, TimeoutError))
    finally:
        if proc is not None:
            tree = _tree(proc.pid)
            result.update(_stop(proc))
            time.sleep(0.5)  # let the supervisor's children finish exiting
            result["stray_pids"] = {str(pid): name for pid, name in _alive(tree).items() if pid != proc.pid}
            failed = failed or bool(result["stray_pids"]) or result["exit_code"] != 0
        if failed:
            print(f"--- last lines of ordo up's output ({log_path}) ---", file=sys.stderr)
            print(_tail(log_path), file=sys.stderr)
        shutil.rmtree(data_dir, ignore_errors=True)
        shutil.rmtree(log_dir, ignore_errors=True)
    result["processes_in_tree"] = len(tree)
    result["target_s"] = TARGET_S
    result["loadavg_end"] = load_average()
    emit(result)


if __name__ == "__main__":
    main()

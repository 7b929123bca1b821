"""W1 throughput: N no-op tasks submitted as fast as the client allows (atomic batches), workers
running; time from the first submit to the last task `succeeded` in the read model. Also runs the
bare JetStream loop on the same machine and reports the ratio. `log_tasks_per_s` is the write side
alone: N over the time to the last `succeeded` stored in the log (the read model shows it later);
`catch_up_s` is the time from there until the read model shows every task succeeded.

Also reports the projection lag during the run (per task event: the projector's commit NOTIFY that
covered its sequence minus the event's stored time in the log; max and p99, and a `timeline`: per
quarter second, the events stored, the events committed and the worst lag, and `cores`: per
quarter second, the cores each process used) and the CPU seconds and peak RSS of every process
(nats-server, postgres with its backends, projector, workers, and this submitting client), sampled
from /proc. `--profile DIR` runs py-spy on the worker, the projector
and the submitter for the whole run and writes collapsed stacks plus a text summary to DIR.

    .venv/bin/python -m bench.w1_throughput [--n 20000] [--workers 1] [--concurrency N] [--sync-always]
        [--preload 1000000] [--rounds K] [--rate R] [--payload-bytes B]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import msgspec

from bench import pg_statements
from bench.bare_loop import bare_loop
from bench.common import (
    CommitClock,
    Components,
    ProcSampler,
    emit,
    load_average,
    proc_usage,
    server_pids,
    servers,
    succeeded_shown,
    summary,
    writes,
)
from bench.nats_1m import publish_tasks
from ordo import event_loop
from ordo.domain.commands import SubmitTask
from ordo.infra import subjects as sj
from ordo.infra import wiring
from ordo.infra.ids import new_task_id
from ordo.infra.nats_conn import connect, provision
from ordo.infra.settings import Settings
from ordo.projections.registry import PROJECTIONS
from ordo.projections.runner import ensure_checkpoints
from ordo.projections.schema import migrate


async def _wait_projected(dsn: str, tenant: str, n: int, timeout: float) -> tuple[float, int]:
    """Wait until n tasks succeeded in the read model or the timeout passed: (time, succeeded)."""
    conn = await asyncpg.connect(dsn)
    deadline = time.perf_counter() + timeout
    try:
        while True:
            done = await succeeded_shown(conn, tenant, n)
            if done >= n or time.perf_counter() > deadline:
                return time.perf_counter(), int(done)
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


async def _counts(dsn: str, tenant: str) -> tuple[int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        dup = await conn.fetchval(
            "SELECT count(*) FROM (SELECT task_id FROM task_events WHERE tenant=$1 AND type='succeeded'"
            " GROUP BY task_id HAVING count(*) > 1) d",
            tenant,
        )
        total = await conn.fetchval("SELECT count(*) FROM tasks WHERE tenant=$1", tenant)
        return int(dup), int(total)
    finally:
        await conn.close()


async def _projection_lag_ms(dsn: str, tenant: str, clock: CommitClock) -> dict[str, Any]:
    """Per task event: when the projector's commit covering it was announced minus its stored time;
    and the run in windows of `_WINDOW_S` (`timeline`)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT seq, extract(epoch FROM at)::float8 AS at FROM task_events WHERE tenant=$1", tenant
        )
    finally:
        await conn.close()
    visible = clock.visible_at()
    stamped = [(float(r["at"]), visible(r["seq"])) for r in rows]
    lags = [(v - at) * 1000.0 for at, v in stamped if v is not None]
    first = min((at for at, _ in stamped), default=None)
    return {**summary(lags, 50, 99), "timeline": lag_timeline(stamped), "timeline_t0": first}


# The timeline's window (seconds).
_WINDOW_S = 0.25


def cores_timeline(sampler: ProcSampler, t0: float, windows: int) -> dict[str, Any]:
    """Who had the cores while the lag built up: per window of the lag's `timeline` (the same
    starts), the cores each process used on average."""
    names = list(sampler.cores_between(t0, t0 + _WINDOW_S))  # the processes sampled, in order
    rows = []
    for i in range(windows):
        start = t0 + i * _WINDOW_S
        cores = sampler.cores_between(start, start + _WINDOW_S)
        rows.append([round(i * _WINDOW_S, 2), *(cores[name] for name in names)])
    return {"names": names, "windows": rows}


def lag_timeline(stamped: list[tuple[float, float | None]]) -> list[list[float]]:
    """Where a lag comes from: per window of `_WINDOW_S` from the first event stored, [window start
    (s), events stored in it, events committed in it, the largest lag (ms) of those stored in it].
    Stored faster than committed, the events wait behind the ones before them."""
    if not stamped:
        return []
    t0 = min(at for at, _ in stamped)
    width = int((max(v or at for at, v in stamped) - t0) / _WINDOW_S) + 1
    stored, committed, worst = [0] * width, [0] * width, [0.0] * width
    for at, v in stamped:
        i = int((at - t0) / _WINDOW_S)
        stored[i] += 1
        if v is not None:
            committed[int((v - t0) / _WINDOW_S)] += 1
            worst[i] = max(worst[i], (v - at) * 1000.0)
    return [[round(i * _WINDOW_S, 2), stored[i], committed[i], round(worst[i], 1)] for i in range(width)]


async def _last_stored(dsn: str, tenant: str) -> float:
    """When the log stored the run's last `succeeded` (epoch seconds): the write side's end."""
    conn = await asyncpg.connect(dsn)
    try:
        at = await conn.fetchval(
            "SELECT extract(epoch FROM max(at))::float8 FROM task_events"
            " WHERE tenant=$1 AND type='succeeded'",
            tenant,
        )
        return float(at)
    finally:
        await conn.close()


# With `--rate`, the tasks are submitted in this many chunks a second.
_PACED_CHUNKS_PER_S = 100


def noop_submissions(tenant: str, n: int, payload_bytes: int = 0) -> list[SubmitTask]:
    """n submits of the demo worker's no-op `demo.echo` on the default queue; with `payload_bytes`,
    each carries a JSON object of about that size (echoed back as its result)."""
    now = datetime.now(UTC)
    payload = msgspec.Raw(b"null") if payload_bytes <= 0 else sized_payload(payload_bytes)
    return [
        SubmitTask(
            task_id=new_task_id(),
            tenant=tenant,
            queue="default",
            task_type="demo.echo",
            now=now,
            payload=payload,
        )
        for _ in range(n)
    ]


def sized_payload(size: int) -> msgspec.Raw:
    """A JSON object of about `size` bytes: numbers and short words, as a task's arguments are."""
    items: list[str] = []
    length = 2
    i = 0
    while length < size:
        item = f'"k{i}":{{"id":{1000003 * i % 999983},"name":"item-{i}","ok":{"true" if i % 3 else "false"}}}'
        items.append(item)
        length += len(item) + 1
        i += 1
    return msgspec.Raw(("{" + ",".join(items) + "}").encode())


async def run(
    nats_url: str,
    dsn: str,
    n: int,
    chunk: int,
    timeout: float,
    rate: float | None = None,
    sync_always: bool = False,
    payload_bytes: int = 0,
) -> dict[str, Any]:
    tenant = "w1" + uuid.uuid4().hex[:6]
    settings = Settings(nats_url=nats_url, database_url=dsn, tenant=tenant, sync_always=sync_always)
    clock = CommitClock()
    await clock.start(dsn)
    nc = await connect(settings, "bench-w1")
    await provision(nc, settings)
    handler = wiring.command_handler(nc, settings)  # as the gateway builds it
    commands = noop_submissions(tenant, n, payload_bytes)
    t0, t0_wall = time.perf_counter(), time.time()
    if rate is not None:
        chunk = max(1, int(rate) // _PACED_CHUNKS_PER_S)  # an even stream, not a burst
    for start in range(0, n, chunk):
        if rate is not None and (ahead := t0 + start / rate - time.perf_counter()) > 0:
            await asyncio.sleep(ahead)  # pacing: the next chunk's time has not come yet
        await handler.submit_many(tenant, commands[start : start + chunk])
    t_submitted = time.perf_counter()
    gate = handler.gate
    t_done, succeeded = await _wait_projected(dsn, tenant, n, timeout)
    dup, total = await _counts(dsn, tenant)
    await asyncio.sleep(0.5)  # the last NOTIFY
    await clock.stop()
    lag = await _projection_lag_ms(dsn, tenant, clock)
    log_end = await _last_stored(dsn, tenant) - t0_wall
    await nc.close()
    return {
        "succeeded": succeeded,
        "timed_out": succeeded < n,  # then tasks_per_s is succeeded / timeout, not a finished run
        "tasks_per_s": round(succeeded / (t_done - t0), 2),
        "submit_per_s": round(n / (t_submitted - t0), 2),
        "wall_s": round(t_done - t0, 2),
        # The write side alone: the last task's `succeeded` stored in the log (the read model later).
        "log_tasks_per_s": round(succeeded / log_end, 2),
        # From that last `succeeded` stored in the log to the read model showing every task.
        "catch_up_s": round(t_done - t0 - log_end, 2),
        "lost": n - total,  # tasks missing from the read model (0 also when a run timed out)
        "duplicate_succeeded": dup,
        "projection_lag_ms": lag,
        # The batch submits' pieces that waited for the read model, and for how long in all.
        "paced": {"waits": gate.waits, "waited_s": round(gate.waited_s, 2)} if gate is not None else None,
    }


async def _preload(nats_url: str, dsn: str, n: int) -> dict[str, Any]:
    """N tasks of another tenant and queue in the log before the run, the read side caught up with
    them (its checkpoints moved past them: W1 measures a log that is long, not a projector behind)."""
    # On a queue no worker of the run serves: in the log, never run.
    published = await publish_tasks(nats_url, n, 2000, [], tenant="preload", queue="preload")
    nc = await connect(Settings(nats_url=nats_url), "bench-w1-preload")
    last = (await nc.jetstream().stream_info(sj.EVENTS_STREAM)).state.last_seq
    await nc.close()
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        await ensure_checkpoints(conn, PROJECTIONS)
        await conn.execute("UPDATE projection_checkpoints SET last_seq = $1", last)
    finally:
        await conn.close()
    return {"tasks": n, "last_seq": last, "publish_s": published["publish_s"]}


def _settle(pid: int, timeout: float = 60.0) -> float:
    """Wait until the process uses under 5 % of a core over half a second (nats-server after the
    preload: it indexes and collects what it just stored); the seconds waited."""
    started = time.monotonic()
    cpu, _ = proc_usage(pid)
    while time.monotonic() - started < timeout:
        time.sleep(0.5)
        now, _ = proc_usage(pid)
        if now - cpu < 0.025:
            break
        cpu = now
    return round(time.monotonic() - started, 1)


def _start_profilers(out: Path, pids: dict[str, int]) -> list[subprocess.Popen[bytes]]:
    """py-spy record (collapsed stacks, 200 Hz) on each pid until it is stopped."""
    out.mkdir(parents=True, exist_ok=True)
    py_spy = Path(sys.executable).parent / "py-spy"
    procs = []
    for name, pid in pids.items():
        argv = [str(py_spy), "record", "--pid", str(pid), "--format", "raw", "--rate", "200"]
        argv += ["--nonblocking", "-o", str(out / f"{name}.txt")]
        log = open(out / f"{name}.py-spy.log", "wb")  # noqa: SIM115 - lives as long as the child
        procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT))
    time.sleep(1.0)  # attach before the clock starts
    return procs


def _stop_profilers(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    for proc in procs:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--concurrency", type=int, default=None, help="worker concurrency (default: what a user gets)"
    )
    parser.add_argument("--chunk", type=int, default=1000)
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="submit at this many tasks/s (in 100 chunks a second) instead of as fast as possible:"
        " the projection lag of a steady load below the system's capacity",
    )
    parser.add_argument(
        "--preload", type=int, default=0, help="tasks of another tenant already in the log (read side done)"
    )
    parser.add_argument("--sync-always", action="store_true", help="nats-server sync_interval: always")
    parser.add_argument("--payload-bytes", type=int, default=0, help="each task's payload (and result) size")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the last task")
    parser.add_argument("--profile", type=Path, default=None, help="py-spy output folder")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run W1 this many times on the same servers and processes, one result line each (the"
        " last line is the last round): later rounds measure a system past its first run's transients",
    )
    parser.add_argument(
        "--pg-statements", action="store_true", help="report PostgreSQL's top statements (a diagnostic)"
    )
    args = parser.parse_args()
    load_start = load_average()
    pg_settings = pg_statements.SETTINGS if args.pg_statements else ()
    with servers(sync_always=args.sync_always, pg_settings=pg_settings) as srv:
        ceiling = bare_loop(srv.nats.url, args.n)
        preloaded: dict[str, Any] = {}
        if args.preload:
            preloaded = event_loop.run(_preload(srv.nats.url, srv.postgres.url, args.preload))
            if srv.nats.pid is not None:
                # W1 measures a long log, not a server still busy with a million messages stored a
                # moment ago (a deployment's log grows over days).
                preloaded["settle_s"] = _settle(srv.nats.pid)
        tuned = {} if args.concurrency is None else {"ORDO_WORKER_CONCURRENCY": str(args.concurrency)}
        comps = Components({**srv.env, **tuned})
        comps.start("projector", "projector")
        for i in range(args.workers):
            comps.start(f"worker-{i + 1}", "worker")
        profilers: list[subprocess.Popen[bytes]] = []
        rounds: list[dict[str, Any]] = []
        try:
            time.sleep(2.0)  # let the components connect and provision (not timed either way)
            pids = {**server_pids(srv), **comps.pids, "submitter": os.getpid()}
            if args.profile is not None:
                py_pids = {k: v for k, v in pids.items() if k not in ("nats-server", "postgres")}
                profilers = _start_profilers(args.profile, py_pids)
            for _ in range(args.rounds):
                sampler = ProcSampler(pids, every=_WINDOW_S, own_only=("submitter",)).start()
                workers = [pid for name, pid in comps.pids.items() if name.startswith("worker-")]
                written = sum(writes(pid) for pid in workers)
                if args.pg_statements:
                    event_loop.run(pg_statements.reset(srv.postgres.url))
                result = event_loop.run(
                    run(
                        srv.nats.url,
                        srv.postgres.url,
                        args.n,
                        args.chunk,
                        args.timeout,
                        args.rate,
                        args.sync_always,
                        args.payload_bytes,
                    )
                )
                if args.pg_statements:
                    result["pg_statements"] = event_loop.run(pg_statements.top(srv.postgres.url))
                written = sum(writes(pid) for pid in workers) - written
                result["processes"] = sampler.stop()
                lag = result["projection_lag_ms"]
                t0 = lag.pop("timeline_t0")
                if t0 is not None:
                    lag["cores"] = cores_timeline(sampler, t0, len(lag["timeline"]))
                # Socket writes of the workers per task (a task is 2 appends and an ack: 3 messages).
                result["worker_writes_per_task"] = round(written / args.n, 3)
                rounds.append(result)
        finally:
            _stop_profilers(profilers)
            comps.stop()
    if args.profile is not None:
        from bench.profile_summary import summarise

        for name in sorted(args.profile.glob("*.txt")):
            (args.profile / f"{name.stem}.summary").write_text(summarise(name))
    for number, result in enumerate(rounds, 1):
        emit(
            {
                "bench": "w1_throughput",
                "n": args.n,
                "workers": args.workers,
                "concurrency": args.concurrency or Settings().worker_concurrency,
                "sync_always": args.sync_always,
                "payload_bytes": args.payload_bytes,
                "rate": args.rate,
                "preload": preloaded,
                "round": number,
                "rounds": args.rounds,
                **result,
                "bare_loop_tasks_per_s": round(ceiling),
                "ratio_to_bare_loop": round(result["tasks_per_s"] / ceiling, 3),
                "loadavg_start": load_start,
            }
        )


if __name__ == "__main__":
    main()

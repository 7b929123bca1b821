"""UI render benchmark: 100,000 tasks in the store and one task with 500 events, measured in a real
headless Chromium (Debian's `chromium`, never a downloaded browser).

Run: `.venv/bin/python bench/ui_render.py [--tasks 100000] [--events 500] [--seed api|sql]`

With `--seed sql` (e.g. `--tasks 1000000 --seed sql`) the tasks are written straight into the read
model's tables (bench/read_1m.py `seed_sql`: a realistic mix, one `submitted` event each) before the
projector starts, not into the log: only the 500-event task goes through the API. The seeded rows
take the sequences -N..-1, which no log event has and no "events after N" read (SSE) returns. It
measures the read side at sizes the HTTP seeding cannot reach.

It starts an embedded nats-server and PostgreSQL in a temporary folder, a projector and a gateway
in this process (no worker, so tasks stay put), submits the tasks with `POST /v1/tasks:batch`, gives
one task 500 events (pause/resume of a delayed task), waits for the read model, then times in the
browser, from navigation start (or the user's action) until the view shows the data:
task list first page, a filtered list, a search that finds nothing, the next page; the 500-event
timeline (chart + list), one scrubber step (as_of_seq), switching to the raw JSON view. Prints one
JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ordo.embedded.nats import EmbeddedNats, NatsServerConfig  # noqa: E402
from ordo.embedded.postgres import EmbeddedPostgres, PostgresConfig  # noqa: E402
from ordo.embedded.processes import free_port  # noqa: E402
from ordo.gateway.app import KEEP_ALIVE_S, create_app  # noqa: E402
from ordo.infra.nats_conn import connect, provision  # noqa: E402
from ordo.infra.pg import connect as pg_connect  # noqa: E402
from ordo.infra.settings import Settings  # noqa: E402
from ordo.projections.runner import ProjectionRunner  # noqa: E402
from ordo.projections.schema import migrate  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


async def _until(probe: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await probe():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def seed(http: httpx.AsyncClient, n_tasks: int, n_events: int) -> tuple[str, int, float]:
    t0 = time.perf_counter()
    types = ["demo.echo", "demo.sleep", "demo.flaky", "report.build", "email.send"]
    for start in range(0, n_tasks, 1000):
        items = [
            {"type": types[i % len(types)], "payload": {"i": i}, "priority": i % 10}
            for i in range(start, min(n_tasks, start + 1000))
        ]
        r = await http.post("/v1/tasks:batch", json={"tasks": items})
        r.raise_for_status()
    r = await http.post("/v1/tasks", json={"type": "demo.long", "payload": {"big": True}, "delay": 86400})
    task_id = r.json()["id"]
    done, last_seq = 2, 0  # submitted, scheduled
    while done < n_events:
        for action in ("pause", "resume"):
            r = await http.post(f"/v1/tasks/{task_id}:{action}")
            r.raise_for_status()
            done, last_seq = done + 1, r.json()["seq"]
    return task_id, last_seq, time.perf_counter() - t0


async def seed_tables(settings: Settings, n_tasks: int) -> float:
    """`n_tasks` tasks in the read model (SQL, sequences -n_tasks..-1); before the projector starts."""
    from bench.read_1m import seed_sql

    conn = await pg_connect(settings.database_url)
    try:
        await migrate(conn)
        return (await seed_sql(conn, settings.tenant, n_tasks, first_seq=-n_tasks)).seconds
    finally:
        await conn.close()


async def measure(base: str, task_id: str, last_seq: int, n_events: int) -> dict[str, float]:
    from playwright.async_api import async_playwright

    out: dict[str, float] = {}
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = await (await browser.new_context(viewport={"width": 1280, "height": 860})).new_page()
        page.set_default_timeout(60_000)
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

        async def since_nav(selector: str) -> float:
            await page.locator(selector).first.wait_for()
            return float(await page.evaluate("performance.now()"))

        async def action(selector: str, act: Any) -> float:
            t = await page.evaluate("performance.now()")
            await act()
            await page.locator(selector).first.wait_for()
            return float(await page.evaluate("performance.now()")) - float(t)

        for _run in range(2):  # the first run warms the server's caches; the second is reported
            await page.goto("about:blank")  # a new document: performance.now() counts from its start
            await page.goto(f"{base}/#/tasks")
            out["task_list_first_page_ms"] = await since_nav("#tasks-table tr[data-id]")
            if "--verbose" in sys.argv:
                print(
                    await page.evaluate(
                        "JSON.stringify(performance.getEntriesByType('resource')"
                        ".map(e => [e.name.slice(-40), Math.round(e.startTime), Math.round(e.duration)]))"
                    ),
                    file=sys.stderr,
                )
            await page.goto(f"{base}/#/overview")
            await page.locator("#counts a").first.wait_for()
            await page.goto(f"{base}/#/tasks")
            await page.locator("#tasks-table tr[data-id]").first.wait_for()
            out["task_list_filter_ms"] = await action(
                '#tasks-table tr[data-status="scheduled"]',
                lambda: page.select_option("select[name=status]", "scheduled"),
            )
            await page.goto(f"{base}/#/tasks")
            await page.locator("#tasks-table tr[data-id]").first.wait_for()

            async def search_nothing() -> None:
                await page.fill("input[name=q]", "no-such-task")
                await page.press("input[name=q]", "Enter")

            # A search that matches nothing: one stretch of the list, then its message (decision 47).
            out["task_list_search_nothing_ms"] = await action("#tasks-table tr.empty", search_nothing)
            await page.goto(f"{base}/#/tasks")
            await page.locator("#tasks-table tr[data-id]").first.wait_for()
            first = await page.get_attribute("#tasks-table tr[data-id]", "data-id")
            out["task_list_next_page_ms"] = await action(
                f'#tasks-table tbody tr[data-id]:first-child:not([data-id="{first}"])',
                lambda: page.click("text=Older →"),
            )
            await page.goto("about:blank")
            await page.goto(f"{base}/#/tasks/{task_id}")
            out["timeline_500_events_ms"] = await since_nav(f'#scrub-label:has-text("of {n_events}")')
            await page.locator("svg.gantt").wait_for()
            out["timeline_events_in_dom"] = float(await page.locator("#events-view tr[data-seq]").count())
            out["timeline_scrub_step_ms"] = await action(
                "#asof-status .badge",
                lambda: page.eval_on_selector(
                    "#scrubber",
                    "(el, i) => { el.value = String(i); el.dispatchEvent(new Event('input')); }",
                    n_events // 2,
                ),
            )
            out["timeline_raw_view_ms"] = await action(
                "#events-view pre.json", lambda: page.click('.tabs button[data-view="raw"]')
            )
            await page.click('.tabs button[data-view="full"]')
            out["timeline_scroll_to_end_ms"] = await action(
                f'#events-view tr[data-seq="{last_seq}"]',
                lambda: page.eval_on_selector(".events-list", "el => { el.scrollTop = el.scrollHeight; }"),
            )
        await browser.close()
        out["console_errors"] = float(len(errors))
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--seed", choices=("api", "sql"), default="api", help="how the tasks get in")
    parser.add_argument("--verbose", action="store_true", help="print resource timings")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ordo-ui-bench-"))
    nats = EmbeddedNats(NatsServerConfig(data_dir=tmp / "nats"))
    pg = EmbeddedPostgres(PostgresConfig(data_dir=tmp / "pg", fsync=False))
    nats.start()
    pg.start()
    try:
        settings = Settings(nats_url=nats.url, database_url=pg.url, tenant="bench" + uuid.uuid4().hex[:6])
        nc = await connect(settings, name="ordo-ui-bench")
        await provision(nc, settings)
        sql_seed_s = await seed_tables(settings, args.tasks) if args.seed == "sql" else 0.0
        projector = ProjectionRunner(nc, settings.database_url)
        proj = asyncio.create_task(projector.run())
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(settings),
                host="127.0.0.1",
                port=port,
                log_level="warning",
                timeout_graceful_shutdown=1,
                timeout_keep_alive=KEEP_ALIVE_S,
            )
        )
        serving = asyncio.create_task(server.serve())
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=120) as http:

            async def ready() -> bool:
                try:
                    return (await http.get("/readyz")).status_code == 200
                except httpx.HTTPError:
                    return False

            await _until(ready, 120, "gateway ready")
            api_tasks = args.tasks if args.seed == "api" else 0
            task_id, last_seq, seed_s = await seed(http, api_tasks, args.events)
            seed_s += sql_seed_s

            async def caught_up() -> bool:
                r = await http.get(f"/v1/tasks/{task_id}/events")
                return r.status_code == 200 and len(r.json()["events"]) >= args.events

            await _until(caught_up, 900, "projection caught up")
            figures = await measure(base, task_id, last_seq, args.events)
        server.should_exit = True
        await projector.shutdown()
        await asyncio.gather(serving, proj, return_exceptions=True)
        await nc.close()
        print(
            json.dumps(
                {
                    "tasks": args.tasks,
                    "seed": args.seed,
                    "events_on_one_task": args.events,
                    "seed_s": round(seed_s, 1),
                    "sql_seed_s": round(sql_seed_s, 1),
                    **{k: round(v, 1) for k, v in figures.items()},
                }
            )
        )
    finally:
        pg.stop()
        nats.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())

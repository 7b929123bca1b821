"""Chaos runs: the fault tests repeated with randomised timing (`make chaos`, `python -m tests.chaos`).

Two halves:

- `Chaos`, read by the fault tests. Without `ORDO_CHAOS_SEED` every value is the test's fixed one
  (what `make test` runs). With it, each value is drawn from the given safe range by a generator
  seeded with (seed, test name), so one seed replays one run exactly as far as the test controls it
  (the scheduler of the machine does the rest): when to kill or cut a node, the ack deadline and the
  lease extension period, batch sizes, which node.
- The driver (`main`): runs the fault test files N times, each run in a fresh pytest process with
  its own seed, within a total time budget, then prints a summary with the seed of every failed run
  and the command that replays it.

    python -m tests.chaos                     # ORDO_CHAOS_RUNS runs (5), base seed random
    python -m tests.chaos --runs 20 --seed 42 # seeds 42..61
    python -m tests.chaos --replay 1234       # one run with exactly seed 1234
    ORDO_CHAOS_SEED=1234 python -m pytest tests/test_cluster.py   # the same, by hand
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from ordo.infra.settings import Settings

SEED_ENV = "ORDO_CHAOS_SEED"
RUNS_ENV = "ORDO_CHAOS_RUNS"
TIMEOUT_ENV = "ORDO_CHAOS_TIMEOUT"
ROOT = Path(__file__).resolve().parent.parent
FAULT_TESTS = (
    "tests/test_worker_faults.py",
    "tests/test_projections_failover.py",
    "tests/test_cluster.py",
    "tests/test_partition.py",
)

T = TypeVar("T")


def env_seed() -> int | None:
    raw = os.environ.get(SEED_ENV, "").strip()
    return int(raw) if raw else None


class Chaos:
    """The timing of one fault test: fixed values, or values drawn from a seed (`ORDO_CHAOS_SEED`)."""

    def __init__(self, test: str, seed: int | None = None) -> None:
        self.test = test
        self.seed = env_seed() if seed is None else seed
        self.active = self.seed is not None
        self._rng = random.Random(f"{self.seed}/{test}")
        self.picked: dict[str, object] = {}

    def uniform(self, name: str, fixed: float, lo: float, hi: float) -> float:
        value = round(self._rng.uniform(lo, hi), 3) if self.active else fixed
        self.picked[name] = value
        return value

    def randint(self, name: str, fixed: int, lo: int, hi: int) -> int:
        value = self._rng.randint(lo, hi) if self.active else fixed
        self.picked[name] = value
        return value

    def choice(self, name: str, fixed: T, options: Sequence[T]) -> T:
        value = self._rng.choice(list(options)) if self.active else fixed
        self.picked[name] = value
        return value

    def rng(self, fixed_seed: int) -> random.Random:
        """A generator for a test's own random choices: `Random(fixed_seed)` unless chaos is on."""
        return random.Random(f"{self.seed}/{self.test}/rng") if self.active else random.Random(fixed_seed)

    def timers(self, settings: Settings, ack_wait: tuple[float, float]) -> Settings:
        """The settings with a random ack deadline in `ack_wait` and a lease extension period of
        1/3.5 to 1/6 of it (Settings refuses more than 1/3); unchanged when chaos is off."""
        if not self.active:
            return settings
        ack = self.uniform("ack_wait_s", settings.ack_wait_s, *ack_wait)
        every = round(ack / self.uniform("lease_divisor", 4.0, 3.5, 6.0), 3)
        self.picked["lease_extend_every_s"] = every
        return dataclasses.replace(settings, ack_wait_s=ack, lease_extend_every_s=every)

    def describe(self) -> str:
        values = " ".join(f"{k}={v}" for k, v in self.picked.items())
        return f"chaos seed={self.seed} {values}" if self.active else f"fixed timing {values}"


# --------------------------------------------------------------------------------------------- driver


@dataclasses.dataclass
class Run:
    index: int
    seed: int
    seconds: float = 0.0
    passed: int = 0
    skipped: int = 0
    failed: list[str] = dataclasses.field(default_factory=list)
    timed_out: bool = False
    returncode: int | None = None
    log: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.failed and not self.timed_out and self.returncode in (0, 5)


def _junit(path: Path) -> tuple[int, int, list[str]]:
    """(passed, skipped, failed test ids) from a pytest junit report."""
    if not path.exists():
        return 0, 0, []
    passed = skipped = 0
    failed: list[str] = []
    for case in ET.parse(path).iter("testcase"):
        test_id = f"{case.get('classname', '').replace('.', '/')}.py::{case.get('name', '')}"
        if case.find("failure") is not None or case.find("error") is not None:
            failed.append(test_id)
        elif case.find("skipped") is not None:
            skipped += 1
        else:
            passed += 1
    return passed, skipped, failed


def _run_once(run: Run, files: Sequence[str], work: Path, timeout: float, extra: Sequence[str]) -> None:
    run_dir = work / f"run{run.index}-seed{run.seed}"
    run_dir.mkdir(parents=True)
    report = run_dir / "junit.xml"
    run.log = run_dir / "pytest.log"
    argv = [
        sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-s",
        "--basetemp", str(run_dir / "tmp"), "--junitxml", str(report), *extra, *files,
    ]  # fmt: skip
    env = {**os.environ, SEED_ENV: str(run.seed)}
    started = time.monotonic()
    with open(run.log, "wb") as log:
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            run.returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            run.timed_out = True
            os.killpg(proc.pid, signal.SIGTERM)  # pytest and the servers it started (same session)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    run.seconds = time.monotonic() - started
    run.passed, run.skipped, run.failed = _junit(report)


def _figures(log: Path) -> list[str]:
    """The figure lines the fault tests print (pauses, counts)."""
    keep = ("checker:", "cluster:", "partition:", "projector failover:", "kill->redelivery", "chaos seed=")
    text = log.read_text(errors="replace") if log.exists() else ""
    return [line.strip() for line in text.splitlines() if line.strip().startswith(keep)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=int(os.environ.get(RUNS_ENV, "5")))
    parser.add_argument("--seed", type=int, default=env_seed(), help="base seed (run i uses seed+i)")
    parser.add_argument("--replay", type=int, help="one run with exactly this seed")
    parser.add_argument(
        "--timeout", type=float, default=float(os.environ.get(TIMEOUT_ENV, "2400")), help="total budget, s"
    )
    parser.add_argument("--run-timeout", type=float, default=900.0, help="budget of one run, s")
    parser.add_argument("-k", dest="keyword", help="pytest -k expression")
    parser.add_argument("files", nargs="*", default=list(FAULT_TESTS))
    args = parser.parse_args(argv)

    if args.replay is not None:
        seeds = [args.replay]
    else:
        base = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)
        seeds = [base + i for i in range(max(1, args.runs))]
    extra = ["-k", args.keyword] if args.keyword else []
    work = Path(tempfile.mkdtemp(prefix="ordo-chaos-"))
    deadline = time.monotonic() + args.timeout
    runs: list[Run] = []
    print(f"chaos: {len(seeds)} run(s) of {' '.join(args.files)}; budget {args.timeout:.0f}s; logs in {work}")
    for i, seed in enumerate(seeds, 1):
        remaining = deadline - time.monotonic()
        longest = max((r.seconds for r in runs), default=0.0)
        if remaining < max(60.0, longest):
            print(f"chaos: time budget left ({remaining:.0f}s) is shorter than a run; stopping after {i - 1}")
            break
        run = Run(i, seed)
        print(f"chaos: run {i}/{len(seeds)} seed={seed} ...", flush=True)
        _run_once(run, args.files, work, min(args.run_timeout, remaining), extra)
        runs.append(run)
        state = "ok" if run.ok else ("TIMED OUT" if run.timed_out else "FAILED")
        print(
            f"chaos: run {i} seed={seed} {state} in {run.seconds:.0f}s "
            f"(passed={run.passed} skipped={run.skipped} failed={len(run.failed)})"
        )
        for line in _figures(run.log) if run.log else []:
            print(f"    {line}")
        for test_id in run.failed:
            print(f"    FAILED {test_id}")

    bad = [r for r in runs if not r.ok]
    print("\n==== chaos summary ====")
    print(
        f"runs={len(runs)} ok={len(runs) - len(bad)} failed={len(bad)} "
        f"tests passed={sum(r.passed for r in runs)} skipped={sum(r.skipped for r in runs)} "
        f"failed={sum(len(r.failed) for r in runs)} elapsed={sum(r.seconds for r in runs):.0f}s"
    )
    for r in bad:
        why = "timed out" if r.timed_out else f"exit {r.returncode}"
        print(f"  seed {r.seed}: {why}; log {r.log}")
        for test_id in r.failed or list(args.files):
            print(f"    replay: {SEED_ENV}={r.seed} {shlex.quote(sys.executable)} -m pytest {test_id}")
        again = [
            *(["-k", args.keyword] if args.keyword else []),
            *(f for f in args.files if f not in FAULT_TESTS),
        ]
        replay_all = f"{shlex.quote(sys.executable)} -m tests.chaos --replay {r.seed} {shlex.join(again)}"
        print(f"    replay all: {replay_all.rstrip()}")
    if not bad:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if bad or not runs else 0


if __name__ == "__main__":
    sys.exit(main())

"""Worker processes for fault tests: `python -m ordo.cli worker` with ORDO_* settings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from nats.aio.client import Client as NATS

from ordo.infra.heartbeats import read_heartbeats
from ordo.infra.settings import Settings
from tests.helpers import eventually


class WorkerProc:
    """One worker process serving `queue`, with a fixed id and a fast registry heartbeat."""

    def __init__(
        self,
        settings: Settings,
        queue: str,
        worker_id: str,
        log_dir: Path,
        concurrency: int = 20,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.worker_id = worker_id
        env = {k: v for k, v in os.environ.items() if not k.startswith("ORDO_")}
        env.update(settings.to_env())
        env.update(ORDO_WORKER_ID=worker_id, ORDO_WORKER_HEARTBEAT_S="0.5", ORDO_LOG_LEVEL="WARNING")
        env.update(extra_env or {})
        self.log_path = log_dir / f"{worker_id}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ordo.cli",
                "worker",
                "--queues",
                queue,
                "--concurrency",
                str(concurrency),
            ],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def ready(self, nc: NATS, timeout: float = 60) -> None:
        """Wait until the worker announced itself (its consumers are open)."""

        async def announced() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker {self.worker_id} exited: {self.log_path.read_text()[-2000:]}")
            return any(
                hb.worker_id == self.worker_id and hb.state == "online" for hb, _ in await read_heartbeats(nc)
            )

        await eventually(announced, timeout=timeout, interval=0.1, what=f"worker {self.worker_id} up")

    def signal(self, sig: signal.Signals) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self) -> None:
        """Make sure the process is gone (SIGCONT first: a stopped process ignores SIGKILL's reap)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
        self.proc.wait(timeout=10)
        self._log.close()

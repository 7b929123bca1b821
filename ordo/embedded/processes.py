"""Small process helpers shared by the embedded-server launchers and the supervisor.

Everything here is synchronous and Linux-oriented; on other platforms the
``/proc``-based checks degrade to "unknown" and the parent-death signal is a
no-op.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "PidInfo",
    "child_preexec",
    "free_port",
    "kill_stale",
    "log_tail",
    "pid_matches",
    "process_alive",
    "read_pidfile",
    "remove_pidfile",
    "stop_popen",
    "wait_for_port",
    "wait_pid_gone",
    "write_pidfile",
]

_PR_SET_PDEATHSIG = 1
_POLL_INTERVAL = 0.05


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free on ``host`` when this call was made."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(
    host: str,
    port: int,
    timeout: float,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Poll until ``host:port`` accepts a TCP connection.

    ``alive`` is an optional liveness probe of the process expected to listen;
    when it returns False the wait is aborted with :class:`RuntimeError`.
    Raises :class:`TimeoutError` after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            pass
        if alive is not None and not alive():
            raise RuntimeError(f"process exited before listening on {host}:{port}")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{host}:{port} not accepting connections after {timeout}s")
        time.sleep(_POLL_INTERVAL)


# --------------------------------------------------------------------------- pid files


@dataclass(frozen=True)
class PidInfo:
    """Content of one of our JSON pid files."""

    pid: int
    argv0: str
    started: float


def write_pidfile(path: Path, pid: int, argv0: str) -> None:
    """Atomically write ``{pid, argv0, started}`` as JSON to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"pid": pid, "argv0": argv0, "started": time.time()}))
    os.replace(tmp, path)


def read_pidfile(path: Path) -> PidInfo | None:
    """Read a pid file written by :func:`write_pidfile`; None if absent or garbled."""
    try:
        data = json.loads(path.read_text())
        return PidInfo(int(data["pid"]), str(data["argv0"]), float(data.get("started", 0.0)))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remove_pidfile(path: Path) -> None:
    """Delete ``path`` if it exists."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def process_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie.

    Zombies count as dead: orphans re-parented to a PID 1 that never reaps
    (common in containers and micro-VMs) would otherwise look alive forever.
    """
    if pid <= 0:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        stat = ""
    if stat:
        # The state follows the parenthesised command name, which may contain spaces.
        state = stat.rsplit(")", 1)[-1].split()[0]
        return state not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cmdline_program(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    first = raw.split(b"\0", 1)[0].decode(errors="replace").strip()
    if not first:
        return None
    # Processes that rewrite their title (e.g. "postgres: checkpointer") keep
    # the program name as the first word.
    return os.path.basename(first.split()[0].rstrip(":"))


def pid_matches(pid: int, argv0: str) -> bool:
    """True if ``pid`` is alive and runs a program whose basename equals ``argv0``'s."""
    if not process_alive(pid):
        return False
    prog = _cmdline_program(pid)
    return prog is not None and prog == os.path.basename(argv0)


def wait_pid_gone(pid: int, timeout: float) -> bool:
    """Poll until ``pid`` is dead (or a zombie); return False on timeout."""
    deadline = time.monotonic() + timeout
    while process_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_INTERVAL)
    return True


def _signal_pid(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def kill_stale(pidfile: Path, sig: int = signal.SIGTERM, timeout: float = 10.0) -> bool:
    """Terminate a leftover process recorded in ``pidfile`` and remove the file.

    The process is only signalled if ``/proc/<pid>/cmdline`` still names the
    recorded program (guards against pid reuse).  It gets ``sig``, then
    SIGKILL after ``timeout`` seconds.  Returns True if a process was killed.
    """
    info = read_pidfile(pidfile)
    killed = False
    if info is not None and info.pid != os.getpid() and pid_matches(info.pid, info.argv0):
        _signal_pid(info.pid, sig)
        if not wait_pid_gone(info.pid, timeout):
            _signal_pid(info.pid, signal.SIGKILL)
            wait_pid_gone(info.pid, 5.0)
        killed = True
    remove_pidfile(pidfile)
    return killed


def stop_popen(proc: subprocess.Popen[bytes], sig: int, timeout: float) -> int:
    """Send ``sig`` to a child, wait ``timeout`` seconds, then SIGKILL; return its exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
    return proc.wait()


def log_tail(path: Path, limit: int = 4000) -> str:
    """Return the last ``limit`` bytes of a log file as text (for error messages)."""
    try:
        return path.read_bytes()[-limit:].decode(errors="replace")
    except OSError:
        return "<no log>"


# --------------------------------------------------------------------------- pdeathsig


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except OSError:
        return None
    fn: Callable[..., int] = libc.prctl
    return fn


def child_preexec(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """Return a ``preexec_fn`` making the child receive ``sig`` when its parent dies.

    Uses ``prctl(PR_SET_PDEATHSIG)`` on Linux; elsewhere the function is a
    no-op.  Caveats (verified on Linux 6.x / CPython 3.11):

    * The setting is cleared when the child's uid/gid changes.  CPython's
      ``subprocess`` applies ``user=``/``group=``/``extra_groups=`` *before*
      calling ``preexec_fn``, so combining them with this function is safe.
    * The signal fires when the *thread* that forked the child exits, not the
      process: spawn long-lived children from a long-lived thread (normally
      the main / event-loop thread), never from a short-lived worker thread.
    * libc is resolved here, in the parent, so the child only does a plain
      foreign call between fork and exec.
    """
    prctl = _load_prctl()
    parent = os.getpid()

    def _preexec() -> None:
        if prctl is None:
            return
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        # The parent may have died between fork() and prctl(): then nobody
        # will ever send us the signal, so deliver it ourselves.
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return _preexec

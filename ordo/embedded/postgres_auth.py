"""Password authentication for the embedded PostgreSQL (audit finding F10).

`initdb` leaves `trust` in pg_hba.conf: every local account could connect as the superuser, read
the session-signing secret and mint API keys. The embedded server instead has one password,
generated on first start and kept next to its data directory (`<data>.password`, mode 0600, owned by
the account that runs `ordo up`), and requires it (`scram-sha-256`) on TCP and on the unix socket.

The password is set in single-user mode, before the server accepts any connection; then
pg_hba.conf is replaced by ours. A data directory made by an older Ordo (trust) goes through the
same steps on its next start, and so does one whose password file was lost (a new password is set).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["HBA_MARKER", "ensure_password", "hba_is_ours", "load_password", "write_hba"]

HBA_MARKER = "# ordo: password required (scram-sha-256)"

_HBA = f"""{HBA_MARKER}
# Written by ordo.embedded.postgres: the superuser's password is in the file next to this data
# directory (<data>.password). Edits here are replaced when the password is reset.
local all all scram-sha-256
host  all all all scram-sha-256
"""


def load_password(path: Path) -> str:
    """The stored password, or "" when there is none."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""


def _create_password(path: Path) -> str:
    """A new random password written atomically to `path` with mode 0600."""
    password = secrets.token_urlsafe(32)
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return password


def hba_is_ours(data_dir: Path) -> bool:
    try:
        return (data_dir / "pg_hba.conf").read_text().startswith(HBA_MARKER)
    except FileNotFoundError:
        return False


def write_hba(data_dir: Path, owner: tuple[int, int] | None) -> None:
    path = data_dir / "pg_hba.conf"
    tmp = path.with_name(path.name + ".ordo-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(_HBA)
    if owner is not None:
        os.chown(tmp, *owner)
    os.replace(tmp, path)


def _set_password(postgres: Path, data_dir: Path, password: str, creds: dict[str, Any]) -> None:
    """Set the superuser's password in single-user mode (no server runs, nothing listens).

    The password goes through stdin, never the command line; the server stores only its SCRAM
    verifier.
    """
    argv = [
        str(postgres),
        "--single",
        "-D",
        str(data_dir),
        "-c",
        "password_encryption=scram-sha-256",
        "-c",
        "exit_on_error=on",
        "postgres",
    ]
    if not password.isprintable():
        raise RuntimeError("the PostgreSQL password file holds control characters")
    literal = password.replace("'", "''")
    command = f"ALTER ROLE postgres PASSWORD '{literal}'\n"
    res = subprocess.run(argv, input=command.encode(), capture_output=True, check=False, cwd="/", **creds)
    out = (res.stdout + res.stderr).decode(errors="replace")
    if res.returncode != 0 or "ERROR:" in out or "FATAL:" in out:
        raise RuntimeError(f"setting the PostgreSQL password failed ({res.returncode}):\n{out[-2000:]}")


def ensure_password(
    postgres: Path,
    data_dir: Path,
    password_file: Path,
    owner: tuple[int, int] | None,
    creds: dict[str, Any],
) -> str:
    """Make the stopped cluster in `data_dir` require the password; return it.

    Nothing to do when the password file exists and pg_hba.conf is ours. Otherwise (a new
    cluster, one made with trust, or a lost password file) the password is (re)set first and
    pg_hba.conf written after it: a crash in between only repeats the steps on the next start.
    """
    password = load_password(password_file)
    if password and hba_is_ours(data_dir):
        return password
    if not password:
        password = _create_password(password_file)
    _set_password(postgres, data_dir, password, creds)
    write_hba(data_dir, owner)
    return password

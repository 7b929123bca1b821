"""Every setting is documented: each field of `Settings` has its `ORDO_…` variable in the README's
Configuration table (a tenant's pass, 2026-12-06, found fourteen missing, `ORDO_ADMIN_KEY` among
them), and the table names no variable the settings do not read."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from ordo.infra.settings import Settings

README = Path(__file__).resolve().parent.parent / "README.md"


def _table() -> set[str]:
    text = README.read_text()
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `ORDO_")]
    return {name for row in rows for name in re.findall(r"`(ORDO_[A-Z0-9_]+)`", row.split(" | ")[0])}


def test_every_setting_is_in_the_configuration_table() -> None:
    variables = {f"ORDO_{f.name.upper()}" for f in fields(Settings)}
    table = _table()
    assert sorted(variables - table) == [], "settings missing from the README's table"
    # Read outside Settings: by `ordo up`'s embedded servers, and by the logging set-up.
    assert sorted(table - variables - {"ORDO_NATS_SERVER", "ORDO_PG_BIN_DIR", "ORDO_LOG_LEVEL"}) == []

"""Acceptance 4: Schemathesis against /openapi.json — zero 5xx, zero response-schema violations.

Bounded (a few examples per operation) so it runs in minutes; the SSE streams are excluded (an
endless body) and so are the destructive worker-kill and process-scale operations. Unexpected errors
are not hidden: the app answers them 500 (problem+json) and logs them, which this run would flag.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from tests.conftest import System

MAX_EXAMPLES = int(os.environ.get("ORDO_FUZZ_EXAMPLES", "15"))


async def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    gateway_only: System, tmp_path: Path
) -> None:
    st = Path(sys.executable).parent / "st"
    proc = await asyncio.create_subprocess_exec(
        str(st), "run", f"{gateway_only.base_url}/openapi.json",
        "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
        "response_schema_conformance,response_headers_conformance",
        "--max-examples", str(MAX_EXAMPLES),
        "--exclude-path-regex", r"(/stream$|:kill$|:scale$)",
        "--phases", "examples,coverage,fuzzing",
        "--request-timeout", "20",
        "--seed", "1",
        "--generation-database", "none",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 600)
    report = out.decode(errors="replace")
    (tmp_path / "schemathesis.txt").write_text(report)
    assert proc.returncode == 0, report[-6000:]

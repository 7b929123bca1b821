"""Every endpoint and dependency of the gateway is a coroutine function: FastAPI runs a plain `def`
in its thread pool, a thread hop (and a wake-up of another thread) on every request that uses it.
Under W2 three sync dependencies cost the gateway about a sixth of its CPU (docs/benchmarks.md)."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from ordo.gateway.app import create_app
from ordo.infra.settings import Settings


def _calls(dependant: Dependant, path: str) -> Iterator[tuple[str, Any]]:
    if dependant.call is not None:
        yield path, dependant.call
    for sub in dependant.dependencies:
        yield from _calls(sub, f"{path} <- {getattr(sub.call, '__name__', sub.call)}")


def _api_routes(routes: list[Any]) -> Iterator[APIRoute]:
    """The API routes, also those of included routers (FastAPI keeps an included router whole)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):
            yield from _api_routes(route.original_router.routes)
        elif hasattr(route, "routes"):
            yield from _api_routes(route.routes)


def test_no_endpoint_or_dependency_runs_in_the_thread_pool() -> None:
    app = create_app(Settings(nats_url="nats://127.0.0.1:1", database_url="postgresql://unused"))
    routes = list(_api_routes(app.routes))
    assert len(routes) > 20  # the whole API, not an empty app
    sync = [
        path
        for route in routes
        for path, call in _calls(route.dependant, f"{sorted(route.methods or ())} {route.path}")
        if not (inspect.iscoroutinefunction(call) or inspect.isasyncgenfunction(call))
    ]
    assert sync == []

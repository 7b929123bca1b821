"""Ordo: an event-sourced distributed task scheduler on NATS JetStream.

The public API for task code and for services that submit tasks::

    from ordo import Registry, TaskContext, Retry, Fail

    registry = Registry()

    @registry.task("emails.send")
    async def send(ctx: TaskContext) -> dict[str, str]:
        ...

    # ordo up --app myapp.tasks:registry     (or: ordo worker --app myapp.tasks:registry)

    from ordo import Client
    with Client("http://127.0.0.1:8000", api_key=key) as ordo:
        task = ordo.wait(ordo.submit("emails.send", {"to": "a@example.com"}).id)

The internal packages (``ordo.domain``, ``ordo.infra``, ``ordo.projections``, ``ordo.gateway``,
``ordo.workers``, ``ordo.ui``) live in the repository's top-level folders of the same names and are
installed under this namespace (pyproject.toml maps each folder), so nothing of Ordo's takes a
generic top-level name in a user's environment. Names are imported on first use, so importing one
internal module does not load the client or the worker runtime.
"""

from __future__ import annotations

import importlib
from pathlib import Path as _Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ordo.client import AsyncClient, Client
    from ordo.client_types import (
        Conflict,
        InvalidRequest,
        NotFound,
        OrdoError,
        RateLimited,
        Submitted,
        Task,
        TaskEvent,
        Unauthorized,
        Unavailable,
        WaitTimeout,
    )
    from ordo.workers.context import TaskContext
    from ordo.workers.handlers import Fail, InvalidPayload, Registry, Retry

# In a source checkout the internal packages sit beside this folder, not inside it: let
# `ordo.domain` etc. resolve there too (installed, pyproject.toml's mapping puts them inside).
_checkout = _Path(__file__).resolve().parent.parent
if (_checkout / "pyproject.toml").is_file() and (_checkout / "domain" / "__init__.py").is_file():
    __path__.append(str(_checkout))

_EXPORTS = {
    "Registry": "ordo.workers.handlers",
    "Retry": "ordo.workers.handlers",
    "Fail": "ordo.workers.handlers",
    "InvalidPayload": "ordo.workers.handlers",
    "TaskContext": "ordo.workers.context",
    "Client": "ordo.client",
    "AsyncClient": "ordo.client",
    "Task": "ordo.client_types",
    "TaskEvent": "ordo.client_types",
    "Submitted": "ordo.client_types",
    "OrdoError": "ordo.client_types",
    "InvalidRequest": "ordo.client_types",
    "Unauthorized": "ordo.client_types",
    "NotFound": "ordo.client_types",
    "Conflict": "ordo.client_types",
    "RateLimited": "ordo.client_types",
    "Unavailable": "ordo.client_types",
    "WaitTimeout": "ordo.client_types",
}

__all__ = [
    "AsyncClient",
    "Client",
    "Conflict",
    "Fail",
    "InvalidPayload",
    "InvalidRequest",
    "NotFound",
    "OrdoError",
    "RateLimited",
    "Registry",
    "Retry",
    "Submitted",
    "Task",
    "TaskContext",
    "TaskEvent",
    "Unauthorized",
    "Unavailable",
    "WaitTimeout",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ordo' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value

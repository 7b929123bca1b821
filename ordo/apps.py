"""Load a user's handlers by import path: `ordo worker --app myapp.tasks:registry` (or ORDO_APP).

The path is `module:attribute`, where the attribute is a `Registry`; `module` alone means its
attribute `registry`. A module that cannot be imported, or whose import raises, stops the command
with a message saying which (and where), not a traceback. The current directory is importable, as
with uvicorn and celery, so `--app` works from a project folder without installing it.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback

from ordo.workers.handlers import Registry


class AppError(Exception):
    """The --app path does not name an importable Registry; the message says why."""


def load_registry(path: str) -> Registry:
    """The Registry named by `module:attribute` (attribute default: `registry`)."""
    module_name, _, attribute = path.strip().partition(":")
    attribute = attribute or "registry"
    if not module_name or not all(part.isidentifier() for part in module_name.split(".")):
        raise AppError(f"--app {path!r}: expected 'package.module:registry'")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AppError(f"--app {path!r}: cannot import {module_name!r}: {exc}") from exc
    except Exception as exc:  # the module's own code failed (a handler refused at registration, ...)
        frames = traceback.extract_tb(exc.__traceback__)
        where = f" ({frames[-1].filename}, line {frames[-1].lineno})" if frames else ""
        raise AppError(
            f"--app {path!r}: importing {module_name!r} raised {type(exc).__name__}: {exc}{where}"
        ) from exc
    target: object = module
    for name in attribute.split("."):
        if not hasattr(target, name):
            raise AppError(f"--app {path!r}: module {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, name)
    if not isinstance(target, Registry):
        raise AppError(f"--app {path!r}: {attribute!r} is a {type(target).__name__}, not an ordo.Registry")
    if not len(target):
        raise AppError(f"--app {path!r}: the registry has no handlers")
    return target


def demo_registry() -> Registry:
    """The demo handlers `ordo up` runs when no --app is given."""
    from ordo.workers.demo import registry

    return registry

"""Ordo: an event-sourced distributed task scheduler on NATS JetStream.

The internal packages (``ordo.domain``, ``ordo.infra``, ``ordo.projections``, ``ordo.gateway``,
``ordo.workers``, ``ordo.ui``) live in the repository's top-level folders of the same names and are
installed under this namespace (pyproject.toml maps each folder), so nothing of Ordo's takes a
generic top-level name in a user's environment.
"""

from __future__ import annotations

from pathlib import Path as _Path

# In a source checkout the internal packages sit beside this folder, not inside it: let
# `ordo.domain` etc. resolve there too (installed, pyproject.toml's mapping puts them inside).
_checkout = _Path(__file__).resolve().parent.parent
if (_checkout / "pyproject.toml").is_file() and (_checkout / "domain" / "__init__.py").is_file():
    __path__.append(str(_checkout))

"""The JSON API, ``/api/v1`` (contract: ``shared/API.md``; schema: ``/api/v1/openapi.json``).

Modules: :mod:`.auth` (bearer tokens), :mod:`.errors` (JSON errors), :mod:`.requests` (bodies),
:mod:`.schemas` (pydantic models), :mod:`.serialize` (rows → JSON), :mod:`.paging` (cursors),
and the views in :mod:`.jobs`, :mod:`.images`, :mod:`.galleries`, :mod:`.thumbnails` and
:mod:`.openapi`.
"""

from __future__ import annotations

from kseg.web.api import (  # the views register on bp
    exports,
    galleries,
    images,
    jobs,
    openapi,
    thumbnails,
    webhooks,
)
from kseg.web.api.blueprint import bp

__all__ = ["bp", "exports", "galleries", "images", "jobs", "openapi", "thumbnails", "webhooks"]

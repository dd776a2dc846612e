"""The API test client every ``test_api_*`` module uses: a real app on each backend
(SQLite + the filesystem broker, PostgreSQL + Redis). A module that needs a fresh database per
test defines its own ``api``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.service.test_api_common import BACKENDS, Api, make_api


@pytest.fixture(params=BACKENDS)
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Api:
    return make_api(request, tmp_path, request.param)

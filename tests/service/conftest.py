"""The API test client every ``test_api_*`` module uses: a real app on each backend
(SQLite + the filesystem broker, PostgreSQL + Redis). A module that needs a fresh database per
test defines its own ``api``. The pages' modules share ``pages`` (a browser-like test client
on each backend) and ``signed_in`` (the same, signed in)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.service.test_api_common import BACKENDS, Api, make_api
from tests.service.test_pages import Pages


@pytest.fixture(params=BACKENDS)
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Api:
    return make_api(request, tmp_path, request.param)


@pytest.fixture(params=BACKENDS)
def pages(request: pytest.FixtureRequest, tmp_path: Path) -> Pages:
    return Pages(make_api(request, tmp_path, request.param))


@pytest.fixture
def signed_in(pages: Pages) -> Pages:
    response = pages.sign_in()
    assert response.status_code == 302, response.get_data(as_text=True)
    return pages

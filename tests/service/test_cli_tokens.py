"""``kseg token list`` and ``kseg token revoke``: the real command against a real database
(PostgreSQL and SQLite), checked through the API it guards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kseg.shared.store.auth import get_or_create_owner, hash_token, use_token
from kseg.shared.store.db import session_scope
from kseg.shared.store.models import ApiToken
from tests.conftest import free_port
from tests.service.test_api_common import BACKENDS, Api, assert_error, make_api

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=BACKENDS)
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Api:
    return make_api(request, tmp_path, request.param, fresh_db=True)


def kseg(api: Api, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kseg.shared.cli", *args],
        env=api.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def rows(listing: str) -> list[dict[str, str]]:
    """The table ``kseg token list`` prints, as dicts (labels here have no spaces)."""
    lines = listing.splitlines()
    assert lines[0].split()[:3] == ["ID", "OWNER", "LABEL"], listing
    out = []
    for line in lines[1:]:
        cells = line.split()
        kind = "sign-in link" if cells[3:5] == ["sign-in", "link"] else cells[3]
        rest = cells[5:] if kind == "sign-in link" else cells[4:]
        out.append(
            {"id": cells[0], "owner": cells[1], "label": cells[2], "kind": kind, "status": rest[-1]}
        )
    return out


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout


def test_list_shows_every_live_token_but_never_a_token_or_its_hash(api: Api) -> None:
    secrets = [
        api.new_token("alice", "laptop"),
        api.new_token("alice", "ci"),
        api.new_token("bob", "cli"),
    ]
    out = ok(kseg(api, "token", "list"))
    listed = rows(out)
    assert {(r["owner"], r["label"]) for r in listed} >= {
        ("alice", "laptop"),
        ("alice", "ci"),
        ("bob", "cli"),
    }
    assert len(listed) == 4  # and the fixture's own owner's token
    assert all(r["status"] == "active" and r["kind"] == "token" for r in listed)
    for secret in [*secrets, api.token]:
        assert secret not in out and hash_token(secret) not in out
    alice = rows(ok(kseg(api, "token", "list", "alice")))
    assert sorted(r["label"] for r in alice) == ["ci", "laptop"]


def test_revoke_by_listed_id_refuses_that_token_at_once_and_only_it(api: Api) -> None:
    victim, kept = api.new_token("alice", "leaked"), api.new_token("alice", "kept")
    assert api.get("/api/v1/jobs", token=victim).status_code == 200
    (row,) = [r for r in rows(ok(kseg(api, "token", "list", "alice"))) if r["label"] == "leaked"]

    out = ok(kseg(api, "token", "revoke", row["id"]))
    assert "revoked token" in out and "'alice'" in out and "'leaked'" in out

    assert_error(api.get("/api/v1/jobs", token=victim), 401, "invalid_token")
    assert api.get("/api/v1/jobs", token=kept).status_code == 200
    assert [r["label"] for r in rows(ok(kseg(api, "token", "list", "alice")))] == ["kept"]
    every = {r["label"]: r["status"] for r in rows(ok(kseg(api, "token", "list", "--all")))}
    assert every["leaked"] == "revoked" and every["kept"] == "active"
    # Revoking again changes nothing and says so.
    assert "already revoked" in ok(kseg(api, "token", "revoke", row["id"]))
    assert_error(api.get("/api/v1/jobs", token=victim), 401, "invalid_token")


def test_revoke_by_the_token_itself(api: Api) -> None:
    leaked = api.new_token("carol", "pasted-somewhere")
    assert api.get("/api/v1/jobs", token=leaked).status_code == 200
    out = ok(kseg(api, "token", "revoke", leaked))
    assert "'pasted-somewhere'" in out and leaked not in out
    assert_error(api.get("/api/v1/jobs", token=leaked), 401, "invalid_token")
    assert api.get("/api/v1/jobs").status_code == 200  # the fixture owner's token still works


def test_revoke_refuses_unknown_short_and_ambiguous_ids_with_a_hint(api: Api) -> None:
    with session_scope(api.settings.database_url) as session:
        owner = get_or_create_owner(session, "dave")
        for n, secret in enumerate(("kseg_one", "kseg_two"), start=1):
            session.add(
                ApiToken(
                    id=f"abcd000{n}-0000-4000-8000-000000000000",
                    owner_id=owner.id,
                    name=f"t{n}",
                    token_hash=hash_token(secret),
                )
            )
    cases = {
        "ffffffff": "no token matches 'ffffffff'",
        "kseg_not-a-token": "no token matches",
        "ab": "at least its first 4 characters",
        "abcd": "matches several tokens",
    }
    for ident, message in cases.items():
        done = kseg(api, "token", "revoke", ident)
        assert done.returncode == 1, (ident, done.stdout)
        assert done.stderr.startswith("kseg: error: ") and message in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    # Nothing was revoked by the refused calls; a longer prefix picks one.
    assert {r["label"] for r in rows(ok(kseg(api, "token", "list", "dave")))} == {"t1", "t2"}
    ok(kseg(api, "token", "revoke", "abcd0002"))
    assert [r["label"] for r in rows(ok(kseg(api, "token", "list", "dave")))] == ["t1"]


def test_a_spent_sign_in_link_is_listed_as_used_and_an_unused_one_can_be_revoked(
    api: Api,
) -> None:
    spent, unused = (
        api.new_token("erin", "link-a", one_time=True),
        api.new_token("erin", "link-b", one_time=True),
    )
    with session_scope(api.settings.database_url) as session:
        assert use_token(session, spent)[0] is not None
    live = rows(ok(kseg(api, "token", "list", "erin")))
    assert [(r["label"], r["kind"], r["status"]) for r in live] == [
        ("link-b", "sign-in link", "active")
    ]
    ok(kseg(api, "token", "revoke", live[0]["id"]))
    every = {r["label"]: r["status"] for r in rows(ok(kseg(api, "token", "list", "erin", "--all")))}
    assert every == {"link-a": "used", "link-b": "revoked"}
    with session_scope(api.settings.database_url) as session:
        assert use_token(session, unused)[0] is None  # a revoked link signs nobody in


def test_list_without_tokens_says_how_to_make_one(api: Api) -> None:
    done = kseg(api, "token", "list", "nobody")
    assert ok(done) == ""
    assert "kseg token create NAME" in done.stderr


def test_a_revoked_kseg_api_token_stays_revoked(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Revocation wins over the environment: neither the API nor ``kseg up`` brings it back."""
    env_token = "kseg_" + "e" * 43
    api = make_api(request, tmp_path, "sqlite", KSEG_API_TOKEN=env_token)
    assert api.get("/api/v1/jobs", token=env_token).status_code == 200  # registered on use
    ok(kseg(api, "token", "revoke", env_token))

    # A new app (a restart) on the same database registers the environment's token again.
    from kseg.web import create_app

    app = create_app({"TESTING": True}, settings=api.settings)
    assert_error(
        app.test_client().get("/api/v1/jobs", headers={"Authorization": f"Bearer {env_token}"}),
        401,
        "invalid_token",
    )

    env = {**api.env, "KSEG_PORT": str(free_port())}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kseg.shared.cli", "up"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:  # it started the service after all: Ctrl-C stops all of it
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
    assert proc.returncode == 1, (out, err)
    assert "KSEG_API_TOKEN" in err and "revoked" in err and "Traceback" not in err, err
    assert "kseg is running" not in out and "API token" not in out

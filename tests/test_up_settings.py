"""Where `kseg up` sends the access log, and where `kseg submit` looks for the service: pure
settings, no processes (tests/service/test_cli_up.py runs the real thing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kseg.shared.cli.up import _up_env
from kseg.shared.settings import access_log_setting
from tests.conftest import settings_from


@pytest.mark.parametrize(
    ("raw", "meaning"),
    [
        (None, None),
        ("", None),
        ("1", None),
        ("on", None),
        ("0", False),
        ("off", False),
        ("stdout", "stdout"),
        ("STDOUT", "stdout"),
        ("/var/log/kseg/access.log", "/var/log/kseg/access.log"),
    ],
)
def test_kseg_access_log_values(raw: str | None, meaning: object) -> None:
    assert access_log_setting(raw) == meaning


def test_up_puts_the_access_log_under_instance_unless_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_from({"KSEG_INSTANCE_DIR": str(tmp_path / "instance")})
    monkeypatch.delenv("KSEG_ACCESS_LOG", raising=False)
    env, said = _up_env(settings, None)
    assert env["KSEG_ACCESS_LOG"] == str(tmp_path / "instance" / "access.log")
    assert settings_from(env).access_log_file == tmp_path / "instance" / "access.log"

    monkeypatch.setenv("KSEG_ACCESS_LOG", "1")  # on: where the command puts it
    assert _up_env(settings, None)[0]["KSEG_ACCESS_LOG"] == env["KSEG_ACCESS_LOG"]
    monkeypatch.setenv("KSEG_ACCESS_LOG", "stdout")
    env, said = _up_env(settings, None)
    assert (env["KSEG_ACCESS_LOG"], said) == ("stdout", "stdout")
    assert settings_from(env).access_log and settings_from(env).access_log_file is None
    env, said = _up_env(settings, "off")  # the flag wins over the environment
    assert (env["KSEG_ACCESS_LOG"], said) == ("0", "off")
    assert not settings_from(env).access_log
    env, _ = _up_env(settings, str(tmp_path / "elsewhere.log"))
    assert settings_from(env).access_log_file == tmp_path / "elsewhere.log"


def test_submit_finds_the_service_kseg_up_saved(tmp_path: Path) -> None:
    instance = tmp_path / "instance"
    base = {"KSEG_INSTANCE_DIR": str(instance)}
    assert settings_from(base).service_url() == "http://127.0.0.1:8000"
    instance.mkdir()
    (instance / "api_url").write_text("http://127.0.0.1:8123\n")
    assert settings_from(base).service_url() == "http://127.0.0.1:8123"
    # Named otherwise: the environment wins over the file.
    assert settings_from({**base, "KSEG_PORT": "9000"}).service_url() == "http://127.0.0.1:9000"
    assert settings_from({**base, "KSEG_HOST": "0.0.0.0"}).service_url() == (
        "http://127.0.0.1:8000"
    )
    assert settings_from({**base, "KSEG_URL": "https://kseg.example/"}).service_url() == (
        "https://kseg.example"
    )

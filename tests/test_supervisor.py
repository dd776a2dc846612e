"""`kseg up`'s restart policy (``shared.cli.Backoff``), without processes, and the
supervisor's give-up path on a child that exits at once."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

from kseg.shared.cli import up as cli
from kseg.shared.cli.up import (
    GIVE_UP_CRASHES,
    GIVE_UP_WINDOW,
    RESTART_MAX_DELAY,
    RESTART_STABLE_AFTER,
    Backoff,
    Supervisor,
    describe_exit,
)
from tests.conftest import wait_for
from tests.service.test_cli_up import _alive


def test_delays_double_from_one_second() -> None:
    backoff = Backoff()
    delays = [backoff.crashed(up_for=0.5, now=t) for t in (0.0, 1.0, 3.0, 7.0)]
    assert delays == [1.0, 2.0, 4.0, 8.0]


def test_the_fifth_crash_within_the_window_gives_up() -> None:
    backoff = Backoff()
    now = 0.0
    for _ in range(GIVE_UP_CRASHES - 1):
        assert backoff.crashed(up_for=1.0, now=now) is not None
        now += 10.0
    assert now < GIVE_UP_WINDOW
    assert backoff.crashed(up_for=1.0, now=now) is None
    assert len(backoff.crashes) == GIVE_UP_CRASHES


def test_crashes_older_than_the_window_are_forgotten() -> None:
    backoff = Backoff()
    # A crash every 40 s: never GIVE_UP_CRASHES within GIVE_UP_WINDOW.
    for i in range(20):
        assert backoff.crashed(up_for=39.0, now=i * 40.0) is not None
    assert len(backoff.crashes) <= GIVE_UP_WINDOW / 40.0


def test_the_delay_is_capped() -> None:
    backoff = Backoff()
    delays = [backoff.crashed(up_for=1.0, now=i * 100.0) for i in range(10)]
    assert max(delays) == RESTART_MAX_DELAY  # type: ignore[type-var]
    assert delays[-1] == RESTART_MAX_DELAY


def test_a_stable_run_resets_the_delay() -> None:
    backoff = Backoff()
    assert backoff.crashed(up_for=1.0, now=0.0) == 1.0
    assert backoff.crashed(up_for=1.0, now=2.0) == 2.0
    assert backoff.crashed(up_for=RESTART_STABLE_AFTER, now=70.0) == 1.0
    assert backoff.crashed(up_for=1.0, now=72.0) == 2.0


def test_describe_exit_names_the_signal() -> None:
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
    assert describe_exit(-signal.SIGSEGV) == "killed by SIGSEGV"
    assert describe_exit(3) == "status 3"
    assert describe_exit(0) == "status 0"


def test_supervisor_restarts_then_gives_up(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A child that exits at once: restarted with the same argv, then given up on."""
    monkeypatch.setattr(cli, "RESTART_FIRST_DELAY", 0.0)
    supervisor = Supervisor()
    supervisor.start("beat", [sys.executable, "-c", "raise SystemExit(3)"])
    try:
        gave_up = None
        for _ in range(200):
            supervisor.children["beat"].wait(10)
            gave_up = supervisor.check()
            if gave_up:
                break
        assert gave_up == "beat"
    finally:
        supervisor.stop(grace=1)
    err = capsys.readouterr().err
    assert err.count("kseg: started beat (pid ") == GIVE_UP_CRASHES
    assert "kseg: beat exited (status 3); restarting in 0 s (crash 1 of 5)" in err
    assert f"(crash {GIVE_UP_CRASHES - 1} of {GIVE_UP_CRASHES})" in err
    assert f"kseg: error: beat exited {GIVE_UP_CRASHES} times within" in err
    assert "CELERY_BROKER_URL" in err and "kseg beat" in err


def test_a_child_that_exits_takes_its_process_group_along(tmp_path: Path) -> None:
    """What a SIGKILLed worker leaves: pool processes in its group. They must not run beside
    the next worker's pool."""
    pidfile = tmp_path / "pid"
    supervisor = Supervisor()
    supervisor.start("worker", ["sh", "-c", f"sleep 60 & echo $! > {pidfile}; exit 3"])
    try:
        supervisor.children["worker"].wait(10)
        straggler = int(pidfile.read_text())
        assert _alive(straggler)
        assert supervisor.check() is None
        assert "worker" in supervisor.restart_at
        wait_for(lambda: not _alive(straggler), 5, what="the old group to go")
    finally:
        supervisor.stop(grace=1)

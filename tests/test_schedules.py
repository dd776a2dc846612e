"""Cron parsing, the next slot and the human description (no database needed)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kseg.shared.errors import InvalidParameterError
from kseg.shared.store.schedules import describe, next_slot, parse_timezone, validate_cron


@pytest.mark.parametrize("bad", ["61 * * * *", "* * * *", "hello", "* * * * * *", ""])
def test_bad_cron_is_refused(bad: str) -> None:
    with pytest.raises(InvalidParameterError, match="cron"):
        validate_cron(bad)


def test_cron_that_never_matches_is_refused() -> None:
    with pytest.raises(InvalidParameterError, match="never matches"):
        next_slot("0 0 30 2 *", "UTC", datetime(2026, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize("bad", ["Mars/Base", "", "UTC+25"])
def test_bad_timezone_is_refused(bad: str) -> None:
    with pytest.raises(InvalidParameterError, match="timezone"):
        parse_timezone(bad)


def test_next_slot_is_strictly_after_and_in_utc() -> None:
    at = datetime(2026, 6, 1, 3, 0, tzinfo=UTC)
    assert next_slot("0 3 * * *", "UTC", at) == datetime(2026, 6, 2, 3, 0, tzinfo=UTC)
    # 03:00 in Berlin in summer is 01:00 UTC.
    assert next_slot("0 3 * * *", "Europe/Berlin", at) == datetime(2026, 6, 2, 1, 0, tzinfo=UTC)


def test_description_reads_like_a_sentence() -> None:
    text = describe("0 3 * * *", "Europe/Berlin", datetime(2026, 11, 26, 2, 0, tzinfo=UTC))
    assert text == "every day at 03:00 (Europe/Berlin), next: 2026-11-26 03:00 CET"
    assert describe("*/5 * * * *", "UTC").startswith("every 5 minutes")

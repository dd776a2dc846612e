"""Cron schedules read in an IANA time zone: validation, the next slot, a human description.

The DST rule (documented in the README): a cron expression is matched against the *local
wall clock* of the schedule's time zone.

* A local time skipped by the spring-forward change (02:30 on the last Sunday of March in
  Europe/Berlin) still runs that day, shifted forward by the gap: at 03:30 CEST, the same
  instant as "02:30 CET". No day is left out.
* A local time that happens twice in the fall-back change (02:30 on the last Sunday of
  October) runs once, at its first occurrence (02:30 CEST). No day runs twice.

Sub-daily schedules follow the same rule per slot, so ``*/5 * * * *`` runs every five local
minutes: the repeated hour in autumn runs once, not twice.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

from kseg.shared.errors import InvalidParameterError


def parse_timezone(name: str) -> ZoneInfo:
    """An IANA zone, or :class:`InvalidParameterError` saying what is wrong."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidParameterError("timezone: give an IANA time zone such as UTC or Europe/Berlin")
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise InvalidParameterError(
            f"timezone: {name!r} is not an IANA time zone (e.g. UTC, Europe/Berlin)"
        ) from None


def validate_cron(expression: str) -> str:
    """A normalised five-field cron expression, or :class:`InvalidParameterError`."""
    text = " ".join(str(expression or "").split())
    if len(text.split(" ")) != 5 or not croniter.is_valid(text):
        raise InvalidParameterError(
            f"cron: {expression!r} is not a five-field cron expression "
            "(minute hour day-of-month month day-of-week, e.g. '0 3 * * *')"
        )
    return text


def next_slot(expression: str, timezone: str, after: datetime) -> datetime:
    """The first slot strictly after ``after`` (aware), as an aware UTC datetime.

    Slots are matched on the local wall clock of ``timezone``; see the module docstring for
    what happens around daylight-saving changes.
    """
    zone = parse_timezone(timezone)
    after_utc = after.astimezone(UTC)
    # Start one hour early on the naive local clock: around a fall-back change the local
    # reading of ``after`` can repeat, and an early start never misses a slot. Slots at or
    # before ``after`` are skipped below.
    local = after_utc.astimezone(zone).replace(tzinfo=None) - timedelta(hours=1)
    it = croniter(expression, local)
    previous: datetime | None = None
    for _ in range(100_000):
        try:
            naive = it.get_next(datetime)
        except CroniterBadDateError:
            break
        # fold=0: a repeated local time means its first occurrence; a skipped one is read
        # with the offset before the change, i.e. shifted forward by the gap.
        instant = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
        if instant > after_utc and (previous is None or instant > previous):
            return instant
        previous = instant if previous is None else max(previous, instant)
    raise InvalidParameterError(
        f"cron: {expression!r} never matches a date (e.g. 30 February); check day and month"
    )


def describe(expression: str, timezone: str, next_run_at: datetime | None = None) -> str:
    """ "every day at 03:00 Europe/Berlin, next: 2026-11-26 03:00 CET" style preview."""
    try:
        from cron_descriptor import Options, get_description

        options = Options()
        options.use_24hour_time_format = True
        options.verbose = False
        text = get_description(expression, options)
    except Exception:  # the description is a nicety; the expression was validated already
        text = f"cron '{expression}'"
    text = text[:1].lower() + text[1:]
    if text.startswith("at ") and "," not in text:
        text = "every day " + text
    text = f"{text} ({timezone})"
    if next_run_at is not None:
        local = next_run_at.astimezone(parse_timezone(timezone))
        text += f", next: {local:%Y-%m-%d %H:%M %Z}"
    return text

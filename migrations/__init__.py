"""Alembic migrations of kseg's schema (run them with `kseg migrate`)."""

"""The data layer: SQLAlchemy models, sessions, the job state machine, runs, galleries,
schedules, the dispatcher, quotas, tokens and the job runner. Imports the core, never the
broker or the web."""

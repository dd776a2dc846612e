"""The Celery application, built from the settings alone: what the worker and beat run, and
what the web publishes with. No web framework: the worker never builds the Flask app."""

from __future__ import annotations

from celery import Celery

from kseg.shared.messaging import broker, redis_broker
from kseg.shared.messaging.celery_config import celery_config
from kseg.shared.settings import Settings


def make_celery(settings: Settings) -> Celery:
    """A Celery app configured from ``settings`` (kept as its ``kseg_settings``), made the
    process's default so that ``shared_task`` tasks bind to it."""
    broker.register()  # the embedded broker's safe filesystem transport
    redis_broker.register()  # kombu's Redis transport without a new client per call
    app = Celery("kseg")
    app.config_from_object(celery_config(settings))
    app.kseg_settings = settings
    app.set_default()
    return app


def settings_of(app: Celery) -> Settings:
    """The settings ``app`` was made with."""
    settings: Settings = app.kseg_settings
    return settings


__all__ = ["make_celery", "settings_of"]

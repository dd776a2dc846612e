"""The web's Celery app, for publishing (``app.extensions["celery"]``): built from the
settings by :func:`kseg.shared.messaging.app.make_celery`, as the worker's is. The web never
runs tasks, so they need no Flask app context."""

from __future__ import annotations

from celery import Celery
from flask import Flask

from kseg.shared.messaging.app import make_celery
from kseg.shared.settings import Settings


def celery_init_app(app: Flask, settings: Settings) -> Celery:
    celery_app = make_celery(settings)
    app.extensions["celery"] = celery_app
    return celery_app

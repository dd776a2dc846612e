"""Celery bound to the Flask app, as in Flask's own Celery example (``celery_init_app``)."""

from __future__ import annotations

from celery import Celery, Task
from flask import Flask

from kseg.shared.messaging.celery_config import celery_config
from kseg.shared.settings import Settings


def celery_init_app(app: Flask, settings: Settings) -> Celery:
    from kseg.shared.messaging import broker, redis_broker

    broker.register()  # the embedded broker's safe filesystem transport
    redis_broker.register()  # kombu's Redis transport without a new client per call

    class FlaskTask(Task):  # type: ignore[misc]
        def __call__(self, *args: object, **kwargs: object) -> object:
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery("kseg", task_cls=FlaskTask)
    celery_app.config_from_object(celery_config(settings))
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    return celery_app

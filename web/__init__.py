"""kseg's web front end: the JSON API (and, later, the pages), as a Flask app factory.

``web`` enqueues work by task name and imports nothing from ``worker``.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from shared.settings import Settings, get_settings


def create_app(
    test_config: dict[str, Any] | None = None, settings: Settings | None = None
) -> Flask:
    """Build the app. ``settings`` defaults to the environment's; ``test_config`` overrides
    Flask config keys (as in Flask's tutorial)."""
    settings = settings or get_settings()
    app = Flask(__name__, instance_path=str(settings.instance_dir), instance_relative_config=True)
    app.config.from_mapping(
        SECRET_KEY=settings.secret_key or _instance_secret(settings),
        MAX_CONTENT_LENGTH=settings.max_upload_bytes,
        KSEG_SETTINGS=settings,
        JSON_SORT_KEYS=False,
    )
    if test_config:
        app.config.update(test_config)

    from web.celery_init import celery_init_app

    celery_init_app(app, settings)

    from web import db

    db.init_app(app)

    from web.api import bp as api_bp
    from web.ops import bp as ops_bp

    app.register_blueprint(api_bp)
    app.register_blueprint(ops_bp)
    return app


def _instance_secret(settings: Settings) -> str:
    """A per-installation secret kept under ``instance/`` when none is configured."""
    import secrets

    path = settings.instance_dir / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        settings.instance_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_hex(32)
        path.write_text(key)
        path.chmod(0o600)
        return key

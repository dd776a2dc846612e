"""kseg's web front end: the JSON API and the pages, as a Flask app factory.

``web`` enqueues work by task name and imports nothing from ``worker``.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from kseg.shared.settings import Settings, get_settings


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
        # The pages' session cookie: signed (SECRET_KEY), not readable by scripts, and not sent
        # on cross-site subrequests or posts.
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        # A form's CSRF token lives as long as its session, not one hour.
        WTF_CSRF_TIME_LIMIT=None,
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep the contract's field order
    if test_config:
        app.config.update(test_config)

    from kseg.web.celery_init import celery_init_app

    celery_init_app(app, settings)

    from kseg.web import db

    db.init_app(app)

    from flask_wtf.csrf import CSRFProtect

    from kseg.web import limits
    from kseg.web.api import bp as api_bp
    from kseg.web.ops import bp as ops_bp
    from kseg.web.pages import bp as pages_bp

    limits.init_app(app, settings)

    csrf = CSRFProtect(app)
    csrf.exempt(api_bp)  # bearer tokens, no cookies: nothing to forge
    app.register_blueprint(api_bp)
    app.register_blueprint(ops_bp)
    app.register_blueprint(pages_bp)

    from kseg.web import access_log

    access_log.redact_werkzeug_log()  # Flask's debug server logs request lines itself
    if settings.access_log:
        # Middleware around the whole app, so the same line comes from any WSGI server.
        access_log.init_app(app, settings.access_log_file)
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

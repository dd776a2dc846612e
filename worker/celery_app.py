"""The Celery application the worker and beat run: ``celery -A kseg.worker.celery_app worker``.

Built from the settings alone (:func:`kseg.shared.messaging.app.make_celery`): the worker and
beat import no web framework.
"""

from __future__ import annotations

from kseg.shared.core.segment import prepare_for_many_jobs
from kseg.shared.messaging.app import make_celery
from kseg.shared.settings import get_settings
from kseg.shared.store.db import NotMigratedError, ensure_migrated

try:
    ensure_migrated()
except NotMigratedError as exc:
    raise SystemExit(f"kseg: error: {exc}") from None

# Before the pool forks, so every worker process inherits it: scikit-learn's compiled Lloyd
# step already loaded (not a second's import in its first job), and freed arrays kept for the
# next job instead of being page-faulted in again (~10 % of a 1 MP job's time).
prepare_for_many_jobs(get_settings().malloc_retain_bytes)

celery_app = make_celery(get_settings())
celery = celery_app  # the name `celery -A kseg.worker.celery_app` looks for

from kseg.worker import signals, tasks  # noqa: E402,F401  registers tasks and worker hooks

"""kseg's Celery worker: runs jobs (``kseg.run_job``) and the sweeper (``kseg.sweep``)."""

from kseg.shared.core.openmp import use_passive_openmp

# Before any module of the worker imports scikit-learn, whose OpenMP runtime reads it once.
use_passive_openmp()

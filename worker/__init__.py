"""kseg's Celery worker: runs jobs (``kseg.run_job``) and the sweeper (``kseg.sweep``)."""

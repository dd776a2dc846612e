"""The broker side: Celery settings and queue names, and the kombu transports (the embedded
filesystem broker and Redis) read in class order."""

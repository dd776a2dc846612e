"""kseg's shared layer: the segmentation core, the data model and the settings.

Nothing in this package imports Flask or Celery; the web front end and the worker both build on it.
"""

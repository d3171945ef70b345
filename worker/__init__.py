"""Everything that executes: the Celery app and task, the training engine, and the catalogs."""

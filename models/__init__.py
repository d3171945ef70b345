"""The contract shared by the API and the worker: settings, the job spec, tables, queries.

Nothing here imports torch or celery, so the API stays light and the spec can be validated
anywhere.
"""

"""The `descent` CLI and a small Python client for the HTTP API."""

"""HTTP only: the app factory, routers and their schemas. Never imports torch."""

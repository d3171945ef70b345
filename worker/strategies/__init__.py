"""The implementation half of the catalogs: one registry per kind of strategy."""

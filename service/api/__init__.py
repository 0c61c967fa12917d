"""HTTP layer: thin FastAPI routes over :mod:`service.engine`."""

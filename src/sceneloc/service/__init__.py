"""The HTTP service (FastAPI): request parsing, micro-batches, the server, its client, the live view."""

"""The REST API (FastAPI): one router per resource, versioned under ``/api``."""

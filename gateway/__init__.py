"""The HTTP gateway: FastAPI routes, problem+json errors, SSE, and the UI's static files."""

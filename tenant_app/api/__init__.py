"""The JSON API under /api/v1: thin routes over tenant_app.services; errors are JSON with a stable code."""

API_V1 = "/api/v1"

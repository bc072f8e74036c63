"""Building blocks of tenant_app's authentication: each module does one job and knows nothing of FastAPI
routes. tenant_app.auth wires them into request dependencies."""

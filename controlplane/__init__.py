"""The control plane: settings, durable jobs, CLI, API, web console, roles and audit log."""

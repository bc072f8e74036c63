"""GET /metrics: the Prometheus exposition of every registry the service's parts added.

Each part (monitoring, backup, ...) keeps its collectors on a CollectorRegistry of its own and adds
it here with `add_registry` when the service starts; this module only serves them together. The
scrape reads memory only: a slow or absent Prometheus never holds anything in the service.
"""

from __future__ import annotations

import threading

from fastapi import FastAPI, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_registries: list[CollectorRegistry] = []
_lock = threading.Lock()


def add_registry(registry: CollectorRegistry) -> None:
    with _lock:
        if registry not in _registries:
            _registries.append(registry)


def remove_registry(registry: CollectorRegistry) -> None:
    with _lock:
        if registry in _registries:
            _registries.remove(registry)


def exposition() -> bytes:
    with _lock:
        registries = list(_registries)
    return b"".join(generate_latest(registry) for registry in registries)


def install(app: FastAPI) -> None:
    def metrics() -> Response:
        return Response(exposition(), media_type=CONTENT_TYPE_LATEST)

    app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)

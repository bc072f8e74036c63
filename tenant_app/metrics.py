"""Prometheus metrics of one county application, in a registry of its own (one per app instance)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "AppMetrics"]

# Buckets around the certification goal (p99 <= 50 ms) and the report goal (~1 s).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1,
                   0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass
class AppMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter("tenant_app_requests", "HTTP requests served",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("tenant_app_request_seconds", "HTTP request latency",
                                 ["method", "route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.certifications = Counter("tenant_app_certifications", "Certifications committed",
                                      registry=self.registry)
        self.refusals = Counter("tenant_app_certification_refusals", "Certifications refused",
                                ["code"], registry=self.registry)
        self.certify_batch = Histogram("tenant_app_certify_batch_size", "Certifications per writer commit",
                                       buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
                                       registry=self.registry)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

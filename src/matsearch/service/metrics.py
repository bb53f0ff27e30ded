"""Prometheus metrics: requests by route and status, request latency, and the size of each collection."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from ..errors import MatsearchError
from .registry import Registry

BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


class Metrics:
    """The metrics of one app, in a Prometheus registry of their own (two apps in a process never mix)."""

    def __init__(self, collections: Registry):
        self.registry = CollectorRegistry()
        self.requests = Counter("matsearch_requests", "HTTP requests answered", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("matsearch_request_seconds", "Time to answer an HTTP request",
                                 ["method", "route"], buckets=BUCKETS, registry=self.registry)
        self.registry.register(_CollectionSizes(collections))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """ASGI middleware timing every HTTP request, labelled by its route's template (not its path)."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [500]

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            self.metrics.observe(scope["method"], getattr(route, "path", "unmatched"), status[0],
                                 time.perf_counter() - start)


class _CollectionSizes:
    """Live items and stored rows of every collection, read when scraped."""

    def __init__(self, collections: Registry):
        self.collections = collections

    def collect(self):
        items = GaugeMetricFamily("matsearch_collection_items", "Live items in a collection", labels=["collection"])
        rows = GaugeMetricFamily("matsearch_collection_stored_rows", "Rows stored, deleted ones included",
                                 labels=["collection"])
        for name in self.collections.names():
            try:
                with self.collections.reading(name) as col:
                    count, stored = len(col), col.info()["stored_rows"]
            except MatsearchError:
                continue  # dropped meanwhile, or unreadable: /v1/collections/{name} says why
            items.add_metric([name], count)
            rows.add_metric([name], stored)
        yield items
        yield rows

"""Shared by the service tests: small vector collections behind a TestClient, and a real server on a free port."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import numpy as np
import uvicorn
from fastapi.testclient import TestClient

from matsearch.service.app import create_app

DIM = 64
KEY = "test-key-5f1c"
AUTH = {"Authorization": f"Bearer {KEY}"}


def unit_vectors(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def documents(vectors: np.ndarray, start: int = 0) -> list[dict]:
    return [{"id": f"d{start + n}", "vector": v.tolist(), "text": f"document number {start + n}",
             "metadata": {"n": start + n, "even": (start + n) % 2 == 0}} for n, v in enumerate(vectors)]


def seeded(client: TestClient, name: str = "vecs", n: int = 400, headers=None) -> np.ndarray:
    """A vectors-only collection of `n` random unit vectors (ids d0…), made through the API."""
    headers = AUTH if headers is None else headers
    assert client.post("/v1/collections", json={"name": name, "model": None, "transform": "none"},
                       headers=headers).status_code == 201
    vectors = unit_vectors(n)
    response = client.post(f"/v1/collections/{name}/documents", json={"documents": documents(vectors)},
                           headers=headers)
    assert response.json() == {"added": n}, response.text
    return vectors


@contextlib.contextmanager
def served(root, **options):
    """A TestClient over a fresh app (its lifespan run, so collections are closed at the end)."""
    with TestClient(create_app(root, **options), raise_server_exceptions=False) as client:
        yield client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def live_server(root, **options):
    """A real uvicorn server in a thread on a free loopback port; yields its URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(root, **options), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)

"""`matsearch serve` as a user runs it: a uvicorn process on a loopback port, the key from the environment."""

import os
import subprocess
import sys
import time

import httpx
from service_support import KEY, documents, free_port, unit_vectors


def wait_until_up(url: str, process) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0]
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("matsearch serve did not come up")


def test_serve_answers_a_search_and_never_logs_the_key(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MATSEARCH_API_KEY": KEY}
    server = subprocess.Popen([sys.executable, "-m", "matsearch", "serve", str(tmp_path), "--port", str(port)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until_up(url, server)
        auth = {"Authorization": f"Bearer {KEY}"}
        assert httpx.post(f"{url}/v1/collections", json={"name": "c", "model": None}).status_code == 401
        assert httpx.post(f"{url}/v1/collections", json={"name": "c", "model": None, "transform": "none"},
                          headers=auth).status_code == 201
        vectors = unit_vectors(50)
        assert httpx.post(f"{url}/v1/collections/c/documents", json={"documents": documents(vectors)},
                          headers=auth).json() == {"added": 50}
        hits = httpx.post(f"{url}/v1/collections/c/search", json={"vector": vectors[4].tolist(), "k": 3}).json()
        assert hits["results"][0]["id"] == "d4"
    finally:
        server.terminate()
        log, _ = server.communicate(timeout=30)
    assert "POST /v1/collections/c/search" in log and KEY not in log


def test_serve_refuses_several_writing_workers(tmp_path):
    refused = subprocess.run([sys.executable, "-m", "matsearch", "serve", str(tmp_path), "--workers", "2"],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "--workers 2 needs --read-only" in refused.stderr

"""Searches run beside writes and a long build: none fails or waits for the build, and every acknowledged write
is there and searchable afterwards."""

import threading
import time

import httpx
from service_support import AUTH, KEY, documents, live_server, unit_vectors

from matsearch import Collection


def test_searches_go_on_during_writes_and_a_long_build(tmp_path, monkeypatch):
    (tmp_path / "root").mkdir()
    build = Collection.build
    monkeypatch.setattr(Collection, "build", lambda self, *a, **kw: (time.sleep(1.5), build(self, *a, **kw))[1])
    base, extra = unit_vectors(1000), unit_vectors(600, seed=4)
    with live_server(tmp_path / "root", api_key=KEY) as url, httpx.Client(base_url=url, timeout=30) as http:
        http.post("/v1/collections", json={"name": "vecs", "model": None, "transform": "none"}, headers=AUTH)
        assert http.post("/v1/collections/vecs/documents", json={"documents": documents(base)},
                         headers=AUTH).status_code == 200
        stop, failures, latencies, acknowledged = threading.Event(), [], [], []

        def search(seed):
            with httpx.Client(base_url=url, timeout=30) as own:
                queries = unit_vectors(50, seed=seed)
                while not stop.is_set():
                    for query in queries:
                        start = time.perf_counter()
                        response = own.post("/v1/collections/vecs/search", json={"vector": query.tolist(), "k": 10})
                        latencies.append((start, time.perf_counter() - start))
                        if response.status_code != 200 or len(response.json()["results"]) != 10:
                            failures.append(response.text)

        def write():
            with httpx.Client(base_url=url, timeout=30) as own:
                for batch in range(12):
                    part = documents(extra[50 * batch: 50 * batch + 50], start=1000 + 50 * batch)
                    response = own.post("/v1/collections/vecs/documents", json={"documents": part}, headers=AUTH)
                    if response.status_code != 200:
                        failures.append(response.text)
                    else:
                        acknowledged.extend(d["id"] for d in part)

        readers = [threading.Thread(target=search, args=(seed,)) for seed in range(4)]
        for thread in readers:
            thread.start()
        job = http.post("/v1/collections/vecs/jobs", json={"kind": "build", "recipe": "ivf8@d32:d64"},
                        headers=AUTH).json()["job"]
        building = time.perf_counter()
        writer = threading.Thread(target=write)
        writer.start()
        writer.join()
        while http.get(f"/v1/jobs/{job}").json()["state"] != "done":
            time.sleep(0.05)
        built = time.perf_counter()
        stop.set()
        for thread in readers:
            thread.join()
        assert not failures, failures[:3]
        during = [seconds for start, seconds in latencies if building < start < built - 0.5]
        assert during and max(during) < 0.75, (len(during), max(during, default=None))  # nobody waited 1.5 s
        assert len(acknowledged) == 600
        with Collection.open(tmp_path / "root" / "vecs") as col:
            assert len(col) == 1600 and len(col.get(acknowledged)) == 600
            found = col.search(extra, k=1, plan="p8@d64:50>d64")  # in the index built meanwhile, too
            assert [row[0] for row in found.ids] == acknowledged


def test_writes_queued_behind_a_long_job_never_starve_searches(tmp_path, monkeypatch):
    """Found by review: 40-odd writes waiting on a build took every thread of the pool searches run on."""
    (tmp_path / "root").mkdir()
    build = Collection.build
    # a build long enough to outlast starting 60 writers on a loaded 2-core machine (2 s did not, once, in CI)
    monkeypatch.setattr(Collection, "build", lambda self, *a, **kw: (time.sleep(5.0), build(self, *a, **kw))[1])
    with live_server(tmp_path / "root", api_key=KEY) as url, httpx.Client(base_url=url, timeout=30) as http:
        http.post("/v1/collections", json={"name": "vecs", "model": None, "transform": "none"}, headers=AUTH)
        http.post("/v1/collections/vecs/documents", json={"documents": documents(unit_vectors(300))}, headers=AUTH)
        job = http.post("/v1/collections/vecs/jobs", json={"kind": "build", "recipe": "flat"}, headers=AUTH).json()
        extra, statuses = unit_vectors(60, seed=5), []

        def write(n):
            with httpx.Client(base_url=url, timeout=30) as own:
                part = documents(extra[n : n + 1], start=1000 + n)
                statuses.append(own.post("/v1/collections/vecs/documents", json={"documents": part},
                                         headers=AUTH).status_code)

        writers = [threading.Thread(target=write, args=(n,)) for n in range(60)]
        for thread in writers:
            thread.start()
        time.sleep(0.5)  # every write is in, waiting on the build
        start = time.perf_counter()
        found = http.post("/v1/collections/vecs/search", json={"vector": unit_vectors(1)[0].tolist(), "k": 5})
        waited = time.perf_counter() - start
        running = http.get(f"/v1/jobs/{job['job']}").json()["state"]
        for thread in writers:
            thread.join()
        assert found.status_code == 200 and running == "running" and waited < 1.0, (found.status_code, running, waited)
        assert statuses == [200] * 60


def test_a_slow_first_open_holds_up_only_its_own_collection(tmp_path, monkeypatch):
    from matsearch.service.registry import Registry

    for name in ("slow", "quick"):
        with Collection.create(tmp_path / name, model=None, transform="none") as col:
            col.add(["a", "b"], vectors=unit_vectors(2))
    registry, opens = Registry(tmp_path), []
    opened = registry._open_collection
    monkeypatch.setattr(registry, "_open_collection",
                        lambda path: (opens.append(path.name), time.sleep(1.5 if path.name == "slow" else 0),
                                      opened(path))[-1])

    def read_slow():
        with registry.reading("slow") as col:
            assert len(col) == 2

    slow = [threading.Thread(target=read_slow) for _ in range(2)]  # the second waits for the first's open
    for thread in slow:
        thread.start()
    time.sleep(0.2)
    start = time.perf_counter()
    with registry.reading("quick") as col:
        assert len(col) == 2
    assert time.perf_counter() - start < 1.0  # not behind the other collection's open
    for thread in slow:
        thread.join()
    assert sorted(opens) == ["quick", "slow"]  # each opened once
    registry.close()

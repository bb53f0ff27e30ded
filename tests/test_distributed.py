"""Sharded collections on a local Ray instance: results equal to one collection's, writes routed, faults named."""

import json
import os

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="ray is a dependency of matsearch; install it (pip install -e .)")

from matsearch import Collection, InvalidInputError  # noqa: E402
from matsearch.distributed import ShardedCollection, ShardUnavailableError  # noqa: E402
from matsearch.distributed.layout import shard_folder  # noqa: E402

NESTING = [16, 32, 64]
RECIPE = "ivf16@d16:d64,bin32/itq+ivf8@d16"
EXHAUSTIVE = {"ivf": "p16@d64:4000>d64", "binary": "h8@b32:4000>d64"}


def kill(actor) -> None:
    """Kill a shard actor for good and wait until it is dead (ray.kill returns before it is)."""
    ray.kill(actor, no_restart=True)
    for _ in range(200):
        try:
            ray.get(actor.ping.remote(), timeout=10)
        except ray.exceptions.RayActorError:
            return
    pytest.fail(f"actor {actor} still answers after ray.kill")


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(30, 64))
    docs = (centres[rng.integers(0, 30, 3000)] + 0.6 * rng.normal(size=(3000, 64))) * np.linspace(2.0, 0.3, 64)
    queries = docs[rng.integers(0, 3000, 40)] + 0.3 * rng.normal(size=(40, 64))
    return [f"doc-{i}" for i in range(len(docs))], docs.astype(np.float32), queries.astype(np.float32)


@pytest.fixture(scope="module")
def single(data, tmp_path_factory):
    ids, docs, _ = data
    col = Collection.create(tmp_path_factory.mktemp("single") / "col", model=None, nesting=NESTING)
    col.add(ids, vectors=docs)
    yield col
    col.close()


@pytest.fixture(scope="module")
def sharded(data, tmp_path_factory):
    ids, docs, _ = data
    col = ShardedCollection.create(tmp_path_factory.mktemp("sharded") / "col", shards=3, model=None, nesting=NESTING)
    col.add(ids, vectors=docs)
    col.build(RECIPE)
    yield col
    col.close()


def test_exact_search_equals_a_single_collection(data, single, sharded):
    queries = data[2]
    for plan in (None, "d64", "d16:400>d32:50>d64"):
        ours, theirs = sharded.search(queries, k=10, plan=plan), single.search(queries, k=10, plan=plan)
        if plan != "d16:400>d32:50>d64":  # a funnel keeps 400 per shard, more than one collection's 400 in all
            np.testing.assert_array_equal(ours.ids, theirs.ids)
            np.testing.assert_allclose(ours.scores, theirs.scores, rtol=1e-5, atol=1e-6)
        assert ours.shards == 3 and not ours.partial and ours.cost.queries == len(queries)
    one = sharded.search(queries[0], k=5)
    np.testing.assert_array_equal(one.ids, single.search(queries[0], k=5).ids)


@pytest.mark.parametrize("kind", ["ivf", "binary"])
def test_indexes_at_exhaustive_settings_equal_exact_search(data, single, sharded, kind):
    queries = data[2]
    ours = sharded.search(queries, k=10, plan=EXHAUSTIVE[kind])
    np.testing.assert_array_equal(ours.ids, single.search(queries, k=10).ids)
    assert ours.cost.items_scanned == len(queries) * 3000  # every shard scanned all of its items


def test_every_shard_shares_the_transform_and_trained_parts(sharded):
    folders = [shard_folder(sharded.path, s) for s in range(3)]
    transforms = [np.load(f / "transform.npy") for f in folders]
    assert all(np.array_equal(transforms[0], t) for t in transforms[1:])
    np.testing.assert_array_equal(transforms[0], sharded.transform.matrix_)
    ivf = [np.load(f / Collection.open(f).manifest.indexes / "ivf.npz") for f in folders]
    codes = [np.load(f / Collection.open(f).manifest.indexes / "codes.npz") for f in folders]
    for name in ("centroids_16",):
        assert all(np.array_equal(ivf[0][name], other[name]) for other in ivf[1:])
    for name in ("mean", "projection", "centroids"):
        assert all(np.array_equal(codes[0][name], other[name]) for other in codes[1:])
    info = sharded.info()
    assert info["count"] == 3000 and [s["count"] for s in info["per_shard"]] == [
        len(Collection.open(f)) for f in folders]
    assert info["recipe"] == RECIPE and sum(s["count"] for s in info["per_shard"]) == 3000


def test_writes_go_to_the_shard_the_id_hashes_to(data, tmp_path):
    ids, docs, _ = data
    with ShardedCollection.create(tmp_path / "col", shards=4, model=None, transform="none") as col:
        col.add(ids[:400], vectors=docs[:400], metadata=[{"n": n} for n in range(400)])
        owners = col.shard_of(ids[:400])
        for shard in range(4):
            held = Collection.open(shard_folder(col.path, shard)).existing(ids[:400])
            assert sorted(held) == sorted(i for i, s in zip(ids[:400], owners) if s == shard)
        col.upsert(ids[:2], vectors=docs[500:502], metadata=[{"new": True}] * 2)
        assert len(col) == 400
        got = col.get(ids[:2])
        assert [r.metadata for r in got] == [{"new": True}] * 2
        np.testing.assert_allclose(got[0].vector, docs[500] / np.linalg.norm(docs[500]), rtol=1e-5, atol=1e-6)
        col.delete(ids[2:5])
        assert len(col) == 397 and col.existing(ids[:6]) == [ids[0], ids[1], ids[5]]
        col.update_metadata(ids[5], {"seen": 1}, merge=True)
        assert col.get(ids[5])[0].metadata == {"n": 5, "seen": 1}
        compacted = col.compact()
        assert (compacted["removed"], compacted["count"]) == (5, 397)  # 3 deleted, 2 upserted versions
        assert col.get(ids[5])[0].metadata == {"n": 5, "seen": 1} and len(col) == 397
        with pytest.raises(InvalidInputError, match=r"ids already in the collection: \['doc-0'\]"):
            col.add([ids[0], "fresh"], vectors=docs[:2])
        with pytest.raises(InvalidInputError, match=r"ids not in the collection: \['doc-3'\]"):
            col.delete([ids[6], ids[3]])
        assert col.existing([ids[6]]) == [ids[6]]  # nothing deleted
        with pytest.raises(InvalidInputError, match="searches in mode 'dense' only"):
            col.search(docs[0], mode="lexical")
        assert col.search(docs[5], k=1).ids[0].tolist() == [ids[5]]
        assert ids[2] not in col.search(docs[2], k=5).ids[0]  # deleted


def test_a_killed_shard_is_named_or_left_out_flagged_then_restarted(data, single, tmp_path):
    ids, docs, queries = data
    with ShardedCollection.create(tmp_path / "col", shards=3, model=None, nesting=NESTING) as col:
        col.add(ids, vectors=docs)
        expected = single.search(queries, k=10)
        kill(col.actor(1))
        with pytest.raises(ShardUnavailableError, match=r"1 of 3 shards did not answer — shard 1 \(.*shard-001\): "
                                                        r"its actor died.*partial=True") as failure:
            col.search(queries, k=10)
        assert failure.value.shards == [1]
        np.testing.assert_array_equal(col.search(queries, k=10).ids, expected.ids)  # restarted from its folder
        kill(col.actor(2))
        result = col.search(queries, k=10, partial=True)
        assert result.partial and result.missing == (2,)
        held = set(Collection.open(shard_folder(col.path, 2)).existing(ids))
        assert not held & set(result.ids.ravel())
        survivors = [[i for i in row if i not in held][:10] for row in single.search(queries, k=40).ids]
        assert result.ids.tolist() == survivors
        assert not col.search(queries, k=10, partial=True).partial
        kill(col.actor(0))  # the writer: writes fail while it is down
        with pytest.raises(ShardUnavailableError, match="shard 0"):
            col.upsert([i for i in ids if col.shard_of([i]) == [0]][:1], vectors=docs[:1])
        col.upsert([i for i in ids if col.shard_of([i]) == [0]][:1], vectors=docs[:1])


def test_with_replicas_a_dead_actor_costs_no_error(data, single, tmp_path):
    ids, docs, queries = data
    expected = single.search(queries, k=10).ids
    with ShardedCollection.create(tmp_path / "col", shards=2, replicas=2, model=None, nesting=NESTING) as col:
        col.add(ids, vectors=docs)
        kill(col.actor(0, 0))
        kill(col.actor(1, 1))
        for _ in range(4):  # each shard's replicas in turn
            np.testing.assert_array_equal(col.search(queries, k=10).ids, expected)
        pid = ray.get(col.actor(1, 0).__ray_call__.remote(lambda actor: os.getpid()))
        os.kill(pid, 9)  # a crash: Ray restarts the actor, the other replica answers meanwhile
        for _ in range(4):
            np.testing.assert_array_equal(col.search(queries, k=10).ids, expected)
        col.delete(ids[:1])  # the writer is back: writes go through
        assert ids[0] not in set(col.search(queries, k=10).ids.ravel())


def test_ingest_writes_shards_in_parallel_and_resumes_after_a_bad_row(data, single, tmp_path):
    from matsearch.data.sources import Fields, open_source
    from matsearch.distributed.ingest import ingest

    ids, docs, queries = data
    source = tmp_path / "docs.jsonl"

    def write(bad_line: int | None) -> None:
        rows = [{"_id": i, "text": f"text {i}", "year": n % 7,
                 "vector": (v[:10] if n + 1 == bad_line else v).tolist()} for n, (i, v) in enumerate(zip(ids, docs))]
        source.write_text("\n".join(json.dumps(r) for r in rows) + "\n")

    write(bad_line=2100)
    fields = Fields(vector="vector")
    with ShardedCollection.create(tmp_path / "col", shards=3, model=None, nesting=NESTING) as col:
        with pytest.raises(InvalidInputError, match=r"line 2100.*running the same ingest again resumes"):
            ingest(col, open_source(source, fields), batch_size=500)
        assert len(col) == 2000  # the four batches before the bad row's
        write(bad_line=None)
        report = ingest(col, open_source(source, fields), batch_size=500)
        assert (report.added, report.skipped, report.rows, len(col)) == (1000, 2000, 3000, 3000)
        np.testing.assert_array_equal(col.search(queries, k=10).ids, single.search(queries, k=10).ids)
        assert (col.get(["doc-7"])[0].text, col.get(["doc-7"])[0].metadata) == ("text doc-7", {"year": 0})


def test_cli_indexes_searches_and_describes_a_sharded_collection(tmp_path):
    from typer.testing import CliRunner

    from conftest import BUNDLED, shared
    from matsearch.cli import app

    runner, vectors = CliRunner(), shared("cranfield") / "corpus.minilm.f16.npy"
    plain, sharded = tmp_path / "plain", tmp_path / "sharded"
    for path, extra in ((plain, []), (sharded, ["--shards", "2", "--ray", "auto"])):
        done = runner.invoke(app, ["index", str(BUNDLED / "cranfield"), "-c", str(path), "--vectors", str(vectors),
                                   "--recipe", "ivf8@d32:d128", "--batch-size", "500", "--json", *extra])
        assert done.exit_code == 0, done.output
        assert json.loads(done.output)["count"] == 1400
    query = ["heat transfer in hypersonic boundary layers", "-k", "5", "--json", "--mode", "dense"]
    found = [json.loads(runner.invoke(app, ["search", str(path), *query]).output) for path in (plain, sharded)]
    assert [h["id"] for h in found[0]["results"]] == [h["id"] for h in found[1]["results"]]
    assert found[1]["shards"] == 2 and found[1]["missing_shards"] == [] and found[1]["overhead_ms"] >= 0
    info = json.loads(runner.invoke(app, ["info", str(sharded), "--json"]).output)
    assert info["shards"] == 2 and [s["shard"] for s in info["per_shard"]] == [0, 1]
    assert sum(s["count"] for s in info["per_shard"]) == info["count"] == 1400
    refused = runner.invoke(app, ["search", str(plain), "heat", "--partial"])
    assert refused.exit_code == 1 and "--partial is for sharded collections" in refused.output


def test_the_server_serves_a_sharded_collection(data, single, tmp_path):
    from fastapi.testclient import TestClient

    from matsearch.service.app import create_app

    ids, docs, queries = data
    with ShardedCollection.create(tmp_path / "big", shards=2, model=None, nesting=NESTING) as col:
        col.add(ids, vectors=docs)
    auth = {"Authorization": "Bearer key-4d2a"}
    with TestClient(create_app(tmp_path, api_key="key-4d2a")) as client:
        listed = client.get("/v1/collections").json()["collections"]
        assert [(c["name"], c["count"], c["shards"]) for c in listed] == [("big", 3000, 2)]
        found = client.post("/v1/collections/big/search", json={"vector": queries[0].tolist(), "k": 5}).json()
        assert [h["id"] for h in found["results"]] == single.search(queries[0], k=5).ids[0].tolist()
        added = client.post("/v1/collections/big/documents", headers=auth,
                            json={"documents": [{"id": "new-1", "vector": queries[1].tolist(), "metadata": {"a": 1}}]})
        assert added.json() == {"added": 1}, added.text
        assert client.get("/v1/collections/big/documents/new-1").json()["metadata"] == {"a": 1}
        top = client.post("/v1/collections/big/search", json={"vector": queries[1].tolist(), "k": 1}).json()
        assert top["results"][0]["id"] == "new-1"
        refused = client.post("/v1/collections/big/search", json={"vector": queries[1].tolist(), "mode": "lexical"})
        assert refused.status_code == 400 and "searches in mode 'dense' only" in refused.json()["detail"]
        assert "/" not in json.dumps(client.get("/v1/collections/big").json()["per_shard"])  # no server paths


def test_a_missing_shard_folder_is_an_error_not_an_empty_shard(data, tmp_path):
    import shutil

    ids, docs, _ = data
    with ShardedCollection.create(tmp_path / "col", shards=2, model=None, transform="none") as col:
        col.add(ids[:100], vectors=docs[:100])
    shutil.rmtree(shard_folder(tmp_path / "col", 1))
    with pytest.raises(ShardUnavailableError, match=r"shard 1 \(.*shard-001\)"):
        ShardedCollection.open(tmp_path / "col", writable=True)
    assert not shard_folder(tmp_path / "col", 1).exists()


def test_a_recall_target_is_served_by_every_shard_from_its_own_calibration(data, tmp_path):
    ids, docs, queries = data
    with ShardedCollection.create(tmp_path / "col", shards=2, model=None, nesting=NESTING) as col:
        col.add(ids, vectors=docs)
        col.build("ivf16@d16:d64")
        with pytest.raises(InvalidInputError, match="is not calibrated"):
            col.search(queries, k=10, target_recall=0.9)
        calibrations = col.tune(sample=100, timed=10)
        assert sorted(calibrations) == [0, 1] and all(c.points for c in calibrations.values())
        result = col.search(queries, k=10, target_recall=0.9)
        assert "target_recall=0.9" in result.target  # each shard chose from its own calibration
        exact = col.search(queries, k=10, plan="d64").ids
        assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(result.ids, exact)]) >= 0.85


def test_a_build_retried_after_one_that_failed_trains_again(data, tmp_path):
    ids, docs, queries = data
    with ShardedCollection.create(tmp_path / "col", shards=2, model=None, nesting=NESTING) as col:
        col.add(ids[:600], vectors=docs[:600])
        (col.path / "trained.1").mkdir()  # as a build that failed after training leaves its folder, never named
        (col.path / "trained.1" / "ivf.npz").write_bytes(b"half written")
        col.build("ivf16@d16:d64")
        assert col.manifest.trained == "trained.1" and col.info()["recipe"] == "ivf16@d16:d64"
        exact = col.search(queries, k=5, plan="d64").ids
        np.testing.assert_array_equal(col.search(queries, k=5, plan="p16@d64:600>d64").ids, exact)


def test_a_timeout_is_each_shards_from_the_start_not_from_its_turn(monkeypatch):
    import time
    from pathlib import Path

    from matsearch.distributed.pool import Pending, ShardPool

    def hung(ref, timeout=None):  # no shard answers: each wait runs out the time it is given
        time.sleep(timeout)
        raise ray.exceptions.GetTimeoutError("timed out")

    monkeypatch.setattr(ray, "get", hung)
    shards = ShardPool.__new__(ShardPool)  # no actors: the calls are never made
    shards.root, shards.shards, shards.replicas = Path("col"), 4, 1
    pending = Pending({s: ("search",) for s in range(4)}, {s: (0, None) for s in range(4)}, writers=False)
    start = time.monotonic()
    assert shards.collect(pending, partial=True, timeout=0.3) == {}
    assert time.monotonic() - start < 0.6  # was 4 × 0.3: each shard waited for in turn, with the whole timeout


def test_a_write_that_one_shard_refuses_raises_once_the_others_are_done(monkeypatch):
    from pathlib import Path

    from matsearch.distributed.pool import Pending, ShardPool

    waited = []

    def answer(ref, timeout=None):  # shard 0 refuses its part; the others commit theirs
        waited.append(ref)
        if ref == 0:
            raise ray.exceptions.RayTaskError("add", "traceback", InvalidInputError("bad metadata in shard 0"))
        return 5

    monkeypatch.setattr(ray, "get", answer)
    shards = ShardPool.__new__(ShardPool)  # no actors: the calls are never made
    shards.root, shards.shards, shards.replicas = Path("col"), 3, 1
    pending = Pending({s: ("add",) for s in range(3)}, {s: (0, s) for s in range(3)}, writers=True)
    with pytest.raises(InvalidInputError, match="bad metadata in shard 0"):
        shards.collect(pending)
    assert waited == [0, 1, 2]  # was [0]: the error came back while shards 1 and 2 were still writing


def test_l2_shards_rank_as_one_collection(data, tmp_path):
    ids, docs, queries = data
    with Collection.create(tmp_path / "one", model=None, metric="l2", nesting=NESTING) as one, \
            ShardedCollection.create(tmp_path / "col", shards=3, model=None, metric="l2", nesting=NESTING) as col:
        one.add(ids, vectors=docs)
        col.add(ids, vectors=docs)
        col.build("ivf16@d16:d64")
        expected = one.search(queries, k=10)
        for plan in (None, "p16@d64:4000>d64"):
            found = col.search(queries, k=10, plan=plan)
            np.testing.assert_array_equal(found.ids, expected.ids)
            np.testing.assert_allclose(found.scores, expected.scores, rtol=1e-4, atol=1e-3)


def test_matsearch_and_its_cli_import_without_ray():
    import subprocess
    import sys

    code = "import sys, matsearch, matsearch.cli, matsearch.service.registry; print('ray' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_a_reader_opened_before_the_first_add_follows_it(data, tmp_path):
    ids, docs, _ = data
    with ShardedCollection.create(tmp_path / "col", shards=2, model=None, transform="none") as writer, \
            ShardedCollection.open(tmp_path / "col") as reader:
        assert len(reader) == 0 and reader.existing(ids[:3]) == []
        writer.add(ids[:100], vectors=docs[:100])
        assert len(reader) == 100 and reader.search(docs[50], k=1).ids[0].tolist() == [ids[50]]
        assert reader.info()["count"] == 100 and reader.dim == 64


def test_a_reader_follows_what_the_writer_commits(data, tmp_path):
    from matsearch import CollectionError

    ids, docs, _ = data
    with ShardedCollection.create(tmp_path / "col", shards=2, model=None, transform="none") as writer:
        writer.add(ids[:500], vectors=docs[:500])
        with ShardedCollection.open(tmp_path / "col") as reader:
            assert len(reader) == 500
            writer.add(ids[500:600], vectors=docs[500:600])
            assert len(reader) == 600 and reader.search(docs[550], k=1).ids[0].tolist() == [ids[550]]
            with pytest.raises(CollectionError, match="is open read-only"):
                reader.delete(ids[:1])


def test_an_id_repeated_in_later_batches_is_added_in_source_order(data, tmp_path):
    """A shard's writer runs calls side by side: the ingest starts a batch's adds only once the batch before has
    committed, so a later row of an id replaces an earlier one (upsert), or is skipped as already there."""
    from matsearch.data.sources import Fields, open_source
    from matsearch.distributed.ingest import ingest

    ids, docs, _ = data
    rows = [{"_id": ids[n % 100], "text": f"version {n // 100}", "vector": docs[n % 100].tolist()} for n in range(500)]
    source = tmp_path / "repeats.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with ShardedCollection.create(tmp_path / "up", shards=3, model=None, nesting=NESTING) as col:
        report = ingest(col, open_source(source, Fields(vector="vector")), batch_size=100, upsert=True)
        assert len(col) == 100 and {r.text for r in col.get(ids[:100])} == {"version 4"}
        assert report.added == 500
    with ShardedCollection.create(tmp_path / "add", shards=3, model=None, nesting=NESTING) as col:
        report = ingest(col, open_source(source, Fields(vector="vector")), batch_size=100)
        assert len(col) == 100 and {r.text for r in col.get(ids[:100])} == {"version 0"}
        assert (report.added, report.skipped) == (100, 400)


def test_ingest_embeds_texts_with_ray_data_as_the_encoder_does(tmp_path):
    from matsearch import Encoder
    from matsearch.data.sources import open_source
    from matsearch.distributed.ingest import ingest

    texts = [f"a note about topic {n % 5}, number {n}" for n in range(24)]
    source = tmp_path / "notes.jsonl"
    source.write_text("".join(json.dumps({"_id": f"n{n}", "text": t}) + "\n" for n, t in enumerate(texts)))
    with ShardedCollection.create(tmp_path / "col", shards=2, transform="none") as col:
        report = ingest(col, open_source(source), batch_size=24)
        assert (report.added, len(col)) == (24, 24)
        stored = np.vstack([r.vector for r in col.get(["n3", "n17"])])
        agreement = np.sum(stored * Encoder().encode([texts[3], texts[17]]), axis=1)
        assert agreement.min() > 0.98, agreement  # int8 activations are scaled per batch: close, not equal


def _items(batches) -> tuple:
    """Every item of some batches, in order: ids, texts, metadata, vectors (None when there are none)."""
    batches = list(batches)
    vectors = [b.vectors for b in batches if b.vectors is not None]
    return ([i for b in batches for i in b.ids], [t for b in batches for t in b.texts],
            [m for b in batches for m in b.metadata], np.vstack(vectors) if vectors else None)


def _assert_same_items(ours: tuple, theirs: tuple) -> None:
    assert ours[:3] == theirs[:3]
    if theirs[3] is None:
        assert ours[3] is None
    else:
        np.testing.assert_array_equal(ours[3], theirs[3])


def _jsonl_rows(count: int) -> list[str]:
    rng = np.random.default_rng(5)
    return [json.dumps({"_id": f"r{n}", "title": f"t{n}", "text": "word " * int(rng.integers(0, 40)), "n": n,
                        "vector": rng.normal(size=4).round(3).tolist()}) for n in range(count)]


def test_a_jsonl_source_cut_at_any_byte_reads_as_the_whole_file(tmp_path):
    from matsearch.data.sources import Fields, open_source

    lines = [line.replace("word word ", "w ") for line in _jsonl_rows(9)]  # short: every cut is tried
    lines.insert(5, "")  # a blank line is no document, but counts as a line
    for name, text in (("trailing.jsonl", "\n".join(lines) + "\n"), ("none.jsonl", "\n".join(lines)),
                       ("crlf.jsonl", "\r\n".join(lines))):
        path = tmp_path / name
        path.write_bytes(text.encode())
        source = open_source(path, Fields(vector="vector"))
        whole, size = _items(source.batches(5)), path.stat().st_size
        for cut in range(size + 1):  # every cut: at a line start, inside a line, at a newline, at either end
            halves = [*source.span_batches(5, 0, cut), *source.span_batches(5, cut, size)]
            _assert_same_items(_items(halves), whole)
            assert sum(source.count_span(0, cut)) + sum(source.count_span(cut, size)) == len(lines) + 9


@pytest.mark.parametrize("trailing", [True, False])
def test_a_jsonl_source_read_in_parts_by_ray_tasks_gives_the_same_items(tmp_path, trailing):
    from matsearch.data.sources import Fields, open_source
    from matsearch.distributed import parts

    lines = _jsonl_rows(300)
    lines.insert(101, "")
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(lines) + ("\n" if trailing else ""))
    with_field, without = open_source(path, Fields(vector="vector")), open_source(path)
    plan = parts.plan(with_field, 7)
    assert len(plan) == 7 and sum(p.rows for p in plan) == 300 and plan[-1].end == path.stat().st_size
    whole = list(with_field.batches(32))
    _assert_same_items(_items(parts.read(with_field, plan, 32, readers=3)), _items(whole))
    array = np.lib.format.open_memmap(tmp_path / "vectors.npy", mode="w+", dtype=np.float16, shape=(310, 4))
    array[10:] = np.vstack([b.vectors for b in whole])
    array.flush()
    memmapped = np.load(tmp_path / "vectors.npy", mmap_mode="r")
    for given in (memmapped[10:], np.asarray(memmapped[10:])):  # a view's or an array's rows are sent to the task
        ours = _items(parts.read(without, parts.plan(without, 4), 32, given, readers=2))
        _assert_same_items(ours, _items(without.batches(32))[:3] + (np.asarray(memmapped[10:], dtype=np.float32),))
    np.save(tmp_path / "exact.npy", np.asarray(memmapped[10:]))
    ours = _items(parts.read(without, parts.plan(without, 4), 32, np.load(tmp_path / "exact.npy", mmap_mode="r"),
                             readers=2))  # a task opens a memory-mapped .npy itself
    _assert_same_items(ours, _items(without.batches(32))[:3] + (np.asarray(memmapped[10:], dtype=np.float32),))
    starts = [(b.start, b.where) for b in parts.read(with_field, plan, 1000, readers=7)]
    assert starts[2] == (plan[2].first_row, f"{path} lines {plan[2].first_line}-{plan[3].first_line - 1}")


def test_a_parquet_source_read_by_row_groups_gives_the_same_items(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from matsearch.data.sources import Fields, open_source
    from matsearch.distributed import parts

    rows = [json.loads(line) for line in _jsonl_rows(250)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "docs.parquet", row_group_size=40)
    source = open_source(tmp_path / "docs.parquet", Fields(vector="vector"))
    plan = parts.plan(source, 3)
    assert [p.groups for p in plan] == [(0, 1, 2), (3, 4, 5), (6,)] and [p.first_row for p in plan] == [0, 120, 240]
    _assert_same_items(_items(parts.read(source, plan, 25, readers=2)), _items(source.batches(25)))


def test_a_failure_in_one_part_then_a_rerun_leaves_every_row_once(data, single, tmp_path):
    from matsearch.data.sources import Fields, open_source
    from matsearch.distributed.ingest import ingest

    ids, docs, queries = data
    source, fields = tmp_path / "docs.jsonl", Fields(vector="vector")

    def write(bad_line: int | None) -> None:
        rows = [json.dumps({"_id": i, "text": f"text {i}", "vector": v.tolist()}) if n + 1 != bad_line else "{oops"
                for n, (i, v) in enumerate(zip(ids, docs))]
        source.write_text("\n".join(rows) + "\n")

    write(bad_line=2300)  # in the third of four parts
    with ShardedCollection.create(tmp_path / "col", shards=3, model=None, nesting=NESTING) as col:
        with pytest.raises(InvalidInputError, match=r"line 2300 is not valid JSON.*running the same ingest again"):
            ingest(col, open_source(source, fields), batch_size=400, parts=4, readers=2)
        assert 1500 <= len(col) < 2300
        write(bad_line=None)
        report = ingest(col, open_source(source, fields), batch_size=400, parts=4, progress=True)
        assert (report.added + report.skipped, report.rows, len(col)) == (3000, 3000, 3000)
        assert sorted(col.existing(ids)) == sorted(ids)
        np.testing.assert_array_equal(col.search(queries, k=10).ids, single.search(queries, k=10).ids)
        again = ingest(col, open_source(source, fields), batch_size=400, parts=4, upsert=True)
        assert (again.added, again.replaced, len(col)) == (3000, 3000, 3000)  # upserts by id: still once each

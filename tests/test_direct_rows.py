"""A store on disk: rows read with direct I/O (direct_rows.py, _direct.c) rank and score exactly as the
memory-mapped store does, read only the sectors that hold them, and fail as collection errors."""

import errno
import json
import logging

import numpy as np
import pytest

import matsearch.store as store_module
from matsearch import Collection, _direct
from matsearch.cli import app
from matsearch.direct_rows import DirectRows
from matsearch.errors import CollectionError, InvalidInputError


@pytest.fixture
def scattered(monkeypatch):
    """Every re-rank counts as scattered rows, so small test collections take the direct path."""
    monkeypatch.setattr(store_module, "_DENSE", 1)


def _file(tmp_path, rows, width, seed=0):
    values = np.random.default_rng(seed).standard_normal((rows, width)).astype(np.float32)
    path = tmp_path / f"block-{width}.f32"
    values.tofile(path)
    return path, values


def test_fetch_reads_each_row_in_the_sectors_that_hold_it(tmp_path):
    narrow, a = _file(tmp_path, 5000, 32)  # 128-byte rows: four to a sector
    wide, b = _file(tmp_path, 5000, 200)  # 800-byte rows: some straddle three sectors
    reader = DirectRows([narrow, wide], [32, 200])
    rows = np.array([4999, 0, 17, 17, 2500, 3, 1234])
    got = reader.gather(rows, 2)
    np.testing.assert_array_equal(got[0], a[rows])
    np.testing.assert_array_equal(got[1], b[rows])
    sector = reader.sector
    spans = [(r * w + w + sector - 1) // sector - r * w // sector for r in rows for w in (128, 800)]
    assert reader.bytes_read == sector * sum(spans)
    assert [g.shape for g in reader.gather(rows[:0], 2)] == [(0, 32), (0, 200)]
    first = reader.gather(rows[:2], 1)
    assert len(first) == 1 and np.array_equal(first[0], a[rows[:2]])


def test_threads_sharing_a_reader_from_its_first_read_get_their_own_rows(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    path, a = _file(tmp_path, 4000, 128)
    reader = DirectRows([path], [128])
    picks = [np.random.default_rng(seed).integers(0, 4000, 300) for seed in range(16)]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda rows: reader.gather(rows, 1)[0], picks))
    for rows, values in zip(picks, got):
        np.testing.assert_array_equal(values, a[rows])


def test_a_row_past_the_end_of_a_file_is_a_collection_error(tmp_path):
    path, _ = _file(tmp_path, 100, 128)
    reader = DirectRows([path], [128])
    reader.gather(np.array([99]), 1)
    with pytest.raises(CollectionError, match=rf"reading rows of {tmp_path}: .*Input/output error"):
        reader.gather(np.array([100]), 1)
    with pytest.raises(IndexError, match="row -1 out of range"):
        reader.gather(np.array([-1]), 1)


def test_fetch_refuses_arguments_that_do_not_fit(tmp_path):
    path, _ = _file(tmp_path, 10, 4)
    with open(path, "rb") as f:
        fds, widths, rows = np.array([f.fileno()], np.int64), np.array([16], np.int64), np.array([1, 2])
        with pytest.raises(ValueError, match="sector be a power of 2"):
            _direct.fetch(fds, widths, rows, [np.empty((2, 4), np.float32)], 500)
        with pytest.raises(ValueError, match="out 0 is shorter than rows"):
            _direct.fetch(fds, widths, rows, [np.empty((1, 4), np.float32)], 512)
        with pytest.raises(ValueError, match="fds, widths and outs must match"):
            _direct.fetch(fds, widths, rows, [], 512)


def test_a_file_system_without_direct_io_falls_back_to_the_page_cache(tmp_path, monkeypatch, caplog):
    path, a = _file(tmp_path, 100, 64)
    real = _direct.fetch

    def refuse_direct(fds, widths, rows, outs, sector):
        import fcntl
        import os
        if fcntl.fcntl(int(fds[0]), fcntl.F_GETFL) & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fds, widths, rows, outs, sector)

    monkeypatch.setattr(_direct, "fetch", refuse_direct)
    reader = DirectRows([path], [64])
    with caplog.at_level(logging.WARNING, logger="matsearch.direct_rows"):
        got = reader.gather(np.array([5, 7]), 1)
    np.testing.assert_array_equal(got[0], a[[5, 7]])
    assert "direct I/O is refused" in caplog.text
    np.testing.assert_array_equal(reader.gather(np.array([9]), 1)[0], a[[9]])


def _collection(path, vectors, *, metric="cosine", nesting=None, recipe="flat"):
    col = Collection.create(path, model=None, metric=metric, nesting=nesting, on_disk=True)
    col.add([f"d{i}" for i in range(len(vectors))], vectors=vectors)
    col.build(recipe)
    return col


@pytest.mark.parametrize("metric, nesting", [("cosine", None), ("ip", None), ("l2", None), ("cosine", [128, 256, 384])])
def test_direct_reads_rank_and_score_as_the_memory_map(tmp_path, scifact, scattered, metric, nesting):
    vectors = scifact[1][:2000]
    if metric == "l2":
        vectors = vectors * np.random.default_rng(1).uniform(0.5, 2, (len(vectors), 1)).astype(np.float32)
    queries = vectors[:12] + 0.05 * np.random.default_rng(2).standard_normal((12, vectors.shape[1])).astype(np.float32)
    _collection(tmp_path / "c", vectors, metric=metric, nesting=nesting, recipe="flat").close()
    direct, mapped = Collection.open(tmp_path / "c"), Collection.open(tmp_path / "c", on_disk=False)
    assert (direct.info()["store_reads"], mapped.info()["store_reads"]) == ("direct I/O", "memory map")
    for plan in ("d128:200>d256:40>d384", "d128:100>d384"):  # every stage after the first reads scattered rows
        for i in range(len(queries)):
            a, b = direct.search(queries[i], plan=plan), mapped.search(queries[i], plan=plan)
            np.testing.assert_array_equal(a.ids, b.ids)
            np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6)  # norms summed over other row counts: 1 ulp
    assert direct._store.direct.bytes_read > 0 and mapped._store.direct is None
    direct.close(), mapped.close()


def test_fast_scan_lists_on_disk_take_the_general_path(tmp_path, scifact, scattered):
    vectors = scifact[1][:2000]
    _collection(tmp_path / "c", vectors, recipe="ivf16@d64:d128/pq32x4fs").close()
    direct, mapped = Collection.open(tmp_path / "c"), Collection.open(tmp_path / "c", on_disk=False)
    plan = "p16@d128:100>d256:20>d384"  # every list: equal to exact search at 384 dims
    for query in vectors[:8]:
        a, b = direct.search(query, plan=plan), mapped.search(query, plan=plan)
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6)
    assert direct._store.direct.bytes_read > 0
    direct.close(), mapped.close()


def test_the_setting_is_kept_and_checked(tmp_path, scifact):
    _collection(tmp_path / "c", scifact[1][:500], nesting=[128, 256, 384]).close()
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["on_disk"] is True and manifest["nesting"] == [128, 256, 384]
    with Collection.open(tmp_path / "c") as col:
        assert col.info()["store_reads"] == "direct I/O"
    with pytest.raises(InvalidInputError, match="on_disk must be true, false or None, got 'yes'"):
        Collection.open(tmp_path / "c", on_disk="yes")
    with pytest.raises(InvalidInputError, match="on_disk must be true or false, got 1"):
        Collection.create(tmp_path / "d", model=None, on_disk=1)


def test_cli_index_creates_a_store_on_disk(tmp_path, scifact):
    from typer.testing import CliRunner

    vectors = scifact[1][:400]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "text": f"doc {i}"}) + "\n" for i in range(len(vectors))))
    np.save(tmp_path / "v.npy", vectors)
    runner = CliRunner()
    args = ["index", str(corpus), "--collection", str(tmp_path / "c"), "--vectors", str(tmp_path / "v.npy")]
    result = runner.invoke(app, args + ["--nesting", "128,256,384", "--on-disk", "--json"])
    assert result.exit_code == 0, result.output
    with Collection.open(tmp_path / "c") as col:
        assert col.manifest.on_disk and col.manifest.nesting == [128, 256, 384]
    result = runner.invoke(app, args + ["--nesting", "64,384"])
    assert result.exit_code != 0 and "has nesting [128, 256, 384], not [64, 384]" in result.output
    result = runner.invoke(app, ["index", str(corpus), "--collection", str(tmp_path / "e"), "--nesting", "1x"])
    assert result.exit_code != 0 and "--nesting must be comma-separated integers" in result.output

"""Ingest of real corpora: streaming jsonl/csv/tsv/parquet readers, column mapping, batches, resume, bad input."""

import gzip
import json
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import shared
from matsearch import Collection, InvalidInputError
from matsearch.collection.ingest import ingest
from matsearch.data.sources import Fields, open_source
from matsearch.matryoshka import normalize

N = 600
FORMATS = ["jsonl", "jsonl.gz", "csv", "tsv", "parquet"]


@pytest.fixture(scope="module")
def docs(scifact):
    """N SciFact documents: ids, titles, texts, metadata (int, str, list) and vectors."""
    _, vectors, _ = scifact
    rows = [json.loads(line) for line, _ in zip(open(shared("scifact") / "corpus.jsonl"), range(N))]
    return {"id": [r["_id"] for r in rows], "title": [r["title"] for r in rows],
            "text": [r["text"].replace("\t", " ").replace("\n", " ") for r in rows],
            "year": [1990 + i % 30 for i in range(N)], "lang": ["en" if i % 3 else "de" for i in range(N)],
            "tags": [[f"t{i % 5}", f"u{i % 7}"] for i in range(N)], "emb": vectors[:N]}


def write(docs, path, fmt, *, rows=slice(None), names=None, width=None):
    """`docs` (a slice of them) as a file of format `fmt`; `names` renames columns; `width` cuts vectors."""
    names = names or {}
    cols = {names.get(k, k): (v[rows] if isinstance(v, np.ndarray) else v[rows]) for k, v in docs.items()}
    emb = names.get("emb", "emb")
    vectors = cols[emb] if width is None else cols[emb][:, :width]
    if fmt == "parquet":
        table = {k: v for k, v in cols.items() if k != emb}
        table[emb] = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1])
        pq.write_table(pa.table(table), path, row_group_size=200)
        return path
    records = [dict(zip(cols, values)) for values in zip(*[v if k != emb else vectors.tolist()
                                                           for k, v in cols.items()])]
    if fmt.startswith("jsonl"):
        text = "".join(json.dumps(r) + "\n" for r in records)
        if fmt.endswith(".gz"):
            path.write_bytes(gzip.compress(text.encode()))
        else:
            path.write_text(text)
        return path
    cells = [[json.dumps(v) if isinstance(v, list) else str(v) for v in r.values()] for r in records]
    if fmt == "tsv":  # no quoting: the texts hold no tabs or newlines
        path.write_text("".join("\t".join(row) + "\n" for row in [list(cols), *cells]))
        return path
    import csv

    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([list(cols), *cells])
    return path


def new_collection(path):
    return Collection.create(path, model=None, transform="none")


def ingested(path, source, **options):
    with (Collection.open(path, writable=True) if (path / "manifest.json").exists() else new_collection(path)) as col:
        return ingest(col, source, **options)


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_round_trips(docs, tmp_path, fmt):
    source = open_source(write(docs, tmp_path / f"docs.{fmt}", fmt), Fields(vector="emb"))
    assert source.rows == N
    report = ingested(tmp_path / "col", source, batch_size=128)
    assert (report.rows, report.added, report.skipped, report.replaced) == (N, N, 0, 0)
    with Collection.open(tmp_path / "col") as col:
        assert len(col) == N and col.info()["stored_rows"] == N
        records = col.get(docs["id"])
        assert [r.text for r in records] == [f"{t} {x}".strip() for t, x in zip(docs["title"], docs["text"])]
        textual = fmt in ("csv", "tsv")  # csv cells are strings; lists arrive as their JSON text
        for r, year, lang, tags, title in zip(records, docs["year"], docs["lang"], docs["tags"], docs["title"]):
            want = {"title": title, "year": str(year) if textual else year, "lang": lang,
                    "tags": json.dumps(tags) if textual else tags}
            assert r.metadata == want
        np.testing.assert_allclose(np.stack([r.vector for r in records]), normalize(docs["emb"]), atol=1e-6)


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_column_mapping(docs, tmp_path, fmt):
    names = {"id": "key", "title": "heading", "text": "body", "emb": "vec"}
    path = write(docs, tmp_path / f"docs.{fmt}", fmt, names=names)
    fields = Fields(id="key", text="body", title="heading", metadata=("lang",), vector="vec")
    ingested(tmp_path / "col", open_source(path, fields), batch_size=256)
    with Collection.open(tmp_path / "col") as col:
        record = col.get([docs["id"][7]])[0]
        assert record.text == f"{docs['title'][7]} {docs['text'][7]}" and record.metadata == {"lang": docs["lang"][7]}
    untitled = Fields(id="key", text="body", metadata=(), vector="vec")  # no title field: only the text
    ingested(tmp_path / "plain", open_source(path, untitled), batch_size=256)
    with Collection.open(tmp_path / "plain") as col:
        assert col.get([docs["id"][7]])[0].text == docs["text"][7].strip()
        assert col.get([docs["id"][7]])[0].metadata is None


def test_resume_after_a_partial_run_adds_only_what_is_missing(docs, tmp_path):
    prefix = write(docs, tmp_path / "prefix.parquet", "parquet", rows=slice(0, 250))
    whole = write(docs, tmp_path / "whole.parquet", "parquet")
    path = tmp_path / "col"
    assert ingested(path, open_source(prefix, Fields(vector="emb")), batch_size=100).added == 250
    report = ingested(path, open_source(whole, Fields(vector="emb")), batch_size=100)
    assert (report.rows, report.added, report.skipped) == (N, N - 250, 250)
    again = ingested(path, open_source(whole, Fields(vector="emb")), batch_size=100)
    assert (again.added, again.skipped) == (0, N)
    with Collection.open(path) as col:
        assert len(col) == N and col.info()["stored_rows"] == N  # no row was written twice
        ids = col.search(docs["emb"][:2], k=N).ids
        assert all(sorted(row) == sorted(docs["id"]) for row in ids.tolist())
    replaced = ingested(path, open_source(whole, Fields(vector="emb")), batch_size=100, upsert=True)
    assert (replaced.added, replaced.replaced, replaced.skipped) == (N, N, 0)
    with Collection.open(path) as col:
        assert len(col) == N


def test_a_bad_row_stops_before_its_batch(docs, tmp_path):
    path = write(docs, tmp_path / "docs.jsonl", "jsonl")
    lines = path.read_text().splitlines(keepends=True)
    lines[299] = lines[299][:40] + "\n"  # line 300, in the third batch of 128
    path.write_text("".join(lines))
    with pytest.raises(InvalidInputError, match=r"docs.jsonl line 300 is not valid JSON: .*the 256 rows before it "
                                                r"are in the collection, and running the same command again resumes"):
        ingested(tmp_path / "col", open_source(path, Fields(vector="emb")), batch_size=128)
    with Collection.open(tmp_path / "col") as col:
        assert len(col) == 256
    lines[299] = json.dumps({"_id": docs["id"][299], "title": "", "text": "fixed", "emb": docs["emb"][299].tolist()}) + "\n"
    path.write_text("".join(lines))
    report = ingested(tmp_path / "col", open_source(path, Fields(vector="emb")), batch_size=128)
    assert (report.added, report.skipped) == (N - 256, 256)


def test_a_vector_column_of_the_wrong_width(docs, tmp_path):
    path = tmp_path / "docs.parquet"
    emb = [v.tolist() if i < 200 else v[:383].tolist() for i, v in enumerate(docs["emb"])]
    pq.write_table(pa.table({"_id": docs["id"], "text": docs["text"], "emb": emb}), path)
    with pytest.raises(InvalidInputError, match=r"docs.parquet row 201: vector field 'emb' has 383 values, earlier "
                                                r"rows have 384 \(nothing of that batch was written; the 128 rows"):
        ingested(tmp_path / "col", open_source(path, Fields(vector="emb")), batch_size=128)
    with Collection.open(tmp_path / "col") as col:
        assert len(col) == 128
    narrow = write(docs, tmp_path / "narrow.parquet", "parquet", width=100)  # rows 1-128 are there: skipped
    with pytest.raises(InvalidInputError, match=r"narrow.parquet rows 129-256: vectors have width 100, expected 384"):
        ingested(tmp_path / "col", open_source(narrow, Fields(vector="emb")), batch_size=128)
    with Collection.open(tmp_path / "col") as col:
        assert len(col) == 128


@pytest.mark.parametrize(
    "fmt, fields, message",
    [
        ("parquet", Fields(text="body"), r"docs.parquet has no column 'body' \(the text, --text-field\); its "
                                         r"columns: id, title, text, year, lang, tags, emb"),
        ("csv", Fields(metadata=("year", "month")), r"docs.csv has no column 'month' \(metadata, --metadata-fields\)"),
        ("tsv", Fields(vector="vector"), r"has no column 'vector' \(the vectors, --vector-field\)"),
        ("jsonl", Fields(id="key"), r"docs.jsonl line 1 has no field 'key' \(the id; --id-field names another\)"),
        ("parquet", Fields(vector="lang"), r"vector column 'lang' holds string, not lists of numbers"),
    ],
)
def test_a_missing_column_is_named_before_anything_is_written(docs, tmp_path, fmt, fields, message):
    path = write(docs, tmp_path / f"docs.{fmt}", fmt)
    with pytest.raises(InvalidInputError, match=message):
        ingested(tmp_path / "col", open_source(path, fields), batch_size=128)
    assert not (tmp_path / "col" / "docs.sqlite").exists() or len(Collection.open(tmp_path / "col")) == 0


def test_unreadable_and_malformed_files(docs, tmp_path):
    garbage = tmp_path / "docs.parquet"
    garbage.write_bytes(b"PAR1" + bytes(range(256)) * 10)
    with pytest.raises(InvalidInputError, match=r"cannot read parquet file .*docs.parquet: "):
        open_source(garbage)
    whole = write(docs, tmp_path / "whole.parquet", "parquet")
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(InvalidInputError, match=r"cannot read parquet file .*cut.parquet"):
        open_source(cut)
    (tmp_path / "ragged.csv").write_text("_id,text,year\na,alpha,1\nb,beta\n")
    with pytest.raises(InvalidInputError, match=r"ragged.csv line 3 has 2 fields, the header names 3"):
        list(open_source(tmp_path / "ragged.csv").batches())
    (tmp_path / "array.jsonl").write_text('{"_id": "a", "text": "x"}\n[1, 2]\n')
    with pytest.raises(InvalidInputError, match=r"array.jsonl line 2 is not a JSON object"):
        list(open_source(tmp_path / "array.jsonl").batches())
    (tmp_path / "empty_id.jsonl").write_text('{"_id": "", "text": "x"}\n')
    with pytest.raises(InvalidInputError, match=r"empty_id.jsonl line 1: the id must be a non-empty string"):
        list(open_source(tmp_path / "empty_id.jsonl").batches())
    (tmp_path / "docs.xml").write_text("<docs/>")
    with pytest.raises(InvalidInputError, match=r"cannot tell the format of .*docs.xml"):
        open_source(tmp_path / "docs.xml")
    with pytest.raises(InvalidInputError, match=r"source file .*nothing.jsonl is missing"):
        open_source(tmp_path / "nothing.jsonl")
    (tmp_path / "dupes.jsonl").write_text('{"_id": "a", "text": "x", "v": [1, 0]}\n{"_id": "a", "text": "y", '
                                          '"v": [0, 1]}\n')
    with pytest.raises(InvalidInputError, match=r"dupes.jsonl lines 1-2: duplicate ids in one call: \['a'\]"):
        ingested(tmp_path / "col", open_source(tmp_path / "dupes.jsonl", Fields(vector="v")))


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "matsearch", "index", *map(str, args)], capture_output=True,
                          text=True)


def test_cli_index_with_a_column_mapping_and_its_errors(docs, tmp_path):
    path = write(docs, tmp_path / "docs.parquet", "parquet", names={"id": "key", "emb": "vec"})
    args = [path, "--collection", tmp_path / "col", "--id-field", "key", "--metadata-fields", "year,lang",
            "--vector-field", "vec", "--transform", "none", "--batch-size", "256", "--json"]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert (out["added"], out["skipped"], out["rows"], out["count"], out["dim"]) == (N, 0, N, N, 384)
    out = json.loads(run_cli(*args).stdout)  # the same command again: everything is there already
    assert (out["added"], out["skipped"], out["count"]) == (0, N, N)
    with Collection.open(tmp_path / "col") as col:
        assert col.get([docs["id"][3]])[0].metadata == {"year": docs["year"][3], "lang": docs["lang"][3]}
    for bad, message in [(["--text-field", "body"], "has no column 'body' (the text, --text-field)"),
                         (["--chunk-tokens", "64"], "chunking embeds each passage: precomputed vectors")]:
        proc = run_cli(*args[:-1], *bad)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], \
            proc.stderr


def test_sigkill_then_rerun_completes_without_duplicates(scifact, tmp_path):
    """Kill `matsearch index` part-way through a 12,000-row parquet file and run it again: every row once."""
    _, vectors, _ = scifact
    rows, rng = 12_000, np.random.default_rng(0)
    emb = (vectors[np.arange(rows) % len(vectors)] + 0.02 * rng.standard_normal((rows, 384))).astype(np.float16)
    ids = [f"doc{i:06d}" for i in range(rows)]
    path = tmp_path / "big.parquet"
    pq.write_table(pa.table({"_id": ids, "text": [f"text {i}" for i in range(rows)],
                             "shard": [i % 8 for i in range(rows)],
                             "emb": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), 384)}),
                   path, row_group_size=1000)
    col = tmp_path / "col"
    command = [sys.executable, "-m", "matsearch", "index", path, "--collection", col, "--vector-field", "emb",
               "--batch-size", "400", "--json"]
    worker = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    committed, deadline = 0, time.monotonic() + 60
    while worker.poll() is None and time.monotonic() < deadline:
        committed = _committed_rows(col / "docs.sqlite")
        if committed >= 1200:
            break
        time.sleep(0.01)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    assert worker.returncode == -signal.SIGKILL, "the ingest ended before it was killed"
    assert 0 < committed < rows
    rerun = subprocess.run(command, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    out = json.loads(rerun.stdout)
    assert out["count"] == rows and out["added"] + out["skipped"] == rows and out["skipped"] >= committed
    with Collection.open(col) as opened:
        info = opened.info()
        assert (info["count"], info["stored_rows"], info["deleted"]) == (rows, rows, 0)
        stored = opened._ids.lookup(np.arange(rows))
        assert sorted(stored.tolist()) == ids  # each id once
        assert opened.get(["doc000123"])[0].metadata == {"shard": 123 % 8}


def _committed_rows(db) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.1) as conn:
            return conn.execute("SELECT count(*) FROM docs").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_chunks_of_long_documents_and_search_by_parent(tmp_path):
    from matsearch.collection.passages import Chunker

    rows = [json.loads(line) for line, _ in zip(open(shared("scifact") / "corpus.jsonl"), range(6))]
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"_id": r["_id"], "text": r["text"], "n": i}) + "\n"
                            for i, r in enumerate(rows)))
    with Collection.create(tmp_path / "col", transform="none") as col:
        chunker = Chunker(encoder=col.encoder, tokens=64, overlap=16)
        report = ingest(col, open_source(path), chunker=chunker, batch_size=4)
        assert report.rows == 6 and report.added == len(col) > 12
        tokenizer = col.encoder._load().tokenizer
        for i, r in enumerate(rows):
            n = len(col._docs.existing([f"{r['_id']}#{j}" for j in range(100)]))
            passages = col.get([f"{r['_id']}#{j}" for j in range(n)])
            assert all(p.metadata == {"n": i, "parent": r["_id"], "chunk": j} for j, p in enumerate(passages))
            assert all(p.text in r["text"] for p in passages)
            assert all(len(tokenizer(p.text, add_special_tokens=False)["input_ids"]) <= 64 for p in passages)
            assert passages[0].text == r["text"][: len(passages[0].text)]
            assert passages[-1].text == r["text"].rstrip()[-len(passages[-1].text):]
        query = col.encoder.encode([rows[3]["text"][:300]])
        parents = col.search(query, k=5, parents=True)
        assert parents.ids[0, 0] == rows[3]["_id"] and len(set(parents.ids[0])) == 5
        chunks = col.search(query, k=len(col))
        best = {}
        for item, score in zip(chunks.ids[0], chunks.scores[0]):
            best.setdefault(item.split("#")[0], score)
        assert list(parents.ids[0]) == list(best)[:5]
        np.testing.assert_allclose(parents.scores[0], list(best.values())[:5], rtol=1e-6)
    assert Chunker(encoder=None, tokens=4, overlap=1).windows(10) == [(0, 4), (3, 7), (6, 10)]
    assert Chunker(encoder=None, tokens=4, overlap=1).windows(3) == [(0, 3)]
    with pytest.raises(InvalidInputError, match="overlap below their length"):
        Chunker(encoder=None, tokens=4, overlap=4)


def test_an_upsert_that_gives_a_document_fewer_passages_removes_the_rest(tmp_path):
    from matsearch.collection.passages import Chunker

    rows = [json.loads(line) for line, _ in zip(open(shared("scifact") / "corpus.jsonl"), range(3))]
    long, short = tmp_path / "long.jsonl", tmp_path / "short.jsonl"
    long.write_text("".join(json.dumps({"_id": r["_id"], "text": r["text"]}) + "\n" for r in rows))
    short.write_text("".join(json.dumps({"_id": r["_id"], "text": r["text"][:60] if i == 1 else r["text"]}) + "\n"
                             for i, r in enumerate(rows)))
    with Collection.create(tmp_path / "col", transform="none") as col:
        chunker = Chunker(encoder=col.encoder, tokens=32)
        ingest(col, open_source(long), chunker=chunker)
        before = len(col)
        old = col._docs.existing([f"{rows[1]['_id']}#{j}" for j in range(100)])
        assert len(old) > 2
        report = ingest(col, open_source(short), chunker=chunker, upsert=True)
        assert len(col) == before - len(old) + 1 and report.replaced == report.added == len(col)
        assert col._docs.existing(old) == [old[0]] and col.get([old[0]])[0].text == rows[1]["text"][:60].strip()
        found = col.search(col.encoder.encode([rows[1]["text"]]), k=len(col))
        assert set(found.ids[0]) <= set(col._docs.existing(list(found.ids[0]))) and old[1] not in found.ids[0]
    with Collection.open(tmp_path / "col") as reopened:
        assert len(reopened) == before - len(old) + 1
    with pytest.raises(InvalidInputError, match=r"passages_of=\['x'\].*upsert=True"):
        with Collection.open(tmp_path / "col", writable=True) as col:
            col.add(["x#0"], vectors=np.ones((1, 384), dtype=np.float32), passages_of=["x"])

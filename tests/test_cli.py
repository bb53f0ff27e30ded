import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import BUNDLED, shared


def run(*args, ok=True):
    proc = subprocess.run([sys.executable, "-m", "matsearch", *map(str, args)], capture_output=True, text=True)
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def cranfield(tmp_path_factory):
    """The bundled Cranfield corpus indexed with its precomputed vectors."""
    folder = shared("cranfield")
    path = tmp_path_factory.mktemp("cli") / "col"
    proc = run("index", BUNDLED / "cranfield", "--collection", path,
               "--vectors", folder / "corpus.minilm.f16.npy", "--json")
    return path, folder, json.loads(proc.stdout)


def test_index_reports_what_it_added(cranfield):
    _, _, summary = cranfield
    assert summary["added"] == 1400 and summary["count"] == 1400 and summary["dim"] == 384


def test_search_json_is_the_documented_interface(cranfield):
    path, _, _ = cranfield
    out = json.loads(run("search", path, "boundary layer transition at high mach number", "-k", "3",
                         "--plan", "d32:200>d384", "--mode", "dense", "--json").stdout)
    assert set(out) == {"query", "mode", "plan", "target", "k", "results", "cost"} and out["target"] is None
    assert out["plan"] == "d32:200>d384" and len(out["results"]) == 3
    assert set(out["results"][0]) == {"rank", "id", "score", "text", "metadata"}
    assert "boundary layer" in out["results"][0]["text"]
    assert out["cost"]["candidates"] == [1400, 200]
    assert out["cost"]["multiply_adds"] == 1400 * 32 + 200 * 352


def test_eval_json_holds_quality_cost_and_speed(cranfield):
    path, folder, _ = cranfield
    out = json.loads(run("eval", path, "--beir", BUNDLED / "cranfield",
                         "--query-vectors", folder / "queries.minilm.f16.npy", "--json").stdout)
    for key in ("ndcg@10", "recall@10", "recall@100", "queries", "mean_cost", "qps", "ann_recall@10"):
        assert key in out
    assert out["queries"] == 225 and out["mean_cost"] == 1400 * 384
    assert 0.35 < out["ndcg@10"] < 0.40


def test_info_json(cranfield):
    path, _, _ = cranfield
    out = json.loads(run("info", path, "--plan", "d64:100>d384", "--json").stdout)
    assert out["count"] == 1400 and out["resident_bytes_per_vector"] == 64 * 4 + 4


@pytest.mark.parametrize(
    "args, message",
    [
        (["search", "{missing}", "x"], "no collection at"),
        (["search", "{col}", "x", "--plan", "d32:>d384"], "malformed plan 'd32:>d384'"),
        (["search", "{col}", "x", "-k", "0"], "k=0 is out of range"),
        (["search", "{col}", "x", "-k", "1401"], "k=1401 is out of range: the collection holds 1400"),
        (["search", "{col}", ""], "query text is empty"),
        (["index", "{bundled}", "--collection", "{new}", "--vectors", "{bad_vectors}"], "has 3 rows, the corpus has 1400 documents"),
        (["index", "{bundled}", "--collection", "{col}", "--metric", "ip"], "has metric 'cosine', not 'ip'"),
        (["index", "{missing}", "--collection", "{new}"], "is missing"),
        (["eval", "{col}", "--beir", "{missing}"], "is not a BEIR folder"),
    ],
)
def test_errors_are_one_readable_line(cranfield, tmp_path, args, message):
    path, _, _ = cranfield
    np.save(tmp_path / "bad.npy", np.ones((3, 384), dtype=np.float32))
    names = {"col": path, "missing": tmp_path / "missing", "bundled": BUNDLED / "cranfield",
             "new": tmp_path / "new", "bad_vectors": tmp_path / "bad.npy"}
    proc = run(*[a.format(**names) for a in args], ok=False)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_corrupt_collection_is_one_line(cranfield, tmp_path):
    path, _, _ = cranfield
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{oops")
    proc = run("info", broken, ok=False)
    assert proc.returncode == 1 and proc.stderr.startswith("error: manifest") and "corrupt" in proc.stderr


def test_build_and_search_with_an_index(cranfield, tmp_path):
    path, folder, _ = cranfield
    out = json.loads(run("build", path, "--recipe", "hnsw16@d64", "--json").stdout)
    assert out["recipe"] == "hnsw16@d64" and out["count"] == 1400 and out["index_bytes_per_vector"] > 256
    hits = json.loads(run("eval", path, "--beir", BUNDLED / "cranfield", "--query-vectors",
                          folder / "queries.minilm.f16.npy", "--plan", "g64@d64:100>d384", "--json").stdout)
    assert hits["ann_recall@10"] > 0.95 and hits["mean_cost"] < 1400 * 384 / 2
    bad = run("build", path, "--recipe", "hnsw16", ok=False)
    assert bad.returncode == 1 and "malformed recipe 'hnsw16'" in bad.stderr and "[/f16|/int8]" in bad.stderr


@pytest.mark.parametrize("command", ["index", "build", "search", "eval", "info"])
def test_help_prints_and_shows_the_grammar_literally(command, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # so rich does not wrap a grammar token
    proc = run(command, "--help")
    if command in ("index", "build"):
        assert "[/f16|/int8]" in proc.stdout and "[o]pq<bytes>@d<dim>" in proc.stdout


def test_binary_codes_from_the_cli_and_info_per_tier(cranfield, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # so rich does not wrap a row name
    _, folder, _ = cranfield
    path = tmp_path / "codes"
    run("index", BUNDLED / "cranfield", "--collection", path, "--vectors", folder / "corpus.minilm.f16.npy",
        "--recipe", "bin64/itq+int8@d32")
    hits = json.loads(run("eval", path, "--beir", BUNDLED / "cranfield", "--query-vectors",
                          folder / "queries.minilm.f16.npy", "--plan", "h@b64:300>d32/int8:100>d384", "--json").stdout)
    assert hits["ann_recall@10"] > 0.8
    info = json.loads(run("info", path, "--plan", "h@b64:300>d384", "--json").stdout)
    assert info["in_memory_bytes_per_vector"]["bin64/itq+int8@d32"] > 8 + 32
    assert info["resident_bytes_per_vector"] == info["in_memory_bytes_per_vector"]["bin64/itq+int8@d32"]
    assert info["store_bytes_per_vector"] == pytest.approx(384 * 4 + 5 * 4, abs=0.1)  # + a checksum per append
    table = run("info", path).stdout
    assert "in_memory_bytes_per_vector: bin64/itq+int8@d32" in table


def test_search_by_parent_document_from_the_cli(tmp_path):
    from typer.testing import CliRunner

    from matsearch.cli import app

    rows = [json.loads(line) for line, _ in zip(open(shared("scifact") / "corpus.jsonl"), range(5))]
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps({"_id": r["_id"], "text": r["text"]}) + "\n" for r in rows))
    path = tmp_path / "col"
    runner = CliRunner()
    indexed = runner.invoke(app, ["index", str(source), "--collection", str(path), "--transform", "none",
                                  "--chunk-tokens", "48", "--json"])
    assert indexed.exit_code == 0, indexed.output
    query = rows[2]["text"][:200]
    by_parent = runner.invoke(app, ["search", str(path), query, "-k", "3", "--parents", "--mode", "dense", "--json"])
    assert by_parent.exit_code == 0, by_parent.output
    hits = json.loads(by_parent.stdout)["results"]
    assert [h["id"] for h in hits][0] == rows[2]["_id"] and len({h["id"] for h in hits}) == 3
    assert all(h["passage"].startswith(f"{h['id']}#") and h["metadata"]["parent"] == h["id"] for h in hits)
    assert hits[0]["text"] in rows[2]["text"]
    passages = json.loads(runner.invoke(app, ["search", str(path), query, "-k", "20", "--mode", "dense",
                                              "--json"]).stdout)["results"]
    assert hits[0]["passage"] == passages[0]["id"] and hits[0]["score"] == passages[0]["score"]
    assert "passage" not in passages[0]
    table = runner.invoke(app, ["search", str(path), query, "-k", "3", "--parents", "--mode", "dense"])
    assert table.exit_code == 0 and rows[2]["_id"] in table.stdout

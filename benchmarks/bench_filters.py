"""Filtered search (issue 14, item 1): QPS and recall@10 against filter selectivity on pkgsum with synthetic
metadata, ours through `Collection.search(..., filter=...)` beside FAISS with an IDSelectorBitmap in the same run.

Every pkgsum item gets metadata {"pct": p, "year": y, "lang": l}: `pct` deals the values 0…999 to exactly
N/1000 items each (a seeded shuffle), so {"pct": {"$lt": s·1000}} lets exactly a share s through. Each method
runs at the setting that reaches recall@10 ≈ 0.95 unfiltered (README tables); recall@10 is against exact
filtered search (numpy, every matching item on 384 dims). Timings: one thread, one query at a time, the best
of `--rounds` passes over the queries; ours and FAISS's alternate per selectivity. FAISS indexes the
normalised raw vectors and takes the matching rows as an IDSelectorBitmap in SearchParameters(sel=…); its HNSW
runs at efSearch 48 and, as our graph does under a filter, at 48 / share (from 1% up: below, seconds a query).

Also measured: what a filter's row mask costs — reading a field into the in-memory columns (once), a new
filter evaluated on them, a cached one, and the same filter as an SQLite json_extract WHERE over docs.sqlite.

`--sweep` also times both of our routes at every selectivity, forced (the matching rows scanned on the plan's
funnel, or the plan's index asked with the other rows masked out), which is how search.ROWS_CROSSOVER was set.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/bench_filters.py
"""

from __future__ import annotations

import argparse
import json
import math
import sqlite3
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
from common import PKGSUM, ROOT, load_vectors
from threadpoolctl import threadpool_limits

from matsearch import Collection
from matsearch import search as engine
from matsearch.collection.filters import Filter

K = 10
SHARES = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
RECIPE = "ivf256@d64:d192/pq96x4fs,hnsw32@d192/int8,pq32@d128,bin128/itq"
OURS = {  # method: plan (recall@10 ≈ 0.95 unfiltered on pkgsum)
    "flat funnel": "d64:200>d384",
    "IVF fast-scan `ivf256@d64:d192/pq96x4fs`": "p48@d192:100>d384",
    "graph `hnsw32@d192/int8`": "g48@d192:32>d384",
    "PQ `pq32@d128`": "q@d128:200>d384",
    "binary `bin128/itq`": "h@b128:1000>d128:100>d384",
}
HNSW_EF = 48
WIDENED_FROM = 0.01  # FAISS HNSW at efSearch 48 / share is timed from this share up
IVFPQ = ("IVF1024,PQ96x4fs", 96, 16)  # key, nprobe, k_factor of IndexRefineFlat
LANGS = ("en", "de", "fr", "es", "it", "nl", "pt", "ru", "zh", "ja")


def metadata(n: int, seed: int = 0) -> tuple[list[dict], np.ndarray]:
    rng = np.random.default_rng(seed)
    pct = rng.permutation(np.arange(n) * 1000 // n)
    years = rng.integers(1990, 2025, n)
    langs = rng.integers(0, len(LANGS), n)
    return [{"pct": int(p), "year": int(y), "lang": LANGS[l]} for p, y, l in zip(pct, years, langs)], pct


def collection(folder: Path, corpus: np.ndarray, meta: list[dict]) -> Collection:
    if not (folder / "manifest.json").exists():
        start = time.perf_counter()
        with Collection.create(folder) as col:
            col.add([str(i) for i in range(len(corpus))], vectors=corpus, metadata=meta)
            print(f"collection built in {time.perf_counter() - start:.0f} s", flush=True)
            start = time.perf_counter()
            col.build(RECIPE)
            print(f"indexes {RECIPE} built in {time.perf_counter() - start:.0f} s", flush=True)
    return Collection.open(folder)


def exact_filtered(x: np.ndarray, q: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = np.empty((len(q), K), dtype=np.int64)
    rows = np.flatnonzero(mask)
    for lo in range(0, len(q), 100):
        sims = q[lo : lo + 100] @ x[rows].T
        top = np.argpartition(-sims, min(K, len(rows)) - 1, axis=1)[:, :K]
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1, kind="stable")
        out[lo : lo + 100] = rows[np.take_along_axis(top, order, axis=1)]
    return out


def recall(found, truth, matching: int) -> float:
    want = min(K, matching)
    return float(np.mean([len(set(np.asarray(f[:want]).tolist()) & set(t[:want].tolist())) / want
                          for f, t in zip(found, truth)]))


def timed(search, n: int, rounds: int):
    """Best-of-`rounds` ms per query of `search(i)` over queries 0…n-1, and the ids of the last pass."""
    search(0)
    best, ids = float("inf"), None
    for _ in range(rounds):
        start = time.perf_counter()
        ids = [search(i) for i in range(n)]
        best = min(best, (time.perf_counter() - start) / n)
    return best * 1e3, ids


def ours(col, plan, queries, flt, rounds):
    def search(i):
        result = col.search(queries[i : i + 1], k=K, plan=plan, filter=flt)
        return result.ids[0].astype(np.int64), result.plan
    ms, found = timed(search, len(queries), rounds)
    return ms, [f[0] for f in found], found[-1][1]


def forced(route: str):
    """Make every filtered search take `route` ("rows" or "masked") until the returned undo is called."""
    saved, graph_rows = dict(engine.ROWS_CROSSOVER), engine.GRAPH_ROWS
    for kind in engine.ROWS_CROSSOVER:
        engine.ROWS_CROSSOVER[kind] = 1.01 if route == "rows" else 0.0
    engine.GRAPH_ROWS = float("inf") if route == "rows" else 0

    def undo():
        engine.ROWS_CROSSOVER.update(saved)
        engine.GRAPH_ROWS = graph_rows
    return undo


def faiss_indexes(x: np.ndarray) -> dict:
    d = x.shape[1]
    faiss.omp_set_num_threads(2)
    built = {}
    start = time.perf_counter()
    flat = faiss.IndexFlatIP(d)
    flat.add(x)
    built["FAISS IndexFlatIP (exact)"] = (flat, lambda sel, share: _selecting(faiss.SearchParameters(), sel))
    hnsw = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
    hnsw.add(x)
    built[f"FAISS HNSW32,Flat efSearch={HNSW_EF}"] = (
        hnsw, lambda sel, share: _selecting(faiss.SearchParametersHNSW(efSearch=HNSW_EF), sel))
    widened = lambda share: min(len(x), math.ceil(HNSW_EF / share))  # noqa: E731
    built[f"FAISS HNSW32,Flat efSearch={HNSW_EF}/share (as our graph widens)"] = (
        hnsw, lambda sel, share: _selecting(faiss.SearchParametersHNSW(efSearch=widened(share)), sel))
    key, nprobe, k_factor = IVFPQ
    base = faiss.index_factory(d, key, faiss.METRIC_INNER_PRODUCT)
    refine = faiss.IndexRefineFlat(base)
    refine.train(x)
    refine.add(x)

    def ivf_params(sel, share):
        base_params = _selecting(faiss.SearchParametersIVF(nprobe=nprobe), sel)
        params = faiss.IndexRefineSearchParameters(k_factor=k_factor, base_index_params=base_params)
        params.keep = base_params  # the SWIG object does not hold a reference
        return params
    built[f"FAISS {key} + IndexRefineFlat nprobe={nprobe}, k_factor={k_factor}"] = (refine, ivf_params)
    faiss.omp_set_num_threads(1)
    print(f"FAISS indexes built in {time.perf_counter() - start:.0f} s", flush=True)
    return built


def _selecting(params, sel):
    if sel is not None:
        params.sel = sel
    return params


def faiss_run(index, make_params, queries, mask, rounds):
    """FAISS at its setting, the matching rows given as an IDSelectorBitmap (none when every row matches)."""
    bitmap = np.packbits(mask, bitorder="little")
    sel = None if mask.all() else faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bitmap))
    params = make_params(sel, mask.mean())

    def search(i):
        return index.search(queries[i : i + 1], K, params=params)[1][0]
    ms, found = timed(search, len(queries), rounds)
    return ms, found


def mask_costs(col: Collection, folder: Path) -> dict:
    """Seconds: a field read into columns (a fresh process's first filter on it), a new filter on the columns,
    a cached one, and the same filter as SQLite json_extract over docs.sqlite."""
    probe = np.zeros((1, col.dim), dtype=np.float32)
    probe[0, 0] = 1
    with Collection.open(folder) as fresh:
        start = time.perf_counter()
        fresh.search(probe, k=1, plan="d32", filter={"year": {"$gte": 2020}})
        first = time.perf_counter() - start
        costs = {"first filter on a field (reads it into columns)": first}
        flt = {"year": {"$gte": 2011}, "lang": {"$in": ["en", "de"]}}
        fresh.search(probe, k=1, plan="d32", filter={"lang": "en"})  # read lang too
        cache = fresh._filters
        with fresh._rw.reading():
            parsed = Filter.parse(flt)
            start = time.perf_counter()
            for _ in range(20):
                cache._masks.clear()
                chosen = cache.select(fresh, parsed)
            costs["a new filter on the columns"] = (time.perf_counter() - start) / 20
            start = time.perf_counter()
            for _ in range(200):
                cache.select(fresh, parsed)
            costs["a cached filter"] = (time.perf_counter() - start) / 200
        db = sqlite3.connect(f"file:{folder / 'docs.sqlite'}?mode=ro", uri=True)
        start = time.perf_counter()
        for _ in range(3):
            rows = [r for (r,) in db.execute("SELECT row FROM docs WHERE json_extract(metadata, '$.year') >= 2011 "
                                             "AND json_extract(metadata, '$.lang') IN ('en', 'de')")]
        costs["the same filter as SQLite json_extract WHERE"] = (time.perf_counter() - start) / 3
        assert len(rows) == chosen.count, (len(rows), chosen.count)
        db.close()
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--collection", type=Path, help="Keep (or reuse) the pkgsum collection in this folder.")
    parser.add_argument("--sweep", action="store_true", help="Also time both routes, forced, at every share.")
    parser.add_argument("--no-faiss", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    corpus, queries = load_vectors(PKGSUM, args.queries)
    meta, pct = metadata(len(corpus))
    x = corpus / np.linalg.norm(corpus, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    tmp = tempfile.TemporaryDirectory()
    folder = args.collection or Path(tmp.name) / "pkgsum"
    rows, report = [], {"recipe": RECIPE, "queries": len(queries), "rounds": args.rounds, "k": K}
    with threadpool_limits(1):
        col = collection(folder, corpus, meta)
        report["mask_seconds"] = mask_costs(col, folder)
        print(json.dumps(report["mask_seconds"], indent=1), flush=True)
        others = {} if args.no_faiss else faiss_indexes(x)
        for share in SHARES:
            mask = pct < round(share * 1000)
            flt = None if share >= 1 else {"pct": {"$lt": round(share * 1000)}}
            truth = exact_filtered(x, q, mask)
            matching = int(mask.sum())
            for name, plan in OURS.items():
                routes = ("auto",)
                if args.sweep and flt is not None:  # the index asked for 200x its candidates or more: not timed
                    routes = ("auto", "rows", "masked") if share >= 0.005 else ("auto", "rows")
                for route in routes:
                    undo = forced(route) if route != "auto" else (lambda: None)
                    try:
                        ms, found, ran = ours(col, plan, queries, flt, args.rounds)
                    finally:
                        undo()
                    rows.append({"share": share, "matching": matching, "method": f"matsearch {name}", "route": route,
                                 "setting": plan, "ran": ran, "recall@10": recall(found, truth, matching), "ms": ms})
                    print(json.dumps(rows[-1]), flush=True)
            for name, (index, make_params) in others.items():
                if "/share" in name and share < WIDENED_FROM:
                    continue  # efSearch 9,600 and more: seconds a query
                ms, found = faiss_run(index, make_params, q, mask, args.rounds)
                rows.append({"share": share, "matching": matching, "method": name, "route": "IDSelectorBitmap",
                             "setting": "", "ran": "", "recall@10": recall(found, truth, matching), "ms": ms})
                print(json.dumps(rows[-1]), flush=True)
        col.close()
    report["rows"] = rows
    args.out.mkdir(parents=True, exist_ok=True)
    name = "filters_pkgsum" + ("_sweep" if args.sweep else "")
    (args.out / f"{name}.json").write_text(json.dumps(report, indent=1))
    (args.out / f"{name}.md").write_text(table(rows, report))
    print(table(rows, report))


def table(rows: list[dict], report: dict) -> str:
    methods = list(dict.fromkeys((r["method"], r["route"]) for r in rows))
    shares = list(dict.fromkeys(r["share"] for r in rows))
    head = "| method | route | " + " | ".join(f"{s:.1%}" for s in shares) + " |"
    lines = [f"QPS (one thread, one query at a time) / recall@10 against exact filtered search, by the share of "
             f"pkgsum's 100,000 items the filter lets through; {report['queries']} queries, best of "
             f"{report['rounds']} passes.", "", head, "|" + "---|" * (len(shares) + 2)]
    for method, route in methods:
        cells = []
        for s in shares:
            found = [r for r in rows if r["method"] == method and r["route"] == route and r["share"] == s]
            cells.append(f"{1e3 / found[0]['ms']:,.0f} / {found[0]['recall@10']:.3f}" if found else "–")
        lines.append(f"| {method} | {route} | " + " | ".join(cells) + " |")
    lines += ["", "Row-mask cost (seconds): " + ", ".join(f"{k}: {v:.4g}" for k, v in report["mask_seconds"].items())]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

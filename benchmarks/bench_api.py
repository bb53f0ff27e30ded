"""The acceptance benchmark of issue 12: our recipes through `Collection.search` against FAISS (HNSW32,Flat and
static indexes at half its memory or less) in the same process and run, on pkgsum, tuned on one half of the
queries and reported on the other.

Every method's knob is swept on queries 0–499 (recall@10 against exact search on all 384 dims, and ms/query
one at a time, the best of 2 rounds); the three fastest settings reaching recall@10 ≥ 0.95 there are timed
again, and the fastest of them is then measured on queries 500–999 (held out): recall@10, ms/query one at a
time (the best of 3 rounds) and ms/query when all 1,000 queries go in one call (the best of 3). Ours and FAISS's are timed in turn,
twice, and each keeps its better pass (this VM's speed drifts by tens of percent within minutes). Ours: `Collection.search(raw vectors, plan=...)`, ids out (the
collection applies its PCA rotation and maps rows to ids). FAISS: the normalised raw vectors, inner product,
one thread. For our best setting the per-query time is split into the API (Collection.search's wall time
less run_plan's `cost.seconds` and the rotation), the query's PCA rotation (the collection's transform, timed
by a wrapper around it), the first stage (`cost.stage_seconds[0]`), the re-rank (the later stages) and the
rest of run_plan. Resident bytes/vector: ours from `col.info(plan)['in_memory_bytes_per_vector']`,
FAISS from its code sizes, ids, graph links and centroids; neither counts the full vectors a re-rank reads
(our memory-mapped store, FAISS's IndexRefineFlat copy). Writes api_pkgsum.{md,json,png}.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/bench_api.py
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
from common import PKGSUM, ROOT, elastic_collection, exact_top10, load_vectors, recall_at_10
from threadpoolctl import threadpool_limits

TARGET = 0.95
TUNE, HELD = slice(0, 500), slice(500, 1000)
TUNE_ROUNDS, ROUNDS = 2, 3
FINALISTS = 3  # the fastest settings reaching the target on the tuning queries, timed again before one is chosen
K = 10
# collection recipes (one index of a kind per collection) and each recipe part's plans
RECIPES = ("hnsw32@d192/int8,ivf1024@d64:d128/int8,bin128", "ivf256@d64:d192/pq96x4fs", "ivf512@d64:d192/pq96x4fs",
           "ivf256@d64:d128/pq64x4fs")
GRAPH = ((24, 24), (32, 24), (32, 32), (40, 32), (48, 32), (48, 40), (56, 40), (64, 48), (80, 64))  # (beam, keep)
PLANS = {
    "hnsw32@d192/int8": [f"g{b}@d192:{k}>d384" for b, k in GRAPH],
    "ivf1024@d64:d128/int8": [f"p{p}@d128:{k}>d384" for p, k in itertools.product((64, 96, 128, 160, 192), (50, 100))],
    "bin128": [f"h@b128:{k}>d128:100>d384" for k in (500, 700, 1000, 1400)],
    "ivf256@d64:d192/pq96x4fs": [f"p{p}@d192:{k}>d384" for p, k in itertools.product((32, 40, 48, 56, 64), (50, 70, 100))]
    + [f"p{p}@d192:{k}>d256:{r}>d384" for p, k, r in itertools.product((40, 48, 56), (100, 150), (20, 30))]
    + [f"p{lo}-{hi}~{s}@d192:{k}>d256:{r}>d384"  # adaptive: the lists within a cosine gap s of the nearest
       for (lo, hi), s, k, r in itertools.product(((8, 96), (16, 128)), (0.28, 0.3, 0.32), (100, 150), (20, 30))],
    "ivf512@d64:d192/pq96x4fs": [f"p{p}@d192:{k}>d384" for p, k in itertools.product((48, 64, 80, 96), (50, 70, 100))]
    + [f"p{p}@d192:{k}>d256:{r}>d384" for p, k, r in itertools.product((64, 80), (100, 150), (20, 30))],
    "ivf256@d64:d128/pq64x4fs": [f"p{p}@d128:{k}>d384" for p, k in itertools.product((48, 56, 64), (100, 150))]
    + [f"p{p}@d128:{k}>d256:{r}>d384" for p, k, r in itertools.product((48, 56, 64), (100, 150, 200), (20, 30))],
}
HNSW_EFS = (24, 32, 40, 48, 56, 64, 80, 96)
SQ8_EFS, K_FACTORS = (20, 24, 32, 40, 48, 64, 80), (2, 4)  # efSearch below k·k_factor is k·k_factor
NPROBES, IVF_K_FACTORS = (16, 32, 48, 64, 96, 128), (4, 8, 16, 32)
REF = "FAISS HNSW32,Flat"


# --- ours ---------------------------------------------------------------------------------------------

class RotationTimer:
    """Times the collection's transform (the query's PCA rotation) while in a `with`: `seconds` in all."""

    def __init__(self, col):
        self.transform, self.seconds = col.transform, 0.0

    def __enter__(self):
        apply = type(self.transform).apply

        def timed(vectors):
            start = time.perf_counter()
            out = apply(self.transform, vectors)
            self.seconds += time.perf_counter() - start
            return out

        self.transform.apply = timed  # the instance's attribute, over its class's method
        return self

    def __exit__(self, *exc):
        del self.transform.apply


def ours_single(col, plan, queries, rounds):
    """One query at a time through Collection.search: (ms/query of the best round, ids, that round's split)."""
    col.search(queries[:1], k=K, plan=plan)
    best = None
    for _ in range(rounds):
        ids, parts = [], np.zeros(5)  # wall, run_plan, first stage, later stages, rotation
        with RotationTimer(col) as rotation:
            start = time.perf_counter()
            for i in range(len(queries)):
                t = time.perf_counter()
                result = col.search(queries[i : i + 1], k=K, plan=plan)
                wall = time.perf_counter() - t
                ids.append(result.ids[0])
                c = result.cost
                parts += (wall, c.seconds, c.stage_seconds[0], sum(c.stage_seconds[1:]), 0.0)
            seconds = (time.perf_counter() - start) / len(queries)
        parts[4] = rotation.seconds
        if best is None or seconds < best[0]:
            best = (seconds, ids, parts / len(queries))
    seconds, ids, parts = best
    return seconds * 1e3, np.vstack(ids).astype(np.int64), split(parts)


def ours_batch(col, plan, queries, rounds):
    """All the queries in one call: (ms/query of the best round, ids, its split)."""
    col.search(queries[:2], k=K, plan=plan)
    best = None
    for _ in range(rounds):
        with RotationTimer(col) as rotation:
            start = time.perf_counter()
            result = col.search(queries, k=K, plan=plan)
            wall = time.perf_counter() - start
        if best is None or wall < best[0]:
            best = (wall, result, rotation.seconds)
    wall, result, rotated = best
    c = result.cost
    parts = np.array([wall, c.seconds, c.stage_seconds[0], sum(c.stage_seconds[1:]), rotated]) / len(queries)
    return wall / len(queries) * 1e3, result.ids.astype(np.int64), split(parts)


def split(parts) -> dict:
    """Milliseconds per query: the API around run_plan (rotation aside), the rotation, run_plan's first stage,
    its re-rank and the rest of it."""
    wall, inside, first, later, rotation = parts
    return {"api_ms": (wall - inside - rotation) * 1e3, "rotation_ms": rotation * 1e3, "first_stage_ms": first * 1e3,
            "rerank_ms": later * 1e3, "run_plan_other_ms": (inside - first - later) * 1e3, "total_ms": wall * 1e3}


def our_methods(cols) -> list[dict]:
    methods = []
    for col in cols:
        memory = col.info()["in_memory_bytes_per_vector"]
        for part, plans in PLANS.items():
            if part in memory:
                methods.append({"method": f"matsearch `{part}`", "ours": True, "col": col, "resident": memory[part],
                                "settings": [{"setting": p, "plan": p} for p in plans]})
    return methods


# --- FAISS --------------------------------------------------------------------------------------------

def faiss_methods(x) -> list[dict]:
    """FAISS HNSW32,Flat and the static indexes at half its memory or less, built on the normalised corpus."""
    n, d = x.shape
    methods = []
    hnsw = _built(faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT), x, "HNSW32,Flat")
    methods.append({"method": REF, "index": hnsw, "resident": d * 4 + _links(hnsw) / n,
                    "settings": [{"setting": f"efSearch={ef}", "ef": ef} for ef in HNSW_EFS]})
    sq8 = faiss.index_factory(d, "HNSW32,SQ8", faiss.METRIC_INNER_PRODUCT)
    refine = _built(faiss.IndexRefineFlat(sq8), x, "HNSW32,SQ8 + refine")
    methods.append({"method": "FAISS HNSW32,SQ8 + IndexRefineFlat", "index": refine, "base": sq8,
                    "resident": d + _links(faiss.downcast_index(sq8)) / n + 2 * d * 4 / n,
                    "settings": [{"setting": f"efSearch={ef}, k_factor={kf}", "ef": ef, "k_factor": kf}
                                 for kf in K_FACTORS for ef in SQ8_EFS if ef >= K * kf]})
    for key in ("IVF1024,PQ96x4fs", "IVF1024,RaBitQ", "IVF1024,RaBitQfs"):
        base = faiss.index_factory(d, key, faiss.METRIC_INNER_PRODUCT)
        refine = _built(faiss.IndexRefineFlat(base), x, f"{key} + refine")
        methods.append({"method": f"FAISS {key} + IndexRefineFlat", "index": refine, "base": base,
                        "resident": _ivf_bytes(base) / n,
                        "settings": [{"setting": f"nprobe={p}, k_factor={kf}", "nprobe": p, "k_factor": kf}
                                     for kf in IVF_K_FACTORS for p in NPROBES]})
    return methods


def _built(index, x, name):
    start = time.perf_counter()
    faiss.omp_set_num_threads(2)
    index.train(x)
    index.add(x)
    faiss.omp_set_num_threads(1)
    print(f"FAISS {name} built in {time.perf_counter() - start:.0f} s", flush=True)
    return index


def _links(index) -> int:
    hnsw = index.hnsw
    return sum(faiss.vector_to_array(a).nbytes for a in (hnsw.neighbors, hnsw.offsets, hnsw.levels))


def _ivf_bytes(index) -> float:
    """An IVF index's codes (fast-scan lists padded to blocks of 32) and ids, its centroids and its codec's tables."""
    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    sizes = np.array([ivf.invlists.list_size(i) for i in range(ivf.nlist)])
    lists = faiss.downcast_InvertedLists(ivf.invlists)
    if isinstance(lists, faiss.BlockInvertedLists):
        codes = int(np.sum(-(-sizes // lists.n_per_block))) * lists.block_size
    else:
        codes = int(sizes.sum()) * ivf.code_size
    tables = 2 ** ivf.pq.nbits * ivf.d * 4 if hasattr(ivf, "pq") else 0
    return codes + 8 * int(sizes.sum()) + ivf.nlist * ivf.d * 4 + tables


def faiss_search(method, setting, queries):
    index = method["index"]
    if "ef" in setting:
        graph = index if "k_factor" not in setting else faiss.downcast_index(index.base_index)
        graph.hnsw.efSearch = setting["ef"]
    if "nprobe" in setting:
        faiss.extract_index_ivf(index.base_index).nprobe = setting["nprobe"]
    if "k_factor" in setting:
        index.k_factor = setting["k_factor"]
    return index.search(queries, K)[1]


def faiss_single(method, setting, queries, rounds):
    faiss_search(method, setting, queries[:1])
    index = method["index"]
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        ids = [index.search(queries[i : i + 1], K)[1][0] for i in range(len(queries))]
        best = min(best, (time.perf_counter() - start) / len(queries))
    return best * 1e3, np.vstack(ids)


def faiss_batch(method, setting, queries, rounds):
    faiss_search(method, setting, queries[:2])
    index = method["index"]
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        ids = index.search(queries, K)[1]
        best = min(best, (time.perf_counter() - start) / len(queries))
    return best * 1e3, ids


# --- the run --------------------------------------------------------------------------------------------

def single(method, setting, queries, rounds):
    if method.get("ours"):
        return ours_single(method["col"], setting["plan"], queries, rounds)
    return (*faiss_single(method, setting, queries, rounds), None)


def batch(method, setting, queries, rounds):
    if method.get("ours"):
        return ours_batch(method["col"], setting["plan"], queries, rounds)
    return (*faiss_batch(method, setting, queries, rounds), None)


def tune(method, queries, truth):
    """Recall and ms/query one at a time of every setting on the tuning queries; the chosen setting."""
    for s in method["settings"]:
        ms, ids, _ = single(method, s, queries[TUNE], TUNE_ROUNDS)
        s.update(tune_recall=recall_at_10(ids, truth[TUNE]), tune_ms=ms)
        print(f"tune  {method['method']:<42} {s['setting']:<28} recall@10 {s['tune_recall']:.3f}  {ms:.3f} ms",
              flush=True)
    hits = sorted((s for s in method["settings"] if s["tune_recall"] >= TARGET), key=lambda s: s["tune_ms"])
    for s in hits[:FINALISTS]:  # one noisy pass can rank them wrongly (it once put efSearch 56 before 48): time again
        s["tune_ms"] = min(s["tune_ms"], single(method, s, queries[TUNE], TUNE_ROUNDS)[0])
    method["chosen"] = min(hits[:FINALISTS], key=lambda s: s["tune_ms"], default=None)


def held_out(method, queries, truth):
    """The chosen setting on the held-out queries, one at a time and in a batch of all 1,000; keeps the best pass."""
    s = method["chosen"]
    if s is None:
        return
    ms, ids, parts = single(method, s, queries[HELD], ROUNDS)
    batch_ms, batch_ids, batch_parts = batch(method, s, queries, ROUNDS)
    s.setdefault("passes", []).append({"ms": ms, "batch_ms": batch_ms})
    if ms <= min(p["ms"] for p in s["passes"]):
        s.update(split=parts)
    if batch_ms <= min(p["batch_ms"] for p in s["passes"]):
        s.update(batch_split=batch_parts)
    s.update(recall=recall_at_10(ids, truth[HELD]), ms=min(p["ms"] for p in s["passes"]),
             batch_ms=min(p["batch_ms"] for p in s["passes"]),
             batch_recall=recall_at_10(batch_ids[HELD], truth[HELD]),
             queries_differing=int(np.count_nonzero((batch_ids[HELD] != ids).any(axis=1))))
    print(f"held  {method['method']:<42} {s['setting']:<28} recall@10 {s['recall']:.3f}  {ms:.3f} ms  "
          f"batch {batch_ms:.3f} ms", flush=True)


def markdown(report) -> str:
    methods = report["methods"]
    ref = next(m for m in methods if m["method"] == REF)["chosen"]
    lines = [f"pkgsum ({report['items']:,} × 384), one thread, faiss {report['faiss_version']}: each method's setting "
             f"tuned on queries 0–499 (the fastest one at a time reaching recall@10 ≥ {TARGET}), reported on "
             "queries 500–999. Ours through `Collection.search` (raw vectors in, ids out); batch = all 1,000 "
             "queries in one call. Resident B/vec excludes the full vectors a re-rank reads (our memory-mapped "
             "store, FAISS's IndexRefineFlat copy).", "",
             "| method | setting | recall@10 (held-out) | ms/query | QPS | × HNSW32 QPS | resident B/vec "
             "| batch 1,000: ms/query | × HNSW32 batched |", "|---|---|---|---|---|---|---|---|---|"]
    for m in methods:
        s = m["chosen"]
        if s is None:
            best = max(m["settings"], key=lambda t: t["tune_recall"])
            lines.append(f"| {m['method']} | none reaches {TARGET} on the tuning queries (best "
                         f"{best['tune_recall']:.3f} at {best['setting']}) | | | | | {m['resident']:,.0f} | | |")
            continue
        lines.append(f"| {m['method']} | `{s['setting']}` | {s['recall']:.3f} | {s['ms']:.3f} | {1e3 / s['ms']:,.0f} "
                     f"| {ref['ms'] / s['ms']:.2f} | {m['resident']:,.0f} | {s['batch_ms']:.3f} "
                     f"| {ref['batch_ms'] / s['batch_ms']:.2f} |")
    lines += ["", "Where the time goes for ours (ms/query, held-out queries; API = `Collection.search` less "
              "run_plan's `cost.seconds` and the rotation):", "",
              "| method | setting | mode | total | API | PCA rotation | first stage | re-rank | rest of run_plan |",
              "|---|---|---|---|---|---|---|---|---|"]
    for m in methods:
        s = m["chosen"]
        if m.get("ours") and s is not None:
            for mode, key in (("one at a time", "split"), ("batch 1,000", "batch_split")):
                p = s[key]
                lines.append(f"| {m['method']} | `{s['setting']}` | {mode} | {p['total_ms']:.3f} | {p['api_ms']:.3f} "
                             f"| {p['rotation_ms']:.3f} | {p['first_stage_ms']:.3f} | {p['rerank_ms']:.3f} "
                             f"| {p['run_plan_other_ms']:.3f} |")
    lines += ["", "Every setting on the tuning queries (0–499):", "", "| method | setting | recall@10 | ms/query |",
              "|---|---|---|---|"]
    lines += [f"| {m['method']} | `{s['setting']}` | {s['tune_recall']:.3f} | {s['tune_ms']:.3f} |"
              for m in methods for s in m["settings"]]
    return "\n".join(lines) + "\n"


def plot(methods, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    for m in methods:
        pts = sorted(m["settings"], key=lambda s: s["tune_recall"])
        frontier, fastest = [], math.inf
        for s in reversed(pts):  # the Pareto front: faster than every setting of higher recall
            if s["tune_ms"] < fastest:
                frontier.append(s)
                fastest = s["tune_ms"]
        frontier.reverse()
        line, = ax.plot([s["tune_recall"] for s in frontier], [1e3 / s["tune_ms"] for s in frontier],
                        "o-" if m.get("ours") else "s--", markersize=3,
                        label=f"{m['method'].replace('`', '')} ({m['resident']:,.0f} B/vec)")
        if m["chosen"] is not None and "recall" in m["chosen"]:
            ax.plot(m["chosen"]["recall"], 1e3 / m["chosen"]["ms"], "*", color=line.get_color(), markersize=12)
    ax.axvline(TARGET, color="grey", lw=0.8, ls=":")
    ax.set_yscale("log")
    ax.set_xlim(0.85, 1.0)
    ax.set_xlabel("recall@10 against exact search")
    ax.set_ylabel("queries per second (1 thread, one at a time)")
    ax.set_title("pkgsum 100k × 384: tuning sweep (queries 0–499, lines), chosen settings held out (500–999, stars)",
                 fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=130)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    corpus, queries = load_vectors(PKGSUM)
    with tempfile.TemporaryDirectory() as tmp:
        cols = []
        for n, recipe in enumerate(RECIPES):
            col, _ = elastic_collection(Path(tmp) / f"c{n}", corpus)
            start = time.perf_counter()
            col.build(recipe)
            print(f"built {recipe} in {time.perf_counter() - start:.0f} s", flush=True)
            cols.append(col)
        truth = exact_top10(cols[0], cols[0].transform.apply(queries))
        unit = corpus / np.linalg.norm(corpus, axis=1, keepdims=True)
        unit_queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        ours, theirs = our_methods(cols), faiss_methods(unit)
        faiss.omp_set_num_threads(1)
        with threadpool_limits(1):
            for m in ours:
                tune(m, queries, truth)
            for m in theirs:
                tune(m, unit_queries, truth)
            for _ in range(2):  # ours and FAISS's in turn, twice; each keeps its better pass
                for m in ours:
                    held_out(m, queries, truth)
                for m in theirs:
                    held_out(m, unit_queries, truth)
        for col in cols:
            col.close()
    methods = theirs[:1] + ours + theirs[1:]
    for m in methods:
        m.pop("col", None), m.pop("index", None), m.pop("base", None)
    report = {"data": str(PKGSUM), "items": len(corpus), "queries": len(queries), "tune": "0-499", "held_out": "500-999",
              "threads": 1, "faiss_version": faiss.__version__, "recipes": RECIPES, "target": TARGET,
              "methods": methods}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "api_pkgsum.json").write_text(json.dumps(report, indent=2, default=float))
    (args.out / "api_pkgsum.md").write_text(markdown(report))
    plot(methods, args.out / "api_pkgsum.png")
    print(markdown(report))


if __name__ == "__main__":
    main()

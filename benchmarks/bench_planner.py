"""Targets instead of knobs (issue 13): calibrate, then ask for a recall and check what real queries get.

pkgsum (100,000 × 384, ivf256@d64:d192/pq96x4fs): the collection is calibrated on 1,000 pseudo-queries
only (stored items moved by noise); for targets 0.80/0.90/0.95/0.99 the chosen plan runs on the 1,000
real queries through `Collection.search`, one at a time, one thread: achieved recall@10 against exact
search, the worst 10% of queries, ms/query, lists probed per query; FAISS HNSW32,Flat in the same run at
the smallest efSearch reaching the same achieved recall (a sweep; interpolated between the two efSearch
values around it), and our own best fixed plan at that recall (the frontier's fixed-probe points on the
real queries). SciFact (5,183 abstracts, 1,409 claims, ivf64@d64:d192/pq96x4fs): calibrated on
pseudo-queries, then on a query log of half the claims, each checked on the other half.
Writes benchmarks/results/planner.{md,json} and planner_frontier.png.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
from threadpoolctl import threadpool_limits

from common import PKGSUM, ROOT, elastic_collection, load_vectors
from matsearch import Collection
from matsearch.tuning.calibration import recall_at_k, tail
from matsearch.tuning.plot import plot_frontier

TARGETS = (0.8, 0.9, 0.95, 0.99)
RECIPE, SCIFACT_RECIPE = "ivf256@d64:d192/pq96x4fs", "ivf64@d64:d192/pq96x4fs"
EFS = (8, 12, 16, 20, 24, 32, 40, 48, 56, 64, 80, 96, 128, 160, 192, 256)
RESULTS = ROOT / "benchmarks" / "results"


def timed(search, queries) -> tuple[float, list]:
    """ms/query one at a time (the better of 2 passes) and the last pass's results."""
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        results = [search(queries[i : i + 1]) for i in range(len(queries))]
        best = min(best, (time.perf_counter() - start) / len(queries) * 1e3)
    return best, results


def faiss_curve(corpus, queries, truth_rows):
    """(efSearch, recall@10, ms/query) of FAISS HNSW32,Flat over the normalised vectors, one query at a time."""
    x = corpus / np.linalg.norm(corpus, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    index = faiss.IndexHNSWFlat(x.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    faiss.omp_set_num_threads(2)
    index.add(x)
    faiss.omp_set_num_threads(1)
    curve = []
    for ef in EFS:
        index.hnsw.efSearch = ef
        ms, found = timed(lambda one: index.search(one, 10)[1], q)
        rows = np.vstack(found)
        curve.append((ef, float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, truth_rows)])), ms))
    return curve


def at_recall(curve, recall):
    """ms/query of a (setting, recall, ms) curve at `recall`, interpolated between the points around it."""
    points = sorted((r, ms) for _, r, ms in curve)
    for (r0, m0), (r1, m1) in zip(points, points[1:]):
        if r0 <= recall <= r1:
            return m0 + (m1 - m0) * (recall - r0) / max(r1 - r0, 1e-9)
    return None


def pkgsum_run(tmp: Path) -> dict:
    corpus, queries = load_vectors(PKGSUM)
    col, _ = elastic_collection(tmp / "pkgsum", corpus)
    col.build(RECIPE)
    start = time.perf_counter()
    calibration = col.tune(sample=1000, progress=True)
    tune_seconds = time.perf_counter() - start
    plot_frontier(calibration, RESULTS / "planner_frontier.png")
    truth = col.search(queries, k=10, plan="d384").ids
    truth_rows = np.array([[int(i) for i in row] for row in truth])
    rows = []
    fixed = [p for p in calibration.frontier() if "~" not in p.plan and p.plan.startswith("p")]
    fixed_curve = []
    for point in fixed:  # our own best fixed plans, measured on the real queries
        ms, found = timed(lambda one: col.search(one, plan=point.plan), queries)
        fixed_curve.append((point.plan, float(recall_at_k(np.vstack([r.ids for r in found]), truth).mean()), ms))
    theirs = faiss_curve(corpus, queries, truth_rows)
    for target in TARGETS:
        ms, found = timed(lambda one: col.search(one, target_recall=target), queries)
        recalls = recall_at_k(np.vstack([r.ids for r in found]), truth)
        probed = np.array([r.cost.lists_probed for r in found])
        achieved = float(recalls.mean())
        hnsw_ms, ours_fixed_ms = at_recall(theirs, achieved), at_recall(fixed_curve, achieved)
        rows.append({"target": target, "plan": found[0].plan,
                     "calibrated": calibration.choose(target_recall=target).recall,
                     "achieved": achieved, "tail10": tail(recalls), "ms": ms,
                     "lists_probed_mean": float(probed.mean()),
                     "lists_probed_histogram": np.bincount(probed).tolist(),
                     "hnsw32_ms_at_same_recall": hnsw_ms, "x_hnsw32": None if hnsw_ms is None else hnsw_ms / ms,
                     "best_fixed_ms_at_same_recall": ours_fixed_ms,
                     "x_best_fixed": None if ours_fixed_ms is None else ours_fixed_ms / ms})
        print(rows[-1], flush=True)
    col.close()
    return {"rows": rows, "tune_seconds": tune_seconds, "calibration": calibration.queries,
            "frontier": [vars(p) for p in calibration.frontier()], "hnsw32": theirs, "ours_fixed": fixed_curve}


def scifact_run(tmp: Path) -> dict:
    folder = PKGSUM.parent / "scifact"
    docs, queries = load_vectors(folder)
    order = np.random.default_rng(0).permutation(len(queries))
    log, held = queries[order[: len(queries) // 2]], queries[order[len(queries) // 2 :]]
    out = {}
    for source in ("pseudo", "query log"):
        col = Collection.create(tmp / f"scifact-{source.replace(' ', '')}", model=None)
        col.add([str(i) for i in range(len(docs))], vectors=docs)
        col.build(SCIFACT_RECIPE)
        col.tune(None if source == "pseudo" else log, sample=1000, timed=50)
        truth = col.search(held, k=10, plan="d384").ids
        out[source] = []
        for target in TARGETS:
            result = col.search(held, target_recall=target)
            out[source].append({"target": target, "plan": result.plan,
                                "achieved": float(recall_at_k(result.ids, truth).mean())})
        print(source, out[source], flush=True)
        col.close()
    return out


def markdown(report) -> str:
    lines = ["pkgsum (100,000 × 384), `ivf256@d64:d192/pq96x4fs`, calibrated on 1,000 pseudo-queries "
             f"({report['pkgsum']['tune_seconds']:.0f} s); the 1,000 real queries one at a time through "
             "`Collection.search(target_recall=…)`, one thread; FAISS HNSW32,Flat and our best fixed plan "
             "interpolated to the same achieved recall in the same run.", "",
             "| target | plan chosen | calibrated | achieved | worst 10% | ms/query | lists probed | "
             "× HNSW32 QPS | × best fixed QPS |", "|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731
    for r in report["pkgsum"]["rows"]:
        lines.append(f"| {r['target']} | `{r['plan']}` | {r['calibrated']:.3f} | {r['achieved']:.3f} | "
                     f"{r['tail10']:.3f} | {r['ms']:.3f} | {r['lists_probed_mean']:.1f} | {fmt(r['x_hnsw32'])} | "
                     f"{fmt(r['x_best_fixed'])} |")
    lines += ["", "SciFact (5,183 abstracts), `ivf64@d64:d192/pq96x4fs`: achieved recall@10 on 705 held-out "
              "claims", "", "| target | calibrated on pseudo-queries | on a log of the other 704 claims |",
              "|---|---|---|"]
    for p, q in zip(report["scifact"]["pseudo"], report["scifact"]["query log"]):
        lines.append(f"| {p['target']} | {p['achieved']:.3f} (`{p['plan']}`) | {q['achieved']:.3f} (`{q['plan']}`) |")
    return "\n".join(lines) + "\n"


def main():
    with threadpool_limits(1), tempfile.TemporaryDirectory() as tmp:
        report = {"pkgsum": pkgsum_run(Path(tmp)), "scifact": scifact_run(Path(tmp)), "faiss_version": faiss.__version__}
    (RESULTS / "planner.json").write_text(json.dumps(report, indent=1))
    (RESULTS / "planner.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    sys.exit(main())

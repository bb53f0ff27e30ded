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
from matsearch import Collection, InvalidInputError
from matsearch.tuning.calibration import recall_at_k, tail
from matsearch.tuning.plot import plot_frontier

TARGETS = (0.8, 0.9, 0.95, 0.99)
RECIPE, SCIFACT_RECIPE = "ivf256@d64:d192/pq96x4fs", "ivf64@d64:d192/pq96x4fs"
BUDGETS = (0.2, 0.3, 0.5)  # max_ms settings checked (ms); one below every plan's p95 is reported as such
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


def faiss_index(corpus):
    """FAISS HNSW32,Flat over the normalised corpus (efConstruction 40, as bench_api)."""
    x = corpus / np.linalg.norm(corpus, axis=1, keepdims=True)
    index = faiss.IndexHNSWFlat(x.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    faiss.omp_set_num_threads(2)
    index.add(x)
    faiss.omp_set_num_threads(1)
    return index


def bracket(curve, recall):
    """The settings of a (setting, recall) curve just below and just at-or-above `recall` (None past its ends)."""
    below = [c for c in curve if c[1] < recall]
    above = [c for c in curve if c[1] >= recall]
    return (max(below, key=lambda c: c[1]) if below else None), (min(above, key=lambda c: c[1]) if above else None)


def interpolate(lo, hi, recall):
    """ms at `recall` on the line between two (setting, recall, ms) points."""
    if lo is None or hi is None:
        return None
    return lo[2] + (hi[2] - lo[2]) * (recall - lo[1]) / max(hi[1] - lo[1], 1e-9)


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
    hnsw = faiss_index(corpus)
    unit = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    theirs = []  # (efSearch, recall): a batch gives what one at a time gives
    for ef in EFS:
        hnsw.hnsw.efSearch = ef
        found = hnsw.search(unit, 10)[1]
        theirs.append((ef, float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth_rows)]))))
    fixed_recalls = {p.plan: recall_at_k(col.search(queries, plan=p.plan).ids, truth)
                     for p in calibration.frontier() if "~" not in p.plan and p.plan.startswith("p")}
    fixed = [(plan, float(r.mean())) for plan, r in fixed_recalls.items()]

    def faiss_ms(ef):
        hnsw.hnsw.efSearch = ef
        return timed(lambda one: hnsw.search(one, 10), unit)[0]

    rows = []
    for target in TARGETS:
        ms, found = timed(lambda one: col.search(one, target_recall=target), queries)
        recalls = recall_at_k(np.vstack([r.ids for r in found]), truth)
        achieved = float(recalls.mean())
        f_lo, f_hi = bracket(theirs, achieved)
        o_lo, o_hi = bracket(fixed, achieved)
        timings = {"ours": [ms]}
        for _ in range(2):  # in turn, each keeping its best: the VM's speed drifts within minutes
            timings["ours"].append(timed(lambda one: col.search(one, target_recall=target), queries)[0])
            for name, point, run in (("f_lo", f_lo, faiss_ms), ("f_hi", f_hi, faiss_ms),
                                     ("o_lo", o_lo, lambda plan: timed(lambda one: col.search(one, plan=plan),
                                                                      queries)[0]),
                                     ("o_hi", o_hi, lambda plan: timed(lambda one: col.search(one, plan=plan),
                                                                      queries)[0])):
                if point is not None:
                    timings.setdefault(name, []).append(run(point[0]))
        best = {name: min(values) for name, values in timings.items()}
        with_ms = lambda point, name: None if point is None else (*point, best[name])  # noqa: E731
        hnsw_ms = interpolate(with_ms(f_lo, "f_lo"), with_ms(f_hi, "f_hi"), achieved)
        fixed_ms = interpolate(with_ms(o_lo, "o_lo"), with_ms(o_hi, "o_hi"), achieved)
        probed = np.array([r.cost.lists_probed for r in found])
        fixed_tail = None if o_lo is None or o_hi is None else interpolate(
            (o_lo[0], o_lo[1], tail(fixed_recalls[o_lo[0]])), (o_hi[0], o_hi[1], tail(fixed_recalls[o_hi[0]])),
            achieved)  # the worst 10% of our fixed plans at the same mean recall
        rows.append({"target": target, "best_fixed_tail10_at_same_recall": fixed_tail, "plan": found[0].target,
                     "plans": sorted({r.plan for r in found}),
                     "achieved": achieved, "tail10": tail(recalls), "ms": best["ours"],
                     "lists_probed_mean": float(probed.mean()), "lists_probed_histogram": np.bincount(probed).tolist(),
                     "hnsw32_efs": [f_lo, f_hi], "hnsw32_ms_at_same_recall": hnsw_ms,
                     "x_hnsw32": None if hnsw_ms is None else hnsw_ms / best["ours"],
                     "best_fixed": [o_lo, o_hi], "best_fixed_ms_at_same_recall": fixed_ms,
                     "x_best_fixed": None if fixed_ms is None else fixed_ms / best["ours"]})
        print(rows[-1], flush=True)
    budgets = []
    for budget in BUDGETS:  # max_ms: the most accurate plan whose calibrated p95 fits; how many real queries fit
        try:
            col.search(queries[:1], max_ms=budget)
        except InvalidInputError as exc:  # below every plan's calibrated p95
            budgets.append({"max_ms": budget, "plan": str(exc), "within": None, "p95_ms": None, "recall": None})
            continue
        seconds = []
        for i in range(len(queries)):
            start = time.perf_counter()
            result = col.search(queries[i : i + 1], max_ms=budget)
            seconds.append(time.perf_counter() - start)
        found = col.search(queries, plan=result.plan).ids
        within = float(np.mean(np.array(seconds) * 1e3 <= budget))
        budgets.append({"max_ms": budget, "plan": result.plan, "within": within,
                        "p95_ms": float(np.percentile(seconds, 95) * 1e3),
                        "recall": float(recall_at_k(found, truth).mean())})
        print(budgets[-1], flush=True)
    col.close()
    return {"rows": rows, "budgets": budgets, "tune_seconds": tune_seconds, "calibration": calibration.queries,
            "frontier": [vars(p) for p in calibration.frontier()], "hnsw32": theirs, "ours_fixed": fixed}


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
             "| target | plans served | achieved | worst 10% (best fixed at that recall) | ms/query | lists probed | "
             "× HNSW32 QPS | × best fixed QPS |", "|---|---|---|---|---|---|---|---|"]
    fmt = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731
    fmt3 = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
    for r in report["pkgsum"]["rows"]:
        lines.append(f"| {r['target']} | {', '.join(f'`{p}`' for p in r['plans'])} | {r['achieved']:.3f} | "
                     f"{r['tail10']:.3f} ({fmt3(r['best_fixed_tail10_at_same_recall'])}) | {r['ms']:.3f} | "
                     f"{r['lists_probed_mean']:.1f} | {fmt(r['x_hnsw32'])} | "
                     f"{fmt(r['x_best_fixed'])} |")
    lines += ["", "`max_ms` on the same queries (the most accurate plan whose calibrated 95th percentile fits):", "",
              "| max_ms | plan | share of queries within | p95 ms | recall@10 |", "|---|---|---|---|---|"]
    for b in report["pkgsum"]["budgets"]:
        if b["within"] is None:
            lines.append(f"| {b['max_ms']} | {b['plan']} | – | – | – |")
            continue
        lines.append(f"| {b['max_ms']} | `{b['plan']}` | {b['within']:.3f} | {b['p95_ms']:.3f} | {b['recall']:.3f} |")
    lines += ["", "SciFact (5,183 abstracts), `ivf64@d64:d192/pq96x4fs`: achieved recall@10 on 705 held-out "
              "claims", "", "| target | calibrated on pseudo-queries | on a log of the other 704 claims |",
              "|---|---|---|"]
    for p, q in zip(report["scifact"]["pseudo"], report["scifact"]["query log"]):
        lines.append(f"| {p['target']} | {p['achieved']:.3f} (`{p['plan']}`) | {q['achieved']:.3f} (`{q['plan']}`) |")
    return "\n".join(lines) + "\n"


def main():
    with threadpool_limits(1), tempfile.TemporaryDirectory() as tmp:
        report = {"pkgsum": pkgsum_run(Path(tmp)), "scifact": scifact_run(Path(tmp)),
                  "faiss_version": faiss.__version__}
    (RESULTS / "planner.json").write_text(json.dumps(report, indent=1))
    (RESULTS / "planner.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    sys.exit(main())

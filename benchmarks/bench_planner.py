"""Targets instead of knobs (issue 13): calibrate, then ask for a recall and check what real queries get.

pkgsum (100,000 × 384, ivf256@d64:d192/pq96x4fs): the collection is calibrated on 1,000 pseudo-queries
only (spans of its texts, embedded; stored items moved by noise in a second calibration that checks only the
recall achieved); for targets 0.80/0.90/0.95/0.99 the chosen plan runs on the 1,000
real queries through `Collection.search`, one at a time, one thread: achieved recall@10 against exact
search, the worst 10% of queries, ms/query, lists probed per query; FAISS HNSW32,Flat in the same run at
the smallest efSearch reaching the same achieved recall (a sweep; interpolated between the two efSearch
values around it), and our own best fixed plan at that recall (the frontier's fixed-probe points on the
real queries; its worst 10% also at the same multiply-adds per query as the policy). SciFact (5,183 abstracts, 1,409 claims, ivf64@d64:d192/pq96x4fs): calibrated on
pseudo-queries of each kind (noise on stored vectors; spans of the texts), then on a query log of half the
claims, each checked on the other half; the span knobs are chosen on the log half (each setting's recall on
the pseudo-queries against the claims'). The same two kinds on NPL, Cranfield and pkgsum (all their queries,
none tuned on). Drift: on the span-calibrated SciFact, queries of other collections and random vectors at
target 0.95, with the guard and without. The prize (`--parts oracle`): lists per pkgsum query at the same mean
recall for the best fixed probe and for a per-query oracle. Writes benchmarks/results/planner.{md,json},
planner_frontier.png and planner_effort.png (lists probed per pkgsum query at target 0.95).
"""

from __future__ import annotations

import argparse
import heapq
import json
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
from threadpoolctl import threadpool_limits

from common import PKGSUM, ROOT, load_vectors
from matsearch import Collection, InvalidInputError, Plan
from matsearch.collection.tune import _others
from matsearch.tuning.calibration import _pareto, recall_at_k, tail
from matsearch.tuning.plot import plot_effort, plot_frontier
from matsearch.tuning.pseudo import noisy, spans

TARGETS = (0.8, 0.9, 0.95, 0.99)
RECIPE, SCIFACT_RECIPE = "ivf256@d64:d192/pq96x4fs", "ivf64@d64:d192/pq96x4fs"
BUDGETS = (0.2, 0.3, 0.5)  # max_ms settings checked (ms); one below every plan's p95 is reported as such
EFS = (8, 12, 16, 20, 24, 32, 40, 48, 56, 64, 80, 96, 128, 160, 192, 256)
RESULTS = ROOT / "benchmarks" / "results"
DATA = PKGSUM.parent
TEXT_SETS = {"npl": "ivf128@d64:d192/pq96x4fs", "cranfield": "ivf32@d64:d192/pq96x4fs"}
SPAN_GRID = ((4, 10, 0.0), (8, 20, 0.0), (8, 20, 1.0), (12, 30, 0.5), (16, 32, 0.0), (20, 40, 0.5), (20, 40, 1.0),
             (30, 60, 0.5))  # (fewest words, most words, share of sentences)


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


def at_work(points: list[tuple], work: float) -> dict | None:
    """The (tail, mean recall) of a fixed plan spending `work` multiply-adds a query, interpolated between the
    two measured `points` (work, tail, mean) around it; None outside them."""
    for (w0, t0, m0), (w1, t1, m1) in zip(points, points[1:]):
        if w0 <= work <= w1:
            share = (work - w0) / (w1 - w0) if w1 > w0 else 0.0
            return {"tail10": t0 + share * (t1 - t0), "recall": m0 + share * (m1 - m0)}
    return None


def interpolate(lo, hi, recall):
    """ms at `recall` on the line between two (setting, recall, ms) points."""
    if lo is None or hi is None:
        return None
    return lo[2] + (hi[2] - lo[2]) * (recall - lo[1]) / max(hi[1] - lo[1], 1e-9)


def beir_texts(folder: Path) -> list[str]:
    """A BEIR corpus's texts as collections embed them: title + " " + text."""
    rows = [json.loads(line) for line in (folder / "corpus.jsonl").read_text().splitlines()]
    return [f"{r.get('title') or ''} {r.get('text') or ''}".strip() for r in rows]


def text_collection(path: Path, folder: Path, recipe: str) -> tuple[Collection, list[str], np.ndarray]:
    """A collection of a shared data set's texts with their precomputed vectors (ids are row numbers), built
    with `recipe`; its texts and real query vectors."""
    corpus, queries = load_vectors(folder)
    texts = beir_texts(folder)
    col = Collection.create(path)
    col.add([str(i) for i in range(len(corpus))], texts=texts, vectors=corpus)
    col.build(recipe)
    return col, texts, queries


def achieved_recall(col: Collection, queries: np.ndarray) -> list[dict]:
    """Per target: the recall@10 the batch of `queries` gets, the plans and how many queries drifted."""
    truth = col.search(queries, k=10, plan="d384").ids
    rows = []
    for target in TARGETS:
        result = col.search(queries, target_recall=target)
        drifted = int(result.target.split("drift: ")[1].split()[0]) if "drift: " in result.target else 0
        rows.append({"target": target, "plan": result.plan, "drifted": drifted,
                     "achieved": float(recall_at_k(result.ids, truth).mean())})
    return rows


def effort_by_plan(found: list) -> dict[str, np.ndarray]:
    """Lists probed per query (one result each), grouped by the plan that served the query."""
    groups: dict[str, list[int]] = {}
    for r in found:
        groups.setdefault(r.plan.replace(" for 1 drifted", " (drifted)"), []).append(r.cost.lists_probed)
    return {plan: np.array(counts) for plan, counts in sorted(groups.items())}


def pkgsum_run(tmp: Path) -> dict:
    col, _, queries = text_collection(tmp / "pkgsum", PKGSUM, RECIPE)
    corpus = load_vectors(PKGSUM)[0]
    start = time.perf_counter()
    calibration = col.tune(sample=1000, pseudo="spans", progress=True)
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
    fixed_recalls, fixed_work = {}, {}  # our fixed-probe frontier plans on the real queries
    for point in fixed_frontier(calibration):
        if point.plan.startswith("p"):
            result = col.search(queries, plan=point.plan)
            fixed_recalls[point.plan] = recall_at_k(result.ids, truth)
            fixed_work[point.plan] = result.cost.per_query()["multiply_adds"]
    fixed = [(plan, float(r.mean())) for plan, r in fixed_recalls.items()]
    by_work = sorted((fixed_work[plan], tail(r), float(r.mean())) for plan, r in fixed_recalls.items())

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
        work = float(np.mean([r.cost.multiply_adds for r in found]))
        same_work = at_work(by_work, work)  # the best fixed plan spending what the policy spends: its tail, mean
        fixed_tail = None if o_lo is None or o_hi is None else interpolate(
            (o_lo[0], o_lo[1], tail(fixed_recalls[o_lo[0]])), (o_hi[0], o_hi[1], tail(fixed_recalls[o_hi[0]])),
            achieved)  # the worst 10% of our fixed plans at the same mean recall
        if target == 0.95:
            plot_effort(effort_by_plan(found), RESULTS / "planner_effort.png", what="IVF lists probed per query",
                        title="pkgsum, its 1,000 real queries one at a time, target_recall=0.95 (calibrated on "
                              "pseudo-queries),\nby the plan that served them")
        rows.append({"target": target, "best_fixed_tail10_at_same_recall": fixed_tail, "plan": found[0].target,
                     "multiply_adds": work, "best_fixed_at_same_multiply_adds": same_work,
                     "plans": sorted({r.plan.split("; ")[0] for r in found}),
                     "drifted": sum("drift: " in r.target for r in found),
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
    kinds = {"spans": achieved_recall(col, queries)}
    col.tune(sample=1000, timed=50, pseudo="noise")
    kinds["noise"] = achieved_recall(col, queries)
    print("pkgsum kinds", kinds, flush=True)
    col.close()
    return {"rows": rows, "budgets": budgets, "tune_seconds": tune_seconds, "calibration": calibration.queries,
            "frontier": [vars(p) for p in calibration.frontier()], "hnsw32": theirs, "ours_fixed": fixed,
            "kinds": kinds}


def scifact_run(tmp: Path) -> dict:
    col, texts, queries = text_collection(tmp / "scifact", DATA / "scifact", SCIFACT_RECIPE)
    order = np.random.default_rng(0).permutation(len(queries))
    log, held = queries[order[: len(queries) // 2]], queries[order[len(queries) // 2 :]]
    out = {}
    kinds = (("noise", dict(pseudo="noise")), ("spans", dict(pseudo="spans")), ("query log", dict(queries=log)))
    for source, how in kinds:
        calibration = col.tune(**how, sample=1000, timed=50)
        out[source] = achieved_recall(col, held)
        print(source, out[source], flush=True)
        if source == "spans":
            out["tails"] = [tails_at_same_work(col, calibration, held, target) for target in TARGETS]
            print("tails", out["tails"], flush=True)
            out["drift"] = drift_run(col, calibration, held)
            out["span_grid"] = span_grid(col, texts, [p.plan for p in calibration.points], log)
    col.close()
    return out


def fixed_frontier(calibration) -> list:
    """The calibration's Pareto frontier among the plans whose work does not vary by query (the adaptive ones
    left out: where they lead, the full frontier keeps few fixed points to compare them with)."""
    return _pareto([p for p in calibration.points if not Plan.parse(p.plan).adaptive], "ms")


def tails_at_same_work(col: Collection, calibration, queries: np.ndarray, target: float) -> dict:
    """At `target`: the worst 10% of `queries` under the policy, and under our fixed-probe frontier plans
    interpolated to the policy's multiply-adds per query (and to its mean recall)."""
    truth = col.search(queries, k=10, plan="d384").ids
    served = col.search(queries, target_recall=target)
    recalls = recall_at_k(served.ids, truth)
    work = served.cost.per_query()["multiply_adds"]
    fixed = []
    for point in fixed_frontier(calibration):
        if point.plan.startswith("p"):
            result = col.search(queries, plan=point.plan)
            r = recall_at_k(result.ids, truth)
            fixed.append((result.cost.per_query()["multiply_adds"], tail(r), float(r.mean())))
    fixed.sort()
    same_recall = bracket([(t, m) for _, t, m in fixed], float(recalls.mean()))
    return {"target": target, "plan": served.plan, "achieved": float(recalls.mean()), "tail10": tail(recalls),
            "multiply_adds": work, "best_fixed_at_same_multiply_adds": at_work(fixed, work),
            "best_fixed_tail10_at_same_recall": None if None in same_recall else interpolate(
                (None, same_recall[0][1], same_recall[0][0]), (None, same_recall[1][1], same_recall[1][0]),
                float(recalls.mean()))}


def span_grid(col: Collection, texts: list[str], plans: list[str], log: np.ndarray) -> list[dict]:
    """How far each kind of pseudo-query's recall is from the log half's claims', setting by setting (the
    calibration's grid): the knob choice, made on the log half only."""
    rows = np.sort(np.random.default_rng(0).choice(len(texts), 1000, replace=False))
    claims = plan_recalls(col, plans, log)
    variants = {"noise 0.8": (col.transform.restore(noisy(col._store.rows(rows), noise=0.8, seed=0)), None)}
    for low, high, sentences in SPAN_GRID:  # a span is scored on the items other than its own, as tune does
        cut = spans([texts[r] for r in rows], words=(low, high), sentences=sentences, seed=0)
        variants[f"spans {low}-{high} words, {sentences:.0%} sentences"] = (col.encoder.encode(cut), rows)
    out = []
    for name, (queries, origin) in variants.items():
        error = np.abs(plan_recalls(col, plans, queries, origin) - claims)
        out.append({"pseudo": name, "mean_error": float(error.mean()), "p90_error": float(np.percentile(error, 90)),
                    "max_error": float(error.max())})
        print(out[-1], flush=True)
    return out


def plan_recalls(col: Collection, plans: list[str], queries: np.ndarray, origin=None) -> np.ndarray:
    """Mean recall@10 of each plan on `queries`, batched; with `origin` (each query's item row), on the
    items other than its own."""
    mine = None if origin is None else np.array([str(r) for r in origin], dtype=object)  # ids are row numbers
    def top(plan):
        return _others(col.search(queries, k=10 + (mine is not None), plan=plan).ids, mine, 10)
    truth = top("d384")
    return np.array([recall_at_k(top(plan), truth).mean() for plan in plans])


def drift_run(col: Collection, calibration, held: np.ndarray) -> list[dict]:
    """At target 0.95: the share of each query set flagged as drifted, and its recall@10 with the guard and
    without it (the target's two plans in their share, as expected recall)."""
    cheaper, dearer, share = calibration.mix(0.95)
    sets = {"SciFact claims (held half)": held, "random vectors": np.random.default_rng(0).standard_normal(
        (300, held.shape[1])).astype(np.float32)}
    for name in ("pkgsum", "npl", "cranfield"):
        sets[f"{name} queries"] = load_vectors(DATA / name)[1][:300]
    out = []
    for name, queries in sets.items():
        truth = col.search(queries, k=10, plan="d384").ids
        result = col.search(queries, target_recall=0.95)
        drifted = int(result.target.split("drift: ")[1].split()[0]) if "drift: " in result.target else 0
        plain = [recall_at_k(col.search(queries, k=10, plan=p.plan).ids, truth).mean() for p in (dearer, cheaper)]
        out.append({"queries": name, "n": len(queries), "drifted": drifted, "guard": calibration.guard(0.95).plan,
                    "with_guard": float(recall_at_k(result.ids, truth).mean()),
                    "without": float(share * plain[0] + (1 - share) * plain[1]),
                    "ms_factor": calibration.guard(0.95).ms / dearer.ms})
        print(out[-1], flush=True)
    return out


def text_sets_run(tmp: Path) -> dict:
    """NPL and Cranfield: achieved recall on all their queries, calibrated on each kind of pseudo-query."""
    out = {}
    for name, recipe in TEXT_SETS.items():
        col, _, queries = text_collection(tmp / name, DATA / name, recipe)
        out[name] = {}
        for kind in ("noise", "spans"):
            col.tune(sample=1000, timed=50, pseudo=kind)
            out[name][kind] = achieved_recall(col, queries)
        out[name]["queries"] = len(queries)
        print(name, out[name], flush=True)
        col.close()
    return out


PROBES = (1, 2, 3, 4, 6, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 128, 160, 192, 256)


def oracle_lists(recalls: np.ndarray, target: float) -> float:
    """Mean lists per query when each query gets the fewest lists that keep the *mean* recall at `target`
    (`recalls`: queries × PROBES): lists go, one step at a time, to the query whose recall gains most per list."""
    probes = np.array(PROBES, dtype=float)
    level = np.zeros(len(recalls), dtype=int)
    total, now, heap = probes[0] * len(recalls), recalls[:, 0].sum(), []

    def offer(q):  # the query's best next step: (-gain per list, query, step)
        gains = (recalls[q, level[q] + 1 :] - recalls[q, level[q]]) / (probes[level[q] + 1 :] - probes[level[q]])
        if len(gains) and gains.max() > 0:
            heapq.heappush(heap, (-gains.max(), q, level[q] + 1 + int(gains.argmax())))

    for q in range(len(recalls)):
        offer(q)
    while now < target * len(recalls) and heap:
        _, q, step = heapq.heappop(heap)
        total += probes[step] - probes[level[q]]
        now += recalls[q, step] - recalls[q, level[q]]
        level[q] = step
        offer(q)
    return total / len(recalls)


def oracle_run(tmp: Path) -> dict:
    """The prize of a per-query probe on pkgsum's real queries: lists per query at the same mean recall for the
    best fixed probe and for an oracle that knows each query's recall at every probe (the re-rank of the 0.95
    plans), and the lists each query needs to reach its own best recall."""
    corpus, queries = load_vectors(PKGSUM)
    col = Collection.create(tmp / "oracle")
    col.add([str(i) for i in range(len(corpus))], vectors=corpus)
    col.build(RECIPE)
    truth = col.search(queries, k=10, plan="d384").ids
    recalls = np.stack([recall_at_k(col.search(queries, plan=f"p{n}@d192:100>d256:20>d384").ids, truth)
                        for n in PROBES], axis=1)
    col.close()
    means, rows = recalls.mean(axis=0), []
    for target in (0.9, 0.95):
        step = int(np.argmax(means >= target))
        fixed = PROBES[step - 1] + (target - means[step - 1]) / (means[step] - means[step - 1]) * (
            PROBES[step] - PROBES[step - 1])
        rows.append({"target": target, "fixed_lists": float(fixed), "oracle_lists": oracle_lists(recalls, target)})
    own_best = np.array([PROBES[int(np.argmax(r >= r.max() - 1e-9))] for r in recalls])
    return {"rows": rows, "own_best_percentiles": {str(p): float(np.percentile(own_best, p)) for p in (50, 75, 90)},
            "own_best_mean": float(own_best.mean())}


def oracle_markdown(report: dict) -> list[str]:
    if "oracle" not in report:
        return []
    oracle, policy = report["oracle"], {r["target"]: r for r in report["pkgsum"]["rows"]}
    lines = ["", "The prize of a per-query probe (pkgsum's real queries, `p<n>@d192:100>d256:20>d384`): IVF lists per "
             "query at the same mean recall@10 (the policy: with the re-rank it serves there)", "",
             "| mean recall | best fixed probe | the policy | per-query oracle |",
             "|---|---|---|---|"]
    for r in oracle["rows"]:
        served = policy.get(r["target"])
        lines.append(f"| {r['target']} | {r['fixed_lists']:.1f} | "
                     f"{'–' if served is None else format(served['lists_probed_mean'], '.1f')} | {r['oracle_lists']:.1f} |")
    p = oracle["own_best_percentiles"]
    return lines + ["", f"Lists a query needs to reach its own best recall: median {p['50']:.0f}, 75th percentile "
                    f"{p['75']:.0f}, 90th {p['90']:.0f}, mean {oracle['own_best_mean']:.1f}. The oracle meets the mean "
                    "by giving few lists to the queries that need many, which a rule that leaves no query behind "
                    "must not do."]


def markdown(report) -> str:
    lines = ["pkgsum (100,000 × 384), `ivf256@d64:d192/pq96x4fs`, calibrated on 1,000 pseudo-queries "
             f"({report['pkgsum']['calibration']}; {report['pkgsum']['tune_seconds']:.0f} s); the 1,000 real queries "
             "one at a time through `Collection.search(target_recall=…)`, one thread; FAISS HNSW32,Flat and our "
             "best fixed plan interpolated to the same achieved recall in the same run; the worst 10% of queries "
             "against our best fixed plan at the same recall and at the same multiply-adds per query.", "",
             "| target | plans served | achieved | worst 10% (fixed: same recall / same work) | ms/query | "
             "lists probed | × HNSW32 QPS | × best fixed QPS |", "|---|---|---|---|---|---|---|---|"]
    fmt = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731
    fmt3 = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
    for r in report["pkgsum"]["rows"]:
        drifted = f" (drift: {r['drifted']} searched again)" if r["drifted"] else ""
        lines.append(f"| {r['target']} | {', '.join(f'`{p}`' for p in r['plans'])}{drifted} | {r['achieved']:.3f} | "
                     f"{r['tail10']:.3f} ({fmt3(r['best_fixed_tail10_at_same_recall'])} / "
                     f"{fmt3((r.get('best_fixed_at_same_multiply_adds') or {}).get('tail10'))}) | {r['ms']:.3f} | "
                     f"{r['lists_probed_mean']:.1f} | {fmt(r['x_hnsw32'])} | "
                     f"{fmt(r['x_best_fixed'])} |")
    lines += ["", "`max_ms` on the same queries (the most accurate plan whose calibrated 95th percentile fits):", "",
              "| max_ms | plan | share of queries within | p95 ms | recall@10 |", "|---|---|---|---|---|"]
    for b in report["pkgsum"]["budgets"]:
        if b["within"] is None:
            lines.append(f"| {b['max_ms']} | {b['plan']} | – | – | – |")
            continue
        lines.append(f"| {b['max_ms']} | `{b['plan']}` | {b['within']:.3f} | {b['p95_ms']:.3f} | {b['recall']:.3f} |")
    lines += oracle_markdown(report)
    return "\n".join(lines + scifact_markdown(report["scifact"]) + kinds_markdown(report)) + "\n"


def scifact_markdown(sci: dict) -> list[str]:
    lines = ["", "SciFact (5,183 abstracts), `ivf64@d64:d192/pq96x4fs`: achieved recall@10 on 705 held-out claims, "
             "calibrated on each kind of queries (queries the drift guard searched again, if any, in brackets)", "",
             "| target | pseudo-queries: noise | pseudo-queries: text spans | a log of the other 704 claims |",
             "|---|---|---|---|"]
    cell = lambda r: f"{r['achieved']:.3f}" + (f" [{r['drifted']}]" if r["drifted"] else "")  # noqa: E731
    for p, q, r in zip(sci["noise"], sci["spans"], sci["query log"]):
        lines.append(f"| {p['target']} | {cell(p)} | {cell(q)} | {cell(r)} |")
    if "tails" in sci:
        lines += ["", "The worst 10% of the held-out claims under the span-calibrated policy, against our fixed-probe "
                  "frontier plans at the same multiply-adds per query and at the same mean recall", "",
                  "| target | plans served | achieved | worst 10% | fixed, same work: worst 10% (mean) | "
                  "fixed, same recall: worst 10% |", "|---|---|---|---|---|---|"]
        for t in sci["tails"]:
            same = t["best_fixed_at_same_multiply_adds"]
            fixed = "–" if same is None else f"{same['tail10']:.3f} ({same['recall']:.3f})"
            at_recall = t["best_fixed_tail10_at_same_recall"]
            lines.append(f"| {t['target']} | {t['plan'].split(';')[0]} | {t['achieved']:.3f} | {t['tail10']:.3f} | "
                         f"{fixed} | {'–' if at_recall is None else f'{at_recall:.3f}'} |")
    lines += ["", "Span knobs, chosen on the log half (704 claims) only: each calibration setting's recall@10 on "
              "1,000 pseudo-queries against the claims' (absolute difference over the settings)", "",
              "| pseudo-queries | mean | 90th percentile | max |", "|---|---|---|---|"]
    for g in sci["span_grid"]:
        lines.append(f"| {g['pseudo']} | {g['mean_error']:.4f} | {g['p90_error']:.4f} | {g['max_error']:.4f} |")
    guard = sci["drift"][0]["guard"]
    lines += ["", "Drift at target 0.95 on the span-calibrated SciFact: queries whose top-1 score is below "
              f"calibration's 1st percentile are searched again with `{guard}` "
              f"({sci['drift'][0]['ms_factor']:.2f}x the calibrated ms of the target's dearer plan)", "",
              "| queries | n | flagged | recall@10 with the guard | without |", "|---|---|---|---|---|"]
    for d in sci["drift"]:
        lines.append(f"| {d['queries']} | {d['n']} | {d['drifted'] / d['n']:.1%} | {d['with_guard']:.3f} | "
                     f"{d['without']:.3f} |")
    return lines


def kinds_markdown(report: dict) -> list[str]:
    lines = ["", "Pseudo-query kinds on collections no knob was tuned on: achieved recall@10 on all their queries "
             "(pkgsum: the same collection, holding its texts, calibrated again with timed=50)", "",
             "| collection | queries | pseudo-queries | " + " | ".join(str(t) for t in TARGETS) + " |",
             "|---|---|---|" + "---|" * len(TARGETS)]
    sets = {"pkgsum": dict(report["pkgsum"]["kinds"], queries=1000), **report["text_sets"]}
    for name, kinds in sets.items():
        for kind in ("noise", "spans"):
            lines.append(f"| {name} | {kinds['queries']} | {kind} | "
                         + " | ".join(f"{r['achieved']:.3f}" for r in kinds[kind]) + " |")
    return lines + ["", "Effort per query at target 0.95 (pkgsum, the adaptive policy): planner_effort.png"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}; the "
                        "others are taken from the last results/planner.json")
    parts = parser.parse_args().parts.split(",")
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown parts {unknown}; choose from {', '.join(PARTS)}")
    path = RESULTS / "planner.json"
    report = json.loads(path.read_text()) if path.exists() else {}
    with threadpool_limits(1), tempfile.TemporaryDirectory() as tmp:
        for part in parts:
            report[part] = PARTS[part](Path(tmp))
    report["faiss_version"] = faiss.__version__
    path.write_text(json.dumps(report, indent=1))
    (RESULTS / "planner.md").write_text(markdown(report))
    print(markdown(report))


PARTS = {"pkgsum": pkgsum_run, "scifact": scifact_run, "text_sets": text_sets_run, "oracle": oracle_run}


if __name__ == "__main__":
    sys.exit(main())

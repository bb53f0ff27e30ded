"""Sharded collections on Ray: ingest and query throughput with 1, 2, 4 (and 8) shards on one machine.

pkgsum's 100k MiniLM vectors replicated to N items with Gaussian noise and re-normalised (as bench_scale.py
does; ids zero-padded numbers), written once to a memory-mapped .npy. For each shard count S a
`ShardedCollection` of S shards (one Ray actor each, on this machine) is made: the items added 100k at a
time through `add` (each call writes the shards in parallel), the recipe trained once on a 100k sample and
built on every shard, then searched with one plan — a batch of all the queries in one call (throughput) and one
query per call (latency; Ray's overhead per query is the wall time beyond the slowest shard's own search). At
S = 1 the shard's folder is also opened as a local `Collection` in this process: the same index, no Ray, one
thread as each actor has, which gives the overhead of the sharded path per query. Recall@10 is against exact search over all N items.
A shard's search time at N/S items for S = 1, 2, 4 is fitted as a fixed part plus a part per item held
(`model_check`); that model's prediction for S = 8 is printed beside what S = 8 measured (the scale-out model's
check, README). `--refit` refits it on the saved runs.
Writes benchmarks/results/distributed.json and .md.

    .venv/bin/python benchmarks/bench_distributed.py --items 1000000 --shards 1 2 4 8
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import faiss
import numpy as np
import ray
from common import PKGSUM, ROOT, load_vectors, recall_at_10
from threadpoolctl import threadpool_limits

from matsearch import Collection
from matsearch.distributed import ShardedCollection
from matsearch.distributed.layout import shard_folder

RECIPE = "ivf1024@d64:d128/pq64x4fs"
PLAN = "p32@d128:200>d384"
_CHUNK = 100_000
_NOISE = 0.02  # per dim, as bench_scale.py


def replicated(path: Path, items: int) -> np.ndarray:
    """pkgsum replicated to `items` rows with noise, made once and memory-mapped."""
    if not path.exists():
        corpus, _ = load_vectors(PKGSUM)
        rng = np.random.default_rng(0)
        out = np.lib.format.open_memmap(path.with_suffix(".tmp.npy"), mode="w+", dtype=np.float32,
                                        shape=(items, corpus.shape[1]))
        for lo in range(0, items, _CHUNK):
            hi = min(lo + _CHUNK, items)
            rows = corpus[np.arange(lo, hi) % len(corpus)] + _NOISE * rng.standard_normal((hi - lo, corpus.shape[1]),
                                                                                         dtype=np.float32)
            out[lo:hi] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
        out.flush()
        del out
        path.with_suffix(".tmp.npy").rename(path)
    return np.load(path, mmap_mode="r")


def memory(actor) -> int:
    """RssAnon of an actor's process (its heap: the index; the store is mapped and not counted)."""
    status = ray.get(actor.__ray_call__.remote(lambda _: open("/proc/self/status").read()))
    return next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("RssAnon"))


def one_at_a_time(search, queries: np.ndarray) -> tuple[float, list]:
    search(queries[0])
    start = time.perf_counter()
    results = [search(q) for q in queries]
    return (time.perf_counter() - start) / len(queries), results


def run(folder: Path, vectors: np.ndarray, shards: int, queries: np.ndarray, truth: np.ndarray, single: int) -> dict:
    path = folder / f"s{shards}"
    shutil.rmtree(path, ignore_errors=True)
    ids = np.char.zfill(np.arange(len(vectors)).astype(str), 10).tolist()
    row = {"shards": shards, "items": len(vectors)}
    with ShardedCollection.create(path, shards=shards, model=None) as col:
        start = time.perf_counter()
        for lo in range(0, len(vectors), _CHUNK):
            col.add(ids[lo : lo + _CHUNK], vectors=np.asarray(vectors[lo : lo + _CHUNK]))
        row["ingest_seconds"] = time.perf_counter() - start
        row["ingest_items_per_s"] = len(vectors) / row["ingest_seconds"]
        start = time.perf_counter()
        col.build(RECIPE)
        row["build_seconds"] = time.perf_counter() - start
        col.search(queries[:10], k=10, plan=PLAN)
        start = time.perf_counter()
        batch = col.search(queries, k=10, plan=PLAN)
        row["batch_qps"] = len(queries) / (time.perf_counter() - start)
        row["batch_overhead_ms_per_query"] = batch.overhead_seconds / len(queries) * 1e3
        row["batch_shard_ms_per_query"] = [s / len(queries) * 1e3 for s in batch.shard_seconds]
        row["recall@10"] = recall_at_10(batch.ids[: len(truth)], truth)
        seconds, results = one_at_a_time(lambda q: col.search(q, k=10, plan=PLAN), queries[:single])
        row["single_ms"] = seconds * 1e3
        row["single_overhead_ms"] = float(np.mean([r.overhead_seconds for r in results])) * 1e3
        row["single_shard_ms"] = float(np.mean([max(r.shard_seconds) for r in results])) * 1e3
        info = col.info()
        row["index_bytes_per_vector"] = info["index_bytes_per_vector"]
        row["on_disk_bytes_per_vector"] = info["on_disk_bytes_per_vector"]
        row["actor_rss_anon_bytes"] = [memory(col.actor(s)) for s in range(shards)]
    if shards == 1:  # the same shard, searched in this process without Ray, on one thread as an actor is
        faiss.omp_set_num_threads(1)
        with Collection.open(shard_folder(path, 0)) as local, threadpool_limits(1):
            local.search(queries[:10], k=10, plan=PLAN)
            start = time.perf_counter()
            found = local.search(queries, k=10, plan=PLAN)
            row["local_batch_qps"] = len(queries) / (time.perf_counter() - start)
            row["local_recall@10"] = recall_at_10(found.ids[: len(truth)], truth)
            row["local_single_ms"] = one_at_a_time(lambda q: local.search(q, k=10, plan=PLAN), queries[:single])[0] * 1e3
    shutil.rmtree(path, ignore_errors=True)
    print(json.dumps(row), flush=True)
    return row


def exact_truth(vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Exact top-10 ids by inner product over every item (the vectors are unit length)."""
    best = np.full((len(queries), 10), -np.inf, dtype=np.float32), np.zeros((len(queries), 10), dtype=np.int64)
    for lo in range(0, len(vectors), _CHUNK):
        scores = queries @ np.asarray(vectors[lo : lo + _CHUNK]).T
        merged = np.hstack([best[0], scores])
        rows = np.hstack([best[1], np.arange(lo, lo + scores.shape[1])[None].repeat(len(queries), 0)])
        order = np.argsort(-merged, axis=1)[:, :10]
        best = np.take_along_axis(merged, order, 1), np.take_along_axis(rows, order, 1)
    return np.char.zfill(best[1].astype(str), 10)


def model_check(rows: list[dict], cores: int) -> dict:
    """The scale-out model, fitted on S ≤ 4 and checked on S = 8. A shard's CPU time per query in a batch is
    a + b·(items per shard): a fixed part (the probe, the code tables, the re-rank of the kept candidates) and a
    scan that grows with the shard (its wall time measured in the actor, times min(1, cores/S) for S actors
    sharing the cores); Ray's overhead per query grows with S. On one machine a batch costs
    S·t(N/S)/min(S, cores) + overhead per query."""
    fit = [r for r in rows if r["shards"] <= 4]
    cpu = np.array([np.mean(r["batch_shard_ms_per_query"]) * min(1.0, cores / r["shards"]) for r in fit])
    sizes = np.array([r["items"] / r["shards"] for r in fit])
    b, a = np.polyfit(sizes / 1e6, cpu, 1)
    slope, base = np.polyfit([r["shards"] for r in fit], [r["batch_overhead_ms_per_query"] for r in fit], 1)
    out = {"fixed_ms": float(a), "ms_per_million_items": float(b), "overhead_ms_base": float(base),
           "overhead_ms_per_shard": float(slope)}
    for r in rows:
        if r["shards"] == 8:
            shard_ms = a + b * r["items"] / 8e6
            wall = 8 * shard_ms / min(8, cores) + base + slope * 8
            out.update({"predicted_shard_cpu_ms": float(shard_ms),
                        "measured_shard_cpu_ms": float(np.mean(r["batch_shard_ms_per_query"]) * min(1.0, cores / 8)),
                        "predicted_batch_qps": float(1e3 / wall), "measured_batch_qps": r["batch_qps"]})
    return out


def write(rows: list[dict], check: dict, ray_init: float, out: Path) -> None:
    out.with_suffix(".json").write_text(json.dumps({"recipe": RECIPE, "plan": PLAN, "ray_init_seconds": ray_init,
                                                    "runs": rows, "model_check": check}, indent=2))
    lines = [f"{rows[0]['items']:,} items (pkgsum replicated with noise), recipe `{RECIPE}`, plan `{PLAN}`, k=10, "
             f"2-core VM; `ray.init` {ray_init:.1f} s.", "",
             "| shards | ingest items/s | build s | batch QPS | batch overhead ms/query | one-query ms | its Ray "
             "overhead ms | slowest shard ms | recall@10 | index B/item | actor heap MiB (each) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        heap = ", ".join(f"{b / 2**20:.0f}" for b in r["actor_rss_anon_bytes"])
        lines.append(f"| {r['shards']} | {r['ingest_items_per_s']:,.0f} | {r['build_seconds']:.1f} | "
                     f"{r['batch_qps']:,.0f} | {r['batch_overhead_ms_per_query']:.3f} | {r['single_ms']:.2f} | "
                     f"{r['single_overhead_ms']:.2f} | {r['single_shard_ms']:.2f} | {r['recall@10']:.3f} | "
                     f"{r['index_bytes_per_vector']:.1f} | {heap} |")
    local = rows[0] if rows[0]["shards"] == 1 else None
    if local and "local_single_ms" in local:
        lines += ["", f"Local `Collection` on the 1-shard folder, same index and plan, no Ray: batch "
                      f"{local['local_batch_qps']:,.0f} QPS, one query {local['local_single_ms']:.2f} ms, recall@10 "
                      f"{local['local_recall@10']:.3f}; the sharded path at 1 shard adds "
                      f"{local['single_ms'] - local['local_single_ms']:.2f} ms to one query and "
                      f"{1e3 / local['batch_qps'] - 1e3 / local['local_batch_qps']:.3f} ms per query in a batch."]
    if "predicted_batch_qps" in check:
        lines += ["", f"Model (fitted on 1, 2, 4 shards): a shard's CPU time per query in a batch is "
                      f"{check['fixed_ms']:.3f} ms + {check['ms_per_million_items']:.3f} ms per million items it "
                      f"holds; Ray adds {check['overhead_ms_base']:.3f} + {check['overhead_ms_per_shard']:.4f}·S ms "
                      f"per query. S = 8: predicted {check['predicted_shard_cpu_ms']:.3f} ms per shard, measured "
                      f"{check['measured_shard_cpu_ms']:.3f}; predicted {check['predicted_batch_qps']:,.0f} batch "
                      f"QPS, measured {check['measured_batch_qps']:,.0f}."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--queries", type=int, default=1000, help="queries in the batch")
    parser.add_argument("--single", type=int, default=200, help="queries searched one per call")
    parser.add_argument("--truth", type=int, default=200, help="queries recall is measured on")
    parser.add_argument("--folder", type=Path, default=Path("/tmp/matsearch-distributed"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "distributed")
    parser.add_argument("--cores", type=int, default=2, help="CPUs Ray is given (the model divides work by them)")
    parser.add_argument("--refit", action="store_true", help="only refit the model on the runs in --out's JSON")
    args = parser.parse_args()
    if args.refit:
        saved = json.loads(args.out.with_suffix(".json").read_text())
        write(saved["runs"], model_check(saved["runs"], args.cores), saved["ray_init_seconds"], args.out)
        print(args.out.with_suffix(".md").read_text())
        return
    args.folder.mkdir(parents=True, exist_ok=True)
    vectors = replicated(args.folder / f"vectors-{args.items}.npy", args.items)
    queries = load_vectors(PKGSUM, args.queries)[1]
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    truth = exact_truth(vectors, queries[: args.truth])
    start = time.perf_counter()
    ray.init(num_cpus=args.cores, include_dashboard=False, log_to_driver=False)
    ray_init = time.perf_counter() - start
    rows = [run(args.folder, vectors, s, queries, truth, args.single) for s in args.shards]
    ray.shutdown()
    check = model_check(rows, args.cores) if len([r for r in rows if r["shards"] <= 4]) >= 2 else {}
    write(rows, check, ray_init, args.out)
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()

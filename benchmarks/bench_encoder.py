"""Query encoding speed: text in, ids out through `Collection.search`, for each encoder runtime.

On SciFact, NPL and Cranfield, each judged query is searched by text one at a time on one thread
(`torch.set_num_threads(1)`, onnxruntime `intra_op_num_threads=1`), best of three passes, then in
batches of 64; the documents are the shared corpus vectors, which sentence-transformers made on
PyTorch (today's path), so the nDCG@10 of a runtime measures its query vectors alone. The runtimes
named by `--documents` also encode the corpus (on every core) and are scored with their own documents
and queries: whether they can encode documents too. Also timed: each runtime's first use on a fresh
cache (export and quantisation).
Writes benchmarks/results/encoder.{json,md}.

    .venv/bin/python benchmarks/bench_encoder.py --documents torch,onnx-int8
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import ROOT, per_query_seconds

from matsearch import Collection, Encoder
from matsearch.data import load_beir
from matsearch.encoder import DEFAULT_MODEL, RUNTIMES
from matsearch.encoder_cache import CACHE_ENV
from matsearch.eval.metrics import ndcg_at_k

DATA = ROOT.parent / "shared" / "data"
BATCH = 64


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="scifact,npl,cranfield")
    parser.add_argument("--runtimes", default=",".join(RUNTIMES[::-1]), help="the first is the reference")
    parser.add_argument("--documents", default="", help="runtimes that also encode each corpus, comma-separated")
    parser.add_argument("--vectors", type=Path, default=Path(tempfile.gettempdir()) / "bench_encoder",
                        help="corpus vectors kept here between runs")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    runtimes = args.runtimes.split(",")
    report = {"machine": machine(), "first_use_seconds": first_use(runtimes), "datasets": {}}
    for name in args.datasets.split(","):
        report["datasets"][name] = dataset_rows(name, runtimes, args)
        print(json.dumps({name: report["datasets"][name]}, indent=1), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "encoder.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "encoder.md").write_text(markdown(report, runtimes))
    print(markdown(report, runtimes))


def dataset_rows(name: str, runtimes: list[str], args) -> dict:
    dataset = load_beir(DATA / name)
    judged = [n for n, qid in enumerate(dataset.query_ids) if qid in dataset.qrels]
    queries = [dataset.query_texts[n] for n in judged]
    qrels = [dataset.qrels[dataset.query_ids[n]] for n in judged]
    reference_docs = np.load(DATA / name / "corpus.minilm.f16.npy").astype(np.float32)
    assert (DATA / name / "corpus.ids.txt").read_text().split() == dataset.doc_ids  # the vectors' row order
    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        for runtime in runtimes:
            row = rows[runtime] = {}
            with collection(Path(folder) / runtime, dataset.doc_ids, reference_docs) as col:
                col.encoder = Encoder(runtime=runtime, threads=1, batch_size=BATCH)
                torch.set_num_threads(1)
                seconds, results = per_query_seconds(lambda q: col.search(q, k=10, mode="dense"), queries)
                row["ms_per_query"] = 1000 * seconds
                row["ndcg@10"] = mean_ndcg([r.ids[0] for r in results], qrels)
                start = time.perf_counter()
                for lo in range(0, len(queries), BATCH):
                    col.search(queries[lo : lo + BATCH], k=10, mode="dense")
                row["ms_per_query_batch64"] = 1000 * (time.perf_counter() - start) / len(queries)
            if runtime in args.documents.split(","):
                docs = corpus_vectors(name, dataset, runtime, args.vectors)
                with collection(Path(folder) / f"{runtime}-docs", dataset.doc_ids, docs) as col:
                    col.encoder = Encoder(runtime=runtime, threads=1, batch_size=BATCH)
                    found = col.search(queries, k=10, mode="dense").ids
                row["ndcg@10_own_documents"] = mean_ndcg(found, qrels)
            elif runtime == "torch":
                row["ndcg@10_own_documents"] = row["ndcg@10"]  # the shared vectors are PyTorch's
    for row in rows.values():
        row["speedup"] = rows[runtimes[0]]["ms_per_query"] / row["ms_per_query"]
        row["ndcg@10_change"] = row["ndcg@10"] - rows[runtimes[0]]["ndcg@10"]
    return {"documents": len(dataset.doc_ids), "queries": len(queries), "runtimes": rows}


def corpus_vectors(name: str, dataset, runtime: str, folder: Path) -> np.ndarray:
    """The corpus encoded by `runtime` on every core (kept in `folder`, as a run takes minutes)."""
    path = folder / f"{name}.{runtime}.npy"
    if not path.exists():
        torch.set_num_threads(os.cpu_count())
        start = time.perf_counter()
        vectors = Encoder(runtime=runtime, batch_size=BATCH).encode(dataset.doc_texts, progress=True)
        print(f"{name}: {runtime} encoded {len(vectors)} documents in {time.perf_counter() - start:.0f} s "
              f"({os.cpu_count()} threads)", flush=True)
        folder.mkdir(parents=True, exist_ok=True)
        np.save(path, vectors)
    return np.load(path)


def collection(folder: Path, ids: list[str], vectors: np.ndarray) -> Collection:
    col = Collection.create(folder, model=DEFAULT_MODEL, transform="none")
    col.add(ids, vectors=vectors)
    return col


def mean_ndcg(ranked, qrels) -> float:
    return float(np.mean([ndcg_at_k([i for i in ids if i is not None], rel, 10) for ids, rel in zip(ranked, qrels)]))


def first_use(runtimes: list[str]) -> dict:
    """Seconds from a fresh cache to the first vector, and from a warm cache (a new process's load)."""
    seconds = {}
    saved = os.environ.get(CACHE_ENV)
    with tempfile.TemporaryDirectory() as cache:
        os.environ[CACHE_ENV] = cache
        try:
            for runtime in [r for r in runtimes if r != "torch"]:
                timings = []
                for _ in range(2):
                    start = time.perf_counter()
                    Encoder(runtime=runtime).encode(["warm"])
                    timings.append(time.perf_counter() - start)
                seconds[runtime] = {"fresh_cache": timings[0], "warm_cache": timings[1]}
        finally:
            if saved is None:
                del os.environ[CACHE_ENV]
            else:
                os.environ[CACHE_ENV] = saved
    start = time.perf_counter()
    Encoder(runtime="torch").encode(["warm"])
    seconds["torch"] = {"warm_cache": time.perf_counter() - start}
    return seconds


def machine() -> dict:
    flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    model = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    return {"cpu": model.split(":", 1)[1].strip(), "cores": os.cpu_count(), "avx512_vnni": "avx512_vnni" in flags,
            "torch": torch.__version__, "onnxruntime": __import__("onnxruntime").__version__}


def markdown(report: dict, runtimes: list[str]) -> str:
    lines = [f"Machine: {report['machine']}", "",
             "| dataset | runtime | ms/query (1 thread) | speed-up | ms/query in batches of 64 | nDCG@10 | change |"
             " nDCG@10, own documents |", "|---|---|---|---|---|---|---|---|"]
    for name, result in report["datasets"].items():
        for runtime in runtimes:
            row = result["runtimes"][runtime]
            own = row.get("ndcg@10_own_documents")
            lines.append(f"| {name} ({result['documents']:,} docs, {result['queries']} queries) | {runtime} | "
                         f"{row['ms_per_query']:.2f} | {row['speedup']:.1f}x | {row['ms_per_query_batch64']:.2f} | "
                         f"{row['ndcg@10']:.4f} | {row['ndcg@10_change']:+.4f} | "
                         f"{'' if own is None else f'{own:.4f}'} |")
    lines += ["", "First use (seconds to the first vector):", ""]
    lines += [f"- {runtime}: " + ", ".join(f"{k.replace('_', ' ')} {v:.1f} s" for k, v in seconds.items())
              for runtime, seconds in report["first_use_seconds"].items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

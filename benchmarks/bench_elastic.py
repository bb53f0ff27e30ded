"""How much of full-dim nDCG@10 each transform keeps at short prefixes, on SciFact, NPL and Cranfield.

Truncation, PCA and the unsupervised adapter, each fitted on the corpus vectors
only (no queries, no qrels); queries are the collections' precomputed MiniLM
vectors, searched exactly on each prefix, re-normalised. Where a collection has a
training split (SciFact's qrels/train.tsv), the adapter supervised by its (query,
relevant document) pairs is reported as a row of its own; the test split is never
read for training. Writes JSON and a markdown table.

    .venv/bin/python benchmarks/bench_elastic.py
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from common import ROOT

from matsearch.data import load_beir
from matsearch.eval.metrics import ndcg_at_k
from matsearch.matryoshka import normalize
from matsearch.transform import Transform

DATA = ROOT.parent / "shared" / "data"
NESTING = [16, 32, 64, 128, 256]


def ndcg_by_dim(docs, queries, dataset, doc_ids, dims) -> list[float]:
    """Mean nDCG@10 of exact search on each prefix dim, over the judged queries."""
    judged = [n for n, q in enumerate(dataset.query_ids) if q in dataset.qrels]
    out = []
    for d in dims:
        a, b = normalize(docs[:, :d]), normalize(queries[judged, :d])
        top = np.argsort(-(b @ a.T), axis=1)[:, :10]
        out.append(float(np.mean([ndcg_at_k([doc_ids[i] for i in t], dataset.qrels[dataset.query_ids[n]], 10)
                                  for t, n in zip(top, judged)])))
    return out


def train_pairs(folder, docs, queries, doc_ids) -> tuple[np.ndarray, np.ndarray] | None:
    """(query vectors, relevant document vectors) from the training split's qrels, if there is one."""
    if not (folder / "qrels" / "train.tsv").is_file():
        return None
    train = load_beir(folder, split="train")
    query_row = {q: n for n, q in enumerate(train.query_ids)}
    doc_row = {d: n for n, d in enumerate(doc_ids)}
    rows = [(query_row[q], doc_row[d]) for q, judged in train.qrels.items() for d, grade in judged.items()
            if grade > 0 and q in query_row and d in doc_row]
    return queries[[q for q, _ in rows]], docs[[d for _, d in rows]]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--collections", nargs="+", default=["scifact", "npl", "cranfield"])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    dims = NESTING + [384]
    report = {}
    for name in args.collections:
        folder = DATA / name
        dataset = load_beir(folder)
        docs = np.load(folder / "corpus.minilm.f16.npy").astype(np.float32)
        queries = np.load(folder / "queries.minilm.f16.npy").astype(np.float32)
        doc_ids = (folder / "corpus.ids.txt").read_text().split()
        rows = {"truncation": ndcg_by_dim(docs, queries, dataset, doc_ids, dims)}
        methods = [("pca", None), ("adapter", None)]
        pairs = train_pairs(folder, docs, queries, doc_ids)
        if pairs is not None:
            methods.append(("adapter + train pairs", pairs))
        for kind, supervision in methods:
            start = time.perf_counter()
            transform = Transform(kind=kind.split()[0]).fit(docs, nesting=NESTING, pairs=supervision, progress=True)
            seconds = time.perf_counter() - start
            rows[kind] = ndcg_by_dim(transform.apply(docs), transform.apply(queries), dataset, doc_ids, dims)
            print(f"{name} {kind}: fitted in {seconds:.1f}s", flush=True)
        full = rows["truncation"][-1]
        report[name] = {"dims": dims, "ndcg@10": rows, "kept": {k: [v / full for v in r] for k, r in rows.items()}}
        for kind, kept in report[name]["kept"].items():
            print(f"{name:10s} {kind:11s} " + " ".join(f"d{d}: {100 * k:5.1f}%" for d, k in zip(dims, kept)), flush=True)
    (args.out / "elastic.json").write_text(json.dumps(report, indent=2))
    (args.out / "elastic.md").write_text(markdown(report))
    print(markdown(report))


def markdown(report) -> str:
    dims = next(iter(report.values()))["dims"]
    lines = ["| collection | transform | " + " | ".join(f"{d}-d" for d in dims) + " |",
             "|---|---|" + "---|" * len(dims)]
    for name, entry in report.items():
        for kind, kept in entry["kept"].items():
            lines.append(f"| {name} | {kind} | " + " | ".join(f"{100 * k:.1f}%" for k in kept) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

"""Does the adapter keep its promise on collections it was not designed on?

Per prefix dim (16/32/64/128), the share of full-dim quality kept by exact search on the
re-normalised prefix for PCA, the adapter as it was (fitted on every document, no
validation) and the validated adapter (fitted on all but held-back documents, shrunk
toward PCA or replaced by it on their evidence), each fitted on corpus vectors only.
SciFact, NPL and Cranfield are scored by nDCG@10 on their test qrels. Two held-out
collections, fixed before any run and never tuned on:

- npl-3k: 3,000 NPL documents drawn at random (numpy default_rng(16)), with NPL's
  test queries, qrels cut to those documents, queries left with none dropped; nDCG@10.
- scifact-2k: 2,000 SciFact documents drawn at random (default_rng(16)), with SciFact's
  test claims, qrels cut to those documents, claims left with none dropped; nDCG@10.
  Made after the first run, to check the final version on data nobody had looked at.
- npl-2k, pkgsum-3k/17: drawn as above with default_rng(17) (2,000 NPL documents; 3,000
  summaries), made after the validation margin was set from the other four, and looked at
  only with the final version.
- pkgsum-3k: 3,000 pkgsum corpus summaries drawn at random (default_rng(16)), with
  pkgsum's 1,000 queries; the truth is each query's exact full-dim top 10 within the
  slice, so the score is ANN recall@10 (full dim = 100%).

    .venv/bin/python benchmarks/bench_adapter_generalises.py
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from bench_elastic import ndcg_by_dim
from common import PKGSUM, ROOT, load_vectors

from matsearch.data import load_beir
from matsearch.matryoshka import normalize
from matsearch.train.adapter import fit_adapter
from matsearch.transform import Transform

DATA = ROOT.parent / "shared" / "data"
DIMS = [16, 32, 64, 128]
SLICE_SEED = 16


def beir_collection(name: str):
    """(docs, queries, score_by_dim) for a shared BEIR collection, scored by nDCG@10."""
    folder = DATA / name
    dataset = load_beir(folder)
    docs, queries = load_vectors(folder)
    doc_ids = (folder / "corpus.ids.txt").read_text().split()
    return docs, queries, lambda d, q, dims: ndcg_by_dim(d, q, dataset, doc_ids, dims)


def beir_slice(name: str, size: int, seed: int = SLICE_SEED):
    """`size` random documents of a shared BEIR collection, with the test queries that keep
    a relevant one among them."""
    folder = DATA / name
    dataset = load_beir(folder)
    docs, queries = load_vectors(folder)
    rows = np.sort(np.random.default_rng(seed).choice(len(docs), size, replace=False))
    all_ids = (folder / "corpus.ids.txt").read_text().split()
    doc_ids = [all_ids[r] for r in rows]
    kept = set(doc_ids)
    qrels = {q: {d: g for d, g in judged.items() if d in kept} for q, judged in dataset.qrels.items()}
    sliced = SimpleNamespace(query_ids=dataset.query_ids, qrels={q: j for q, j in qrels.items() if j})
    return docs[rows], queries, lambda d, q, dims: ndcg_by_dim(d, q, sliced, doc_ids, dims)


def pkgsum_slice(seed: int = SLICE_SEED):
    """3,000 random pkgsum summaries; the truth is each query's exact full-dim top 10 among them."""
    docs, queries = load_vectors(PKGSUM)
    docs = docs[np.sort(np.random.default_rng(seed).choice(len(docs), 3_000, replace=False))]
    truth = _top10(docs, queries)
    return docs, queries, lambda d, q, dims: [float(np.mean([len(np.intersect1d(f, t)) / 10 for f, t in
                                                             zip(_top10(normalize(d[:, :m]), normalize(q[:, :m])),
                                                                 truth)])) for m in dims]


def _top10(docs, queries) -> np.ndarray:
    return np.argsort(-(queries @ docs.T), axis=1)[:, :10]


COLLECTIONS = {"cranfield": lambda: beir_collection("cranfield"),
               "npl-3k (held out)": lambda: beir_slice("npl", 3_000),
               "scifact-2k (held out)": lambda: beir_slice("scifact", 2_000),
               "pkgsum-3k (held out)": pkgsum_slice,
               "npl-2k (fresh)": lambda: beir_slice("npl", 2_000, seed=17),
               "pkgsum-3k/17 (fresh)": lambda: pkgsum_slice(seed=17), "scifact": lambda: beir_collection("scifact"),
               "npl": lambda: beir_collection("npl")}


def measure(name: str) -> dict:
    """Kept quality per dim for PCA, the old adapter and the validated one, with fit times."""
    docs, queries, score = COLLECTIONS[name]()
    full = score(docs, queries, [384])[0]
    pca = Transform(kind="pca").fit(docs)
    start = time.perf_counter()
    old = fit_adapter(docs, pca.matrix_, DIMS)
    old_seconds = time.perf_counter() - start
    start = time.perf_counter()
    new = Transform(kind="adapter").fit(docs, nesting=DIMS)
    new_seconds = time.perf_counter() - start
    kept = {kind: [s / full for s in score(docs @ m, queries @ m, DIMS)]
            for kind, m in (("pca", pca.matrix_), ("adapter (before)", old), ("adapter (validated)", new.matrix_))}
    return {"docs": len(docs), "full_dim": full, "dims": DIMS, "kept": kept, "validation": new.validation_,
            "seconds": {"adapter (before)": old_seconds, "adapter (validated)": new_seconds}}


def markdown(report: dict) -> str:
    lines = ["| collection | transform | " + " | ".join(f"{d}-d" for d in DIMS) + " | fit s | validation |",
             "|---|---|" + "---|" * len(DIMS) + "---|---|"]
    for name, entry in report.items():
        pca = entry["kept"]["pca"]
        for kind, kept in entry["kept"].items():
            cells = [f"{100 * k:.1f}%" + ("" if kind == "pca" else f" ({100 * (k - p):+.1f})")
                     for k, p in zip(kept, pca)]
            seconds = entry["seconds"].get(kind)
            note = ""
            if kind == "adapter (validated)":
                v = entry["validation"]
                note = "fell back to PCA" if v["fell_back"] else f"strength {v['strength']}"
            lines.append(f"| {name} | {kind} | " + " | ".join(cells)
                         + f" | {'' if seconds is None else f'{seconds:.0f}'} | {note} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--collections", nargs="+", default=list(COLLECTIONS), choices=list(COLLECTIONS))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    report = {}
    for name in args.collections:
        report[name] = measure(name)
        print(name, json.dumps(report[name]), flush=True)
        (args.out / "adapter_generalises.json").write_text(json.dumps(report, indent=2))
        (args.out / "adapter_generalises.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()

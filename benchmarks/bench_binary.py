"""Hamming stage on pkgsum: sign bits of the elastic prefix, ITQ and learned codes, against FAISS IndexBinaryFlat.

Recall@shortlist of the Hamming stage: the share of each query's exact top-10
(384 dims) found among its `shortlist` nearest codes. Speed: one thread, one
query at a time, the Hamming scan and top-`shortlist` selection only, ours against
FAISS IndexBinaryFlat over the very same codes in the same run. Writes JSON and
a markdown table.

    .venv/bin/python benchmarks/bench_binary.py
"""

from __future__ import annotations

import argparse
import json
import time

import faiss
import numpy as np
from common import PKGSUM, ROOT, load_vectors
from threadpoolctl import threadpool_limits

from matsearch.quantize.binary import fit_itq, hamming_topk, pack_signs
from matsearch.train.codes import fit_learned_codes
from matsearch.transform import Transform


def exact_top10(docs, queries):
    index = faiss.IndexFlatIP(docs.shape[1])
    index.add(docs)
    return index.search(queries, 10)[1]


def timed(search, queries) -> tuple[float, list]:
    search(queries[:1])
    start = time.perf_counter()
    found = [search(queries[i : i + 1]) for i in range(len(queries))]
    return (time.perf_counter() - start) / len(queries), found


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bits", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--shortlists", type=int, nargs="+", default=[100, 1000, 3000])
    parser.add_argument("--out", default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    docs, queries = load_vectors(PKGSUM)
    transform = Transform(kind="pca").fit(docs)
    docs, queries = transform.apply(docs), transform.apply(queries)
    truth = exact_top10(docs, queries)
    faiss.omp_set_num_threads(1)
    rows = []
    for bits in args.bits:
        mean, rotation = fit_itq(docs, bits)
        start = time.perf_counter()
        learned_mean, projection = fit_learned_codes(docs, bits, progress=True)
        print(f"learned {bits}-bit codes in {time.perf_counter() - start:.0f}s", flush=True)
        width = len(learned_mean)
        codings = {"sign bits": (docs[:, :bits], queries[:, :bits]),
                   "ITQ": ((docs[:, :bits] - mean) @ rotation, (queries[:, :bits] - mean) @ rotation),
                   "learned": ((docs[:, :width] - learned_mean) @ projection,
                               (queries[:, :width] - learned_mean) @ projection)}
        for name, (doc_values, query_values) in codings.items():
            codes, query_codes = pack_signs(doc_values), pack_signs(query_values)
            binary = faiss.IndexBinaryFlat(bits)
            binary.add(codes.view(np.uint8))
            for shortlist in args.shortlists:
                with threadpool_limits(1):
                    ours, found = timed(lambda q: hamming_topk(codes, q, shortlist)[0][0], query_codes)
                    theirs, _ = timed(lambda q: binary.search(q.view(np.uint8), shortlist)[1][0], query_codes)
                recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)])
                rows.append({"codes": name, "bits": bits, "shortlist": shortlist, "recall_of_top10": float(recall),
                             "ms_per_query": ours * 1e3, "faiss_ms_per_query": theirs * 1e3})
                print(rows[-1], flush=True)
    (args.out / "binary_pkgsum.json").write_text(json.dumps(rows, indent=2))
    lines = ["| codes | bits | shortlist | exact top-10 in shortlist | ms/query (ours) | ms/query (FAISS IndexBinaryFlat) | speed ratio |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['codes']} | {r['bits']} | {r['shortlist']:,} | {r['recall_of_top10']:.3f} | "
                     f"{r['ms_per_query']:.3f} | {r['faiss_ms_per_query']:.3f} | "
                     f"{r['faiss_ms_per_query'] / r['ms_per_query']:.2f}× |")
    (args.out / "binary_pkgsum.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""MatryoshkaLoss fine-tuning of the bundled MiniLM on pairs mined from SciFact's own corpus.

Pairs are (title, abstract), mined from the documents alone — no queries, no qrels. With
`--init adapter` (the default) training starts from the model followed by the
unsupervised adapter fitted on the original corpus vectors (so from vectors already
elastic, full-dim cosines unchanged); `--init none` starts from the bare model. The
original model's figures come from the shared precomputed MiniLM vectors; the
fine-tuned model embeds the corpus and the test queries itself. Reports nDCG@10 of
exact search on each prefix (cut and re-normalised), as a share of the original
model's full-dim nDCG@10, and the training time. Writes JSON and a markdown table.

    .venv/bin/python benchmarks/bench_finetune.py
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from bench_elastic import DATA, NESTING, ndcg_by_dim
from common import ROOT

from matsearch.data import load_beir
from matsearch.encoder import Encoder
from matsearch.train.finetune import finetune_matryoshka
from matsearch.train.pairs import corpus_pairs
from matsearch.transform import Transform

DIMS = [32, 64, 128, 256, 384]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--collection", default="scifact")
    parser.add_argument("--epochs", type=float, default=1.0, help="passes over the mined pairs")
    parser.add_argument("--short-weight", type=float, default=2.0,
                        help="MatryoshkaLoss weight of the 64- and 32-dim terms (the longer ones weigh 1)")
    parser.add_argument("--learning-rate", type=float, default=2e-5)
    parser.add_argument("--init", choices=["adapter", "none"], default="adapter")
    parser.add_argument("--model-dir", type=Path, default=ROOT / "benchmarks" / "results" / "minilm-matryoshka")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    folder = DATA / args.collection
    dataset = load_beir(folder)
    doc_ids = (folder / "corpus.ids.txt").read_text().split()
    pairs = corpus_pairs(dataset.doc_texts, dataset.doc_metadata)
    original_docs = np.load(folder / "corpus.minilm.f16.npy").astype(np.float32)
    original_queries = np.load(folder / "queries.minilm.f16.npy").astype(np.float32)
    start = time.perf_counter()
    adapter = Transform(kind="adapter").fit(original_docs, nesting=NESTING, progress=True)
    adapter_seconds = time.perf_counter() - start
    start = time.perf_counter()
    finetune_matryoshka(pairs, args.model_dir, dims=DIMS, weights=[args.short_weight if d <= 64 else 1.0 for d in DIMS[::-1]],
                        epochs=args.epochs, learning_rate=args.learning_rate,
                        rotation=adapter.matrix_ if args.init == "adapter" else None, progress=True)
    train_seconds = time.perf_counter() - start
    print(f"fine-tuned on {len(pairs)} mined pairs in {train_seconds:.0f}s", flush=True)
    encoder = Encoder(model=str(args.model_dir))
    judged = {q for q in dataset.qrels}
    query_texts = [t if q in judged else "" for q, t in zip(dataset.query_ids, dataset.query_texts)]
    docs = encoder.encode(dataset.doc_texts, progress=True)
    queries = encoder.encode(query_texts, progress=True)
    rows = {"original": ndcg_by_dim(original_docs, original_queries, dataset, doc_ids, DIMS),
            "original + adapter": ndcg_by_dim(adapter.apply(original_docs), adapter.apply(original_queries),
                                              dataset, doc_ids, DIMS),
            f"matryoshka fine-tune (init: {args.init})": ndcg_by_dim(docs, queries, dataset, doc_ids, DIMS)}
    refit = Transform(kind="adapter").fit(docs, nesting=NESTING, progress=True)  # as a collection would
    rows["matryoshka fine-tune + its own adapter"] = ndcg_by_dim(refit.apply(docs), refit.apply(queries), dataset,
                                                                 doc_ids, DIMS)
    full = rows["original"][-1]
    report = {"collection": args.collection, "pairs": len(pairs), "epochs": args.epochs, "init": args.init,
              "short_weight": args.short_weight,
              "learning_rate": args.learning_rate, "adapter_seconds": adapter_seconds, "train_seconds": train_seconds, "dims": DIMS, "ndcg@10": rows,
              "kept": {k: [v / full for v in r] for k, r in rows.items()}}
    (args.out / "finetune.json").write_text(json.dumps(report, indent=2))
    (args.out / "finetune.md").write_text(markdown(report))
    print(markdown(report))


def markdown(report) -> str:
    lines = [f"{report['collection']}: {report['pairs']} pairs mined from the corpus, {report['epochs']:g} epoch(s), "
             f"learning rate {report['learning_rate']:g}, weight {report['short_weight']:g} on the 64- and 32-d terms, "
             f"{report['train_seconds']:.0f} s of training on CPU "
             f"(the adapter it starts from: {report['adapter_seconds']:.0f} s). nDCG@10 (share of the original full-dim figure):", "",
             "| model | " + " | ".join(f"{d}-d" for d in report["dims"]) + " |", "|---|" + "---|" * len(report["dims"])]
    for name, values in report["ndcg@10"].items():
        kept = report["kept"][name]
        lines.append(f"| {name} | " + " | ".join(f"{v:.4f} ({100 * k:.1f}%)" for v, k in zip(values, kept)) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

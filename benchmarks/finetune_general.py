"""A general Matryoshka MiniLM: fine-tuned once on unlabeled text, used on any collection without fitting.

The recipe (issue 16, item 4): (query, document) pairs mined from documents alone —
(title, body), else (first sentence, rest), else (first words, rest) where titles are
too short to be queries, as pkgsum's package names are
(`matsearch.train.pairs.corpus_pairs`) — from
several shared corpora, the same number from each (`--per-corpus`), never a query or a
judgement; training starts from the bundled MiniLM followed by the shipped general
rotation (so its prefixes are elastic from the first step and its full-dim cosines are
the original's) and runs sentence-transformers' MatryoshkaLoss over 384/256/128/64/32
dims, the 64- and 32-d terms weighted 2× (the settings that did best in
benchmarks/bench_finetune.py on SciFact). The model is then scored with no
per-collection transform (`--transform none`): nDCG@10 of exact search on each
re-normalised prefix of the test queries, against the original model's full-dim
nDCG@10. `--exclude` leaves a collection's corpus out of the pairs, so it is scored
as an unseen domain. The weights are written to --model-dir and never committed.

    # what the recipe is (a full run: hours on 2 cores, see README):
    .venv/bin/python benchmarks/finetune_general.py --per-corpus 20000 --exclude scifact
    # a smoke run of the same code (minutes):
    .venv/bin/python benchmarks/finetune_general.py --per-corpus 200 --max-steps 10 --evaluate cranfield

The same training from the CLI (all dims weighted alike): write the mined pairs with
--pairs-out, then `matsearch finetune PAIRS.tsv --out DIR --start-from general --dims 384,256,128,64,32`.

Measured so far: only smoke runs, on a 2-core VM another benchmark shared. 10 steps on 800
pairs (200 from each corpus): Cranfield's 64-d prefix kept 87.1% of the original full-dim
nDCG@10 (32-d 74.6%, 128-d 94.9%, 384-d 99.3%) — after 10 steps, that is mostly the
general rotation's doing; the CLI trained 25 steps on the same pairs in 444 s. A full run
(up to 20,000 pairs a corpus: 36,658 pairs, 31,524 without SciFact, about 1,150 steps of 32)
is about an hour of 2 cores at the 3.2 s a step bench_finetune.py measured, one epoch; a GPU
would take far less (not measured here).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
from bench_elastic import DATA, ndcg_by_dim
from common import ROOT

from matsearch.data import load_beir, read_corpus_jsonl
from matsearch.encoder import Encoder
from matsearch.errors import InvalidInputError
from matsearch.train.finetune import finetune_matryoshka
from matsearch.train.pairs import corpus_pairs
from matsearch.transform import general_rotation

CORPORA = ("pkgsum", "npl", "scifact", "cranfield")
DIMS = [384, 256, 128, 64, 32]
SCORED = [32, 64, 128, 256, 384]


def mined_pairs(corpora, per_corpus: int, seed: int) -> list[tuple[str, str]]:
    """Up to `per_corpus` pairs mined from each corpus's documents, drawn at random, shuffled together."""
    rng = random.Random(seed)
    pairs = []
    for name in corpora:
        _, texts, metadata = read_corpus_jsonl(DATA / name / "corpus.jsonl")
        try:
            mined = corpus_pairs(texts, metadata)
        except InvalidInputError:  # titles too short to be queries (pkgsum's package names): crop the texts instead
            mined = corpus_pairs(texts, [None] * len(texts))
        pairs += rng.sample(mined, min(per_corpus, len(mined)))
    rng.shuffle(pairs)
    return pairs


def score(model_dir: Path, name: str) -> dict:
    """nDCG@10 per prefix of the fine-tuned model (no transform) and of the original, on a collection's test queries."""
    folder = DATA / name
    dataset = load_beir(folder)
    doc_ids = (folder / "corpus.ids.txt").read_text().split()
    encoder = Encoder(model=str(model_dir))
    docs = encoder.encode(dataset.doc_texts, progress=True)
    queries = encoder.encode([t if q in dataset.qrels else "" for q, t in zip(dataset.query_ids, dataset.query_texts)],
                             progress=True)  # only the judged queries are scored
    original = ndcg_by_dim(np.load(folder / "corpus.minilm.f16.npy").astype(np.float32),
                           np.load(folder / "queries.minilm.f16.npy").astype(np.float32), dataset, doc_ids, SCORED)
    tuned = ndcg_by_dim(docs, queries, dataset, doc_ids, SCORED)
    return {"dims": SCORED, "original": original, "fine-tuned": tuned, "kept": [t / original[-1] for t in tuned]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-corpus", type=int, default=20_000, help="pairs mined from each corpus at most")
    parser.add_argument("--exclude", nargs="*", default=[], choices=list(CORPORA),
                        help="corpora left out of training (then scored as unseen domains)")
    parser.add_argument("--evaluate", nargs="*", default=["scifact", "npl", "cranfield"])
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-steps", type=int, default=-1, help="stop after this many steps (a smoke run)")
    parser.add_argument("--pairs-out", type=Path, help="also write the mined pairs here, as query<TAB>document")
    parser.add_argument("--model-dir", type=Path, default=ROOT / "benchmarks" / "results" / "minilm-general")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "finetune_general.json")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    corpora = [c for c in CORPORA if c not in args.exclude]
    pairs = mined_pairs(corpora, args.per_corpus, args.seed)
    if args.pairs_out:
        with open(args.pairs_out, "w") as f:  # one pair a line, as read_pairs reads: whitespace runs become a space
            f.writelines(f"{' '.join(q.split())}\t{' '.join(d.split())}\n" for q, d in pairs)
    start = time.perf_counter()
    finetune_matryoshka(pairs, args.model_dir, dims=DIMS, weights=[2.0 if d <= 64 else 1.0 for d in DIMS],
                        epochs=args.epochs, max_steps=args.max_steps, rotation=general_rotation(), seed=args.seed,
                        progress=True)
    report = {"corpora": corpora, "pairs": len(pairs), "train_seconds": round(time.perf_counter() - start),
              "max_steps": args.max_steps, "collections": {}}
    for name in args.evaluate:
        report["collections"][name] = {"seen_in_training": name in corpora, **score(args.model_dir, name)}
        entry = report["collections"][name]
        print(name, " ".join(f"{d}-d {100 * k:.1f}%" for d, k in zip(SCORED, entry["kept"])), flush=True)
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

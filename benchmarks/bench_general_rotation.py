"""The shipped general rotation against each collection's own PCA, on small collections.

Per prefix dim (16/32/64/128/384), nDCG@10 of exact search on the re-normalised prefix
(pkgsum slices: recall@10 against the slice's exact full-dim top 10, as in
bench_adapter_generalises.py), in points against the collection's own PCA, for

- general: the shipped rotation (benchmarks/fit_general_rotation.py) as it is. It was
  fitted on the corpus vectors of all four shared collections, so every collection
  here is part of what it saw (never their queries);
- general, unseen corpus: the same recipe fitted without the collection's own corpus
  (e.g. on pkgsum, NPL and Cranfield for a SciFact slice): how it serves a domain it
  has not seen, which is what a user's collection is (7 minutes a fit on 2 cores;
  kept in --unseen-cache and reused);
- validated: `Transform(kind="general")` as a collection fits it: the general rotation
  checked against own PCA on held-back documents, own PCA where that does better; below
  136 documents (nothing to hold back) own PCA, the axes its documents leave open filled
  from the general rotation. "validated, unseen corpus" does the same with the
  unseen-corpus rotation;
- truncation: no rotation (`transform="none"`), the only choice before for a first add
  of fewer than 384 vectors, which PCA refuses.

Collections: Cranfield (1,400) and slices of 1-3k documents drawn as
bench_adapter_generalises.py draws them (numpy default_rng(seed) choice without
replacement; BEIR slices keep the test queries with a relevant document left): seed 16
and 17 slices, seen while choosing the recipe (how to pool the corpora; whether to add
the adapter step); seed 18 slices, made after the PCA step was fixed: their figures for
the PCA step alone were seen once, before the adapter step was tried on the seed 16/17
collections only. SciFact (5,183) and NPL (11,426) are reported too, above the 5k bar.
Two more tables fit each transform on a first add of 150 or 50 random documents and
score it on the whole collection (the case a general start was meant for; own PCA of
fewer documents than dims has arbitrary trailing axes, and a collection refuses it). With --recipes, a third
compares the ways of pooling the corpora that were tried for the PCA step (on the seed
16/17 collections only): covariances averaged, each corpus about its own mean (the one
kept), the rows pooled (pkgsum's 100,000 dominate), the corpora weighted equally about
one common mean, and the same without centring; then the shipped rotation (that PCA
step followed by the adapter).

    .venv/bin/python benchmarks/bench_general_rotation.py
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_adapter_generalises import _top10, beir_collection, beir_slice
from common import PKGSUM, ROOT, load_vectors
from fit_general_rotation import CORPORA, DATA, general_adapter

from matsearch.matryoshka import default_dims, normalize
from matsearch.train.validation import fit_validated_general
from matsearch.transform import Transform, general_rotation

DIMS = [16, 32, 64, 128, 384]
BAR = -0.5  # points of nDCG@10 the general rotation may lose to own PCA, collections under 5k documents
FIRST_ADDS = (150, 50)
RECIPES = "recipes (worst dim, points against own PCA)"


def pkgsum_slice(size: int, seed: int):
    """`size` random pkgsum summaries; the truth is each query's exact full-dim top 10 among them."""
    docs, queries = load_vectors(PKGSUM)
    docs = docs[np.sort(np.random.default_rng(seed).choice(len(docs), size, replace=False))]
    truth = _top10(docs, queries)
    return docs, queries, lambda d, q, dims: [float(np.mean([len(np.intersect1d(f, t)) / 10 for f, t in
                                                             zip(_top10(normalize(d[:, :m]), normalize(q[:, :m])),
                                                                 truth)])) for m in dims]


# name -> (parent corpus, seen while choosing?, loader)
COLLECTIONS = {
    "cranfield": ("cranfield", True, lambda: beir_collection("cranfield")),
    "npl-3k/16": ("npl", True, lambda: beir_slice("npl", 3_000, 16)),
    "scifact-2k/16": ("scifact", True, lambda: beir_slice("scifact", 2_000, 16)),
    "npl-1k/16": ("npl", True, lambda: beir_slice("npl", 1_000, 16)),
    "scifact-1k/16": ("scifact", True, lambda: beir_slice("scifact", 1_000, 16)),
    "pkgsum-3k/16": ("pkgsum", True, lambda: pkgsum_slice(3_000, 16)),
    "npl-2k/17": ("npl", True, lambda: beir_slice("npl", 2_000, 17)),
    "pkgsum-3k/17": ("pkgsum", True, lambda: pkgsum_slice(3_000, 17)),
    "scifact-3k/18 (fresh)": ("scifact", False, lambda: beir_slice("scifact", 3_000, 18)),
    "npl-1k/18 (fresh)": ("npl", False, lambda: beir_slice("npl", 1_000, 18)),
    "cranfield-1k/18 (fresh)": ("cranfield", False, lambda: beir_slice("cranfield", 1_000, 18)),
    "pkgsum-2k/18 (fresh)": ("pkgsum", False, lambda: pkgsum_slice(2_000, 18)),
    "scifact": ("scifact", True, lambda: beir_collection("scifact")),
    "npl": ("npl", True, lambda: beir_collection("npl")),
}


def unseen_rotation(parent: str, cache: Path) -> np.ndarray:
    """The general rotation's recipe fitted on every corpus but `parent`'s, from `cache` or fitted into it."""
    path = cache / f"without_{parent}.npy"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        np.save(path, general_adapter([c for c in CORPORA if c != parent]).astype(np.float32))
    return np.load(path)


def measure(name: str, cache: Path) -> dict:
    """nDCG@10 (or recall@10) per dim for own PCA, and each other rotation's difference in points."""
    parent, seen, load = COLLECTIONS[name]
    docs, queries, score = load()
    unseen = unseen_rotation(parent, cache)
    entry = {"docs": len(docs), "seen_while_choosing": seen, "metric": "recall@10" if parent == "pkgsum" else
             "ndcg@10", "dims": DIMS}
    entry["whole"] = _compare(docs, docs, queries, score, unseen)
    for count in FIRST_ADDS if len(docs) < 5_000 else ():
        first = docs[np.sort(np.random.default_rng(0).choice(len(docs), count, replace=False))]
        entry[f"first {count}"] = _compare(first, docs, queries, score, unseen)
    return entry


def _compare(fitted_on, docs, queries, score, unseen) -> dict:
    """Scores of own PCA fitted on `fitted_on`, and the points each other rotation gains on it."""
    start = time.perf_counter()
    validated = Transform(kind="general").fit(fitted_on)
    seconds = time.perf_counter() - start
    pca = Transform(kind="pca").fit(fitted_on).matrix_
    unseen_validated, unseen_report = fit_validated_general(fitted_on, unseen, default_dims(fitted_on.shape[1]))
    matrices = {"own pca": pca, "general": general_rotation(), "general, unseen corpus": unseen,
                "validated": validated.matrix_, "validated, unseen corpus": unseen_validated,
                "truncation": np.eye(docs.shape[1], dtype=np.float32)}
    scores = {kind: score(docs @ m, queries @ m, DIMS) for kind, m in matrices.items()}
    base = np.array(scores["own pca"])
    points = {kind: [round(100 * x, 2) for x in np.array(s) - base] for kind, s in scores.items() if kind != "own pca"}
    return {"own pca": [round(100 * s, 2) for s in base], "points": points,
            "worst": {kind: min(p) for kind, p in points.items()}, "validated_kind": validated.fitted_kind,
            "validation": validated.validation_, "validated_seconds": round(seconds, 1),
            "unseen_validated_kind": "pca" if unseen_report and unseen_report["fell_back"] else "general"}



def recipes() -> dict:
    """Worst-dim points against own PCA of four ways of pooling the corpora, on the collections seen while choosing."""
    stats = {}  # corpus -> (rows, mean, second moment)
    for name in CORPORA:
        x = np.load(DATA / name / "corpus.minilm.f16.npy").astype(np.float64)
        stats[name] = (len(x), x.mean(axis=0), x.T @ x / len(x))

    def mixed(weight):  # (mean, second moment) of the corpora mixed in proportion to weight(rows)
        total = sum(weight(rows) for rows, _, _ in stats.values())
        return [sum(weight(s[0]) * s[i] for s in stats.values()) / total for i in (1, 2)]

    pooled_mean, pooled_second = mixed(lambda rows: rows)
    equal_mean, equal_second = mixed(lambda rows: 1)
    covariances = {"PCA step: mean of own-centred covariances":
                   sum(second - np.outer(mean, mean) for _, mean, second in stats.values()) / len(stats),
                   "pooled rows, centred": pooled_second - np.outer(pooled_mean, pooled_mean),
                   "equal weight, one common mean": equal_second - np.outer(equal_mean, equal_mean),
                   "equal weight, uncentred": equal_second}
    rotations = {kind: np.ascontiguousarray(np.linalg.eigh(c)[1][:, ::-1], dtype=np.float32)
                 for kind, c in covariances.items()}
    rotations["shipped: PCA step + adapter"] = general_rotation()
    out = {}
    for name, (_, seen, load) in COLLECTIONS.items():
        if not seen:
            continue
        docs, queries, score = load()
        pca = Transform(kind="pca").fit(docs).matrix_
        base = np.array(score(docs @ pca, queries @ pca, DIMS[:-1]))
        out[name] = {kind: round(float(100 * (np.array(score(docs @ m, queries @ m, DIMS[:-1])) - base).min()), 2)
                     for kind, m in rotations.items()}
        print(name, out[name], flush=True)
    return out


def recipes_markdown(table: dict) -> str:
    kinds = list(next(iter(table.values())))
    lines = ["| collection | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
    lines += [f"| {name} | " + " | ".join(f"{row[k]:+.2f}" for k in kinds) + " |" for name, row in table.items()]
    return "\n".join(lines) + "\n"


def markdown(report: dict, part: str) -> str:
    lines = ["| collection | docs | transform | " + " | ".join(f"{d}-d" for d in DIMS) + " | worst |",
             "|---|---|---|" + "---|" * len(DIMS) + "---|"]
    for name, entry in report.items():
        if part not in entry:
            continue
        rows = entry[part]
        unit = "" if entry["metric"] == "ndcg@10" else " (recall@10)"
        lines.append(f"| {name}{unit} | {entry['docs']:,} | own PCA | "
                     + " | ".join(f"{s:.1f}" for s in rows["own pca"]) + " | |")
        for kind, points in rows["points"].items():
            label = {"validated": f"validated → {rows['validated_kind']}",
                     "validated, unseen corpus": f"validated, unseen corpus → {rows['unseen_validated_kind']}"}.get(kind,
                                                                                                               kind)
            if kind.startswith("validated") and rows["validation"] is None:  # too few documents to hold any back
                label = kind + " → own PCA, general fill"
            worst = rows["worst"][kind]
            flag = " ✗" if entry["docs"] < 5_000 and worst < BAR else ""
            lines.append(f"| | | {label} | " + " | ".join(f"{p:+.2f}" for p in points) + f" | {worst:+.2f}{flag} |")
    return "\n".join(lines) + "\n"


def write_markdown(report: dict, out: Path) -> str:
    text = "## Whole collection (each transform fitted on all its documents)\n\n" + markdown(report, "whole")
    for count in FIRST_ADDS:
        text += (f"\n## First add of {count} documents (fitted on them, scored on the whole collection)\n\n"
                 + markdown(report, f"first {count}"))
    table = report.get(RECIPES)
    if table:
        text += ("\n## Ways of pooling the corpora (worst of 16/32/64/128-d, points against own PCA)\n\n"
                 + recipes_markdown(table))
    (out / "general_rotation.md").write_text(text)
    return text


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--collections", nargs="+", default=list(COLLECTIONS), choices=list(COLLECTIONS))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--recipes", action="store_true", help="also compare the ways of pooling the corpora")
    parser.add_argument("--unseen-cache", type=Path, default=Path(tempfile.gettempdir()) / "matsearch-general-unseen",
                        help="where the rotations fitted without each corpus are kept")
    args = parser.parse_args()
    report = {}
    for name in args.collections:
        report[name] = measure(name, args.unseen_cache)
        print(name, json.dumps(report[name]["whole"]["worst"]), flush=True)
        (args.out / "general_rotation.json").write_text(json.dumps(report, indent=2))
    if args.recipes:
        report[RECIPES] = recipes()
        (args.out / "general_rotation.json").write_text(json.dumps(report, indent=2))
    print(write_markdown(report, args.out))

if __name__ == "__main__":
    main()

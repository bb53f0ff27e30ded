"""Scale run of the compact tier: resident memory of a search process at 1M and 10M items.

Builds a collection of N items (pkgsum's 100k MiniLM vectors replicated with
Gaussian noise, re-normalised; ids zero-padded numbers) with learned binary codes
(`bin64` by default), then opens it in a fresh process that only searches
(`h@b64:1000>d128:100>d384`, one query at a time) and reads its memory from
/proc/self/status: RssAnon (heap: the codes, the query's buffers) apart from
RssFile (mapped files: shared libraries and the store pages re-ranking touched).
Writes benchmarks/results/scale.json and .md. Needs about 1.6 kB of disk per item.

    .venv/bin/python benchmarks/bench_scale.py --items 1000000 10000000 --folder /tmp/matsearch-scale
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from common import PKGSUM, ROOT, load_vectors
from tqdm.auto import tqdm

from matsearch import Collection

PLAN = "h@b64:1000>d128:100>d384"
_CHUNK = 250_000
_NOISE = 0.02  # per dim; a MiniLM unit vector's dims have a spread of about 0.05


def build(folder: Path, items: int, recipe: str, *, nesting: list[int] | None = None, on_disk: bool = False) -> dict:
    corpus, _ = load_vectors(PKGSUM)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    with Collection.create(folder, nesting=nesting, on_disk=on_disk) as col:
        for lo in tqdm(range(0, items, _CHUNK), desc=f"adding {items:,} items", unit="chunk"):
            hi = min(lo + _CHUNK, items)
            vectors = corpus[np.arange(lo, hi) % len(corpus)] + _NOISE * rng.standard_normal((hi - lo, corpus.shape[1]),
                                                                                             dtype=np.float32)
            col.add([f"{i:010d}" for i in range(lo, hi)], vectors=vectors)
        added = time.perf_counter() - start
        col.build(recipe, progress=True)
        info = col.info(PLAN)
    return {"add_seconds": added, "build_seconds": time.perf_counter() - start - added, "info": info}


def memory() -> dict:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
            fields[key] = int(value.split()[0]) * 1024
    return fields


def search(folder: Path, queries: int) -> dict:
    """Runs in its own process: open, search one query at a time, report memory and speed."""
    before = memory()
    raw = np.load(PKGSUM / "queries.minilm.f16.npy")[:queries].astype(np.float32)  # not the corpus
    col = Collection.open(folder)
    opened = memory()
    col.search(raw[:1], k=10, plan=PLAN)
    start = time.perf_counter()
    for query in raw:
        col.search(query, k=10, plan=PLAN)
    seconds = (time.perf_counter() - start) / len(raw)
    return {"items": len(col), "queries": len(raw), "ms_per_query": seconds * 1e3,
            "memory_at_start": before, "memory_after_open": opened, "memory_after_queries": memory(),
            "code_bytes_in_ram": col._indexes["h"].resident_bytes()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--folder", type=Path, default=Path("/tmp/matsearch-scale"))
    parser.add_argument("--recipe", default="bin64")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--search-only", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.search_only:
        print(json.dumps(search(args.search_only, args.queries)))
        return
    out = ROOT / "benchmarks" / "results" / "scale.json"
    runs = json.loads(out.read_text()) if out.exists() else {}
    for items in args.items:
        folder = args.folder / f"{items}"
        built = build(folder, items, args.recipe) if not (folder / "manifest.json").exists() else {}
        found = subprocess.run([sys.executable, __file__, "--search-only", str(folder), "--queries", str(args.queries)],
                               check=True, capture_output=True, text=True)
        runs[str(items)] = {**runs.get(str(items), {}), **built, "search": json.loads(found.stdout.strip().splitlines()[-1]), "recipe": args.recipe,
                            "plan": PLAN}
        print(json.dumps(runs[str(items)]["search"], indent=1), flush=True)
        out.write_text(json.dumps(runs, indent=2))
    mb = 1 << 20
    lines = ["| items | codes in RAM | RssAnon after open | RssAnon after queries | RssFile after queries | "
             "VmRSS | peak (VmHWM) | ms/query |", "|---|---|---|---|---|---|---|---|"]
    for items, run in sorted(runs.items(), key=lambda kv: int(kv[0])):
        s = run["search"]
        m, o = s["memory_after_queries"], s["memory_after_open"]
        lines.append(f"| {int(items):,} | {s['code_bytes_in_ram'] / mb:,.1f} MB | {o['RssAnon'] / mb:,.1f} MB | "
                     f"{m['RssAnon'] / mb:,.1f} MB | {m['RssFile'] / mb:,.1f} MB | {m['VmRSS'] / mb:,.1f} MB | "
                     f"{m['VmHWM'] / mb:,.1f} MB | {s['ms_per_query']:.1f} |")
    (out.with_suffix(".md")).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

# Set-up is part of every target: the first run creates .venv/ and installs matsearch into it.
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1

.PHONY: demo test browser test-avx2 test-all bench bench-indexes bench-adanns bench-elastic bench-finetune bench-compact bench-scale bench-batch bench-cold bench-api bench-planner bench-hybrid bench-filters bench-distributed clean

$(BIN)/matsearch: pyproject.toml constraints.txt setup.py src/matsearch/_kernels.c src/matsearch/_fastscan.c src/matsearch/_direct.c src/matsearch/_rows.h
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0  # the CPU wheel; a bare 'torch' pulls CUDA
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

## Index the bundled Cranfield corpus with the bundled encoder, evaluate it and search it.
demo: $(BIN)/matsearch
	rm -rf demo-collection
	$(BIN)/matsearch index data/cranfield --collection demo-collection
	$(BIN)/matsearch eval demo-collection --beir data/cranfield
	$(BIN)/matsearch eval demo-collection --beir data/cranfield --plan "d32:200>d128:50>d384"
	$(BIN)/matsearch search demo-collection "heat transfer in hypersonic boundary layers" -k 5 --plan "d32:200>d384"
	$(BIN)/matsearch info demo-collection --plan "d32:200>d384"

## The test suite CI runs (about a few minutes on 2 cores).
test: $(BIN)/matsearch browser
	$(BIN)/pytest -q -m "not slow"

## The browser the web page's test drives: Debian's chromium (playwright's own download is not available).
browser:
	@command -v chromium >/dev/null || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -q && $$SUDO apt-get install -y -q chromium; }

## The CI suite as an AVX2-only x86-64 machine runs it: faiss (a runtime-dispatch build: FAISS_SIMD_LEVEL, not
## FAISS_OPT_LEVEL), numpy, OpenBLAS and torch held to their AVX2 kernels. Near-ties may round differently.
test-avx2: $(BIN)/matsearch browser
	FAISS_SIMD_LEVEL=AVX2 OPENBLAS_CORETYPE=Haswell NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR" \
		ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 $(BIN)/pytest -q -m "not slow"

## Everything, including the slow end-to-end encoder test on SciFact.
test-all: $(BIN)/matsearch browser
	$(BIN)/pytest -q

## Funnel vs FAISS on ../shared/data/pkgsum (writes benchmarks/results/).
bench: $(BIN)/matsearch
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(BIN)/python benchmarks/bench_funnel.py

## Index recipes (graph, IVF) against FAISS HNSW32 and IVF: the recall-vs-QPS frontier (about 10 minutes).
bench-indexes: $(BIN)/matsearch
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(BIN)/python benchmarks/bench_indexes.py

## The two AdANNS claims: IVF with decoupled dims, PQ on the best prefix (about 15 minutes).
bench-adanns: $(BIN)/matsearch
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(BIN)/python benchmarks/bench_adanns_ivf.py
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(BIN)/python benchmarks/bench_adanns_pq.py

## Truncation, PCA and the adapter (and the supervised adapter on SciFact) on SciFact, NPL, Cranfield (about 6 minutes).
bench-elastic: $(BIN)/matsearch
	$(BIN)/python benchmarks/bench_elastic.py

## MatryoshkaLoss fine-tuning of MiniLM on pairs mined from SciFact's corpus (about 15 minutes on 2 cores).
bench-finetune: $(BIN)/matsearch
	$(BIN)/python benchmarks/bench_finetune.py

## The compact tier on pkgsum: Hamming stage of sign bits, ITQ and learned codes; re-ranked against FAISS (about 12 minutes).
bench-compact: $(BIN)/matsearch
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(BIN)/python benchmarks/bench_binary.py
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(BIN)/python benchmarks/bench_compact.py

## Resident memory of a search process over 1M and 10M items with 64-bit codes, then flat codes, binary IVF and
## an int8 prefix copy on the 1M collection (18 GB of disk in /tmp, about 20 minutes).
bench-scale: $(BIN)/matsearch
	$(BIN)/python benchmarks/bench_scale.py
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(BIN)/python benchmarks/bench_tiers.py

## Batches on pkgsum: batch 1 against batch 1,000 through Collection.search, and FAISS HNSW32 (about 15 minutes).
bench-batch: $(BIN)/matsearch
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(BIN)/python benchmarks/bench_batch.py

## Issue 12's acceptance run on pkgsum: our recipes through Collection.search against FAISS HNSW32,Flat and static
## indexes at half its memory or less, tuned on queries 0-499 and reported on 500-999 (about 15 minutes).
bench-api: $(BIN)/matsearch
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(BIN)/python benchmarks/bench_api.py

## Targets instead of knobs: calibrate on pseudo-queries, check targets 0.8-0.99 on real queries, vs FAISS HNSW32.
bench-planner: $(BIN)/matsearch
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(BIN)/python benchmarks/bench_planner.py

## The store on disk: disk bytes and ms per query with the vectors evicted from the page cache, before every
## query and once, on bench_scale's 1M collection (built if missing; about 2 minutes once built).
bench-cold: $(BIN)/matsearch
	$(BIN)/python benchmarks/bench_cold.py

## Hybrid search: nDCG@10 of dense, BM25 and hybrid on SciFact, NPL and Cranfield, and hybrid's latency (about a minute).
bench-hybrid: $(BIN)/matsearch
	$(BIN)/python benchmarks/bench_hybrid.py

## Filtered search on pkgsum with synthetic metadata: QPS and recall against the share of items a filter lets
## through, FAISS with an IDSelectorBitmap in the same run (writes benchmarks/results/filters_pkgsum.*).
bench-filters: $(BIN)/matsearch
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(BIN)/python benchmarks/bench_filters.py

## Sharded collections on Ray: ingest and query throughput with 1, 2, 4 and 8 shards at 1M items, Ray's overhead
## per query against a local collection, recall@10 against exact search; then the scale-out model's single-node
## inputs, each tier at 1M (about 5 + 6 minutes; 3.5 GB in /tmp).
bench-distributed: $(BIN)/matsearch
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(BIN)/python benchmarks/bench_distributed.py
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(BIN)/python benchmarks/bench_distributed_tiers.py

clean:
	rm -rf $(VENV) demo-collection benchmarks/results

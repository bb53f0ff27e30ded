"""Train the fast query encoder's parts (see `matsearch.encoder_student`) by distillation from the full model.

The student is the bundled MiniLM's first `--layers` layers with each feed-forward block cut to `--ffn` units;
trained: LoRA updates (rank `--rank`) of every linear layer, every bias and LayerNorm, and a 384×384 map after
mean pooling (initialised by least squares). Loss: 1 - cosine to the teacher's normalised embedding, plus the
same on the normalised 64/128/256-d prefixes (Matryoshka-style); with `--rank-weight`, plus a ranking loss:
the KL divergence between the teacher's and the student's softmax (temperature `--tau`) of query scores against
the teacher's own document vectors (the shared vectors of the pkgsum, SciFact, NPL and Cranfield corpora, never a
query), over each batch's `--neighbours` teacher-nearest documents per text and as many random ones — the
student is judged by how it ranks documents, which a cosine to the teacher's vector measures only loosely. Texts, each cut to ≤ 64 tokens, are unlabeled:
the 100k pkgsum corpus summaries (their teacher vectors are the shared ones), `--extra-pypi` more PyPI summaries
(never one of pkgsum's queries), `--spans` random word spans of the SciFact/NPL/Cranfield documents, and
SciFact's train claims (never a query of any `qrels/test.tsv`). Teacher vectors of new texts are computed once
with the full model (onnx fp32) and kept under `--cache`. One thread; seeded.

The shipped parts (README, "Fast query encoder"): four runs, each going on from the one before (`--init`):

    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python benchmarks/train_fast_encoder.py --rank 128 --lr 2e-3 \
        --texts 100000 --out /tmp/fe/C.npz
    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python benchmarks/train_fast_encoder.py --rank 128 --lr 1e-3 \
        --init /tmp/fe/C.npz --seed 1 --texts 140000 --out /tmp/fe/D.npz
    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python benchmarks/train_fast_encoder.py --rank 128 --lr 7e-4 \
        --init /tmp/fe/D.npz --seed 3 --texts 120000 --rank-weight 1 --out /tmp/fe/F.npz
    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python benchmarks/train_fast_encoder.py --rank 128 --lr 5e-4 \
        --init /tmp/fe/F.npz --seed 4 --texts 120000 --rank-weight 2 --out src/matsearch/data/fast_encoder.npz
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from matsearch.encoder import DEFAULT_MODEL, Encoder, resolve_model
from matsearch.encoder_student import LINEARS, NORMS, cut, load_parts

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MAX_TOKENS = 64
PREFIXES = (64, 128, 256)
POOL_SEED = 0  # the pool of texts and the 2,000 held back are the same whatever `--seed` (which orders training)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--ffn", type=int, default=1536, help="feed-forward units kept per layer (of 1536)")
    parser.add_argument("--rank", type=int, default=32, help="LoRA rank")
    parser.add_argument("--texts", type=int, default=20000, help="training texts drawn from the pool")
    parser.add_argument("--spans", type=int, default=40000, help="document spans in the pool")
    parser.add_argument("--extra-pypi", type=int, default=0, help="PyPI summaries beyond pkgsum's corpus")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rank-weight", type=float, default=0.0,
                        help="weight of the ranking loss (KL between the teacher's and the student's scores over "
                             "each batch's teacher-nearest documents and random ones); 0: cosine loss only")
    parser.add_argument("--neighbours", type=int, default=32, help="teacher-nearest documents per text")
    parser.add_argument("--tau", type=float, default=0.05, help="temperature of the ranking loss")
    parser.add_argument("--init", type=Path, help="parts to go on training (instead of a fresh LoRA and map)")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/fast_encoder"), help="teacher vectors")
    parser.add_argument("--out", type=Path, required=True, help="the parts, fp16 .npz")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    random.seed(args.seed), np.random.seed(args.seed), torch.manual_seed(args.seed)

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_MODEL))
    texts, targets = pool(args, tokenizer)
    order = np.random.default_rng(POOL_SEED).permutation(len(texts))
    held, train = order[:2000], order[2000 : 2000 + args.texts]
    print(f"pool {len(texts):,} texts; training on {len(train):,}, {len(held):,} held back", flush=True)

    student = Student(args.layers, args.ffn, args.rank)
    batches = lambda rows, shuffle: list(batched(tokenizer, texts, rows, args.batch, shuffle, args.seed))
    if args.init:
        student.load(load_parts(args.init))
    else:
        student.fit_map(batches(train[:5000], False), targets)
    print(f"held-back cosine before training: {evaluate(student, batches(held, False), targets):.4f}")
    start = time.perf_counter()
    ranking = Ranking(targets, args) if args.rank_weight else None
    train_loop(student, batches, train, targets, args, ranking)
    minutes = (time.perf_counter() - start) / 60
    cosine = evaluate(student, batches(held, False), targets)
    print(f"held-back cosine {cosine:.4f} after {minutes:.1f} min", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, **student.parts())
    report = {**{k: str(v) for k, v in vars(args).items()}, "held_back_cosine": cosine, "train_minutes": minutes,
              "bytes": args.out.stat().st_size}
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report), flush=True)


class LoRA(torch.nn.Module):
    """A frozen linear layer plus a trained low-rank update `b @ a` and a trained bias."""

    def __init__(self, linear: torch.nn.Linear, rank: int):
        super().__init__()
        self.linear = linear
        self.linear.weight.requires_grad_(False)
        self.a = torch.nn.Parameter(torch.randn(rank, linear.in_features) / math.sqrt(linear.in_features))
        self.b = torch.nn.Parameter(torch.zeros(linear.out_features, rank))

    def forward(self, x):
        return self.linear(x) + (x @ self.a.T) @ self.b.T


class Student(torch.nn.Module):
    """The cut MiniLM with LoRA on its linear layers, trained biases and LayerNorms, mean pooling and a map."""

    def __init__(self, layers: int, ffn: int, rank: int):
        super().__init__()
        from sentence_transformers import SentenceTransformer

        self.bert = SentenceTransformer(resolve_model(DEFAULT_MODEL), device="cpu")[0].auto_model
        cut(self.bert, layers, ffn)
        self.layers, self.ffn = layers, ffn
        for p in self.bert.parameters():
            p.requires_grad_(False)
        self.trained = {}  # name in the BertModel -> module whose parameters are shipped
        for n, layer in enumerate(self.bert.encoder.layer):
            for name in LINEARS:
                parent, leaf = name.rsplit(".", 1)
                lora = LoRA(layer.get_submodule(name), rank)
                setattr(layer.get_submodule(parent), leaf, lora)
                lora.linear.bias.requires_grad_(True)
                self.trained[f"encoder.layer.{n}.{name}"] = lora
            for name in NORMS:
                self.trained[f"encoder.layer.{n}.{name}"] = layer.get_submodule(name)
        self.trained["embeddings.LayerNorm"] = self.bert.embeddings.LayerNorm
        for module in self.trained.values():
            if isinstance(module, torch.nn.LayerNorm):
                module.requires_grad_(True)
        self.map = torch.nn.Linear(384, 384)

    def pooled(self, batch):
        hidden = self.bert(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)

    def forward(self, batch):
        return self.map(self.pooled(batch))

    @torch.no_grad()
    def fit_map(self, batches, targets):
        """The map's least-squares fit from the untrained student's pooled vectors to the teacher's."""
        pooled = torch.cat([self.pooled(b) for b, _ in tqdm(batches, desc="least-squares map")])
        rows = np.concatenate([r for _, r in batches])
        x = torch.cat([pooled, torch.ones(len(pooled), 1)], 1)
        solution = torch.linalg.lstsq(x, torch.from_numpy(targets[rows])).solution
        self.map.weight.copy_(solution[:-1].T)
        self.map.bias.copy_(solution[-1])

    def tensors(self):
        """(name as `encoder_student.assemble` reads it, tensor) for each trained parameter."""
        for name, module in self.trained.items():
            if isinstance(module, LoRA):
                yield from ((f"{name}.lora_a", module.a), (f"{name}.lora_b", module.b),
                            (f"{name}.bias", module.linear.bias))
            else:
                yield from ((f"{name}.weight", module.weight), (f"{name}.bias", module.bias))
        yield from (("map.weight", self.map.weight), ("map.bias", self.map.bias))

    def parts(self) -> dict[str, np.ndarray]:
        """The trained parameters, fp16, and the student's shape."""
        out = {name: tensor.detach().numpy().astype(np.float16) for name, tensor in self.tensors()}
        return {"layers": np.array(self.layers), "ffn": np.array(self.ffn), **out}

    @torch.no_grad()
    def load(self, parts: dict[str, np.ndarray]) -> None:
        """Take the values of saved parts (of a student of the same shape)."""
        if (int(parts["layers"]), int(parts["ffn"])) != (self.layers, self.ffn):
            raise ValueError(f"the parts are for {int(parts['layers'])} layers of {int(parts['ffn'])} units")
        for name, tensor in self.tensors():
            tensor.copy_(torch.from_numpy(parts[name]))


def loss_fn(out, target):
    loss = 1 - torch.nn.functional.cosine_similarity(out, target).mean()
    for d in PREFIXES:
        loss = loss + (1 - torch.nn.functional.cosine_similarity(out[:, :d], target[:, :d]).mean()) / len(PREFIXES)
    return loss


class Ranking:
    """The ranking loss: the student's query scores against the teacher's document vectors should order them
    as the teacher's do. Documents: the unlabeled corpora's shared vectors (pkgsum's and the three BEIR
    collections'); per batch, each text's teacher-nearest `--neighbours` plus as many random ones."""

    def __init__(self, targets: np.ndarray, args):
        self.docs = torch.from_numpy(np.concatenate(
            [np.load(DATA / name / "corpus.minilm.f16.npy") for name in ("pkgsum", "scifact", "npl", "cranfield")]
        ).astype(np.float32))
        self.nearest = nearest_documents(targets, self.docs.numpy(), args.neighbours, args.cache)
        self.weight, self.tau, self.rng = args.rank_weight, args.tau, np.random.default_rng(args.seed)

    def __call__(self, out, target, rows):
        near = np.unique(self.nearest[rows])
        candidates = torch.from_numpy(np.union1d(near, self.rng.integers(0, len(self.docs), len(near))))
        docs = self.docs[candidates]
        teacher = torch.log_softmax(target @ docs.T / self.tau, 1)
        student = torch.log_softmax(torch.nn.functional.normalize(out, dim=1) @ docs.T / self.tau, 1)
        return self.weight * torch.nn.functional.kl_div(student, teacher, log_target=True, reduction="batchmean")


def nearest_documents(targets: np.ndarray, docs: np.ndarray, k: int, cache: Path) -> np.ndarray:
    """Each target's `k` nearest documents by inner product (exact, faiss), kept in `cache`."""
    import hashlib

    import faiss

    key = hashlib.sha256(targets.tobytes() + docs[:1000].tobytes()).hexdigest()[:16]
    path = cache / f"nearest-{key}-{k}.npy"
    if not path.exists():
        index = faiss.IndexFlatIP(docs.shape[1])
        index.add(docs)
        chunks = [index.search(targets[i : i + 4096], k)[1] for i in tqdm(range(0, len(targets), 4096),
                                                                           desc="teacher-nearest documents")]
        np.save(path, np.concatenate(chunks).astype(np.int32))
    return np.load(path)


def train_loop(student, batches, train, targets, args, ranking=None):
    params = [p for p in student.parameters() if p.requires_grad]
    print(f"trained parameters: {sum(p.numel() for p in params):,}", flush=True)
    optimiser = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    epochs = math.ceil(args.epochs)
    per_epoch = math.ceil(len(train) / args.batch)
    steps = int(per_epoch * args.epochs)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min(1.0, s / 100) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    bar = tqdm(total=steps, desc="training")
    student.train()
    for epoch in range(epochs):
        for batch, rows in batches(np.random.default_rng(args.seed + epoch).permutation(train), True):
            if bar.n >= steps:
                break
            out, target = student(batch), torch.from_numpy(targets[rows])
            loss = loss_fn(out, target) + (ranking(out, target, rows) if ranking else 0)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    bar.close()
    student.eval()


@torch.no_grad()
def evaluate(student, batches, targets) -> float:
    student.eval()
    out = torch.cat([student(b) for b, _ in batches])
    rows = np.concatenate([r for _, r in batches])
    return torch.nn.functional.cosine_similarity(out, torch.from_numpy(targets[rows])).mean().item()


def batched(tokenizer, texts, rows, size, shuffle, seed):
    """(tokenised batch, rows) of texts of similar length; batches in random order when `shuffle`."""
    rows = sorted(rows, key=lambda r: len(texts[r]))
    chunks = [rows[i : i + size] for i in range(0, len(rows), size)]
    if shuffle:
        random.Random(seed).shuffle(chunks)
    for chunk in chunks:
        batch = tokenizer([texts[r] for r in chunk], padding=True, truncation=True, max_length=MAX_TOKENS,
                          return_tensors="pt")
        yield dict(batch), np.array(chunk)


def pool(args, tokenizer) -> tuple[list[str], np.ndarray]:
    """Training texts (each ≤ 64 tokens) and the teacher's unit vectors for them."""
    short = lambda t: len(tokenizer(t, truncation=False)["input_ids"]) <= MAX_TOKENS
    pkgsum = [line.rstrip("\n").split("\t", 1)[1] for line in open(DATA / "pkgsum" / "corpus.tsv")]
    vectors = np.load(DATA / "pkgsum" / "corpus.minilm.f16.npy").astype(np.float32)
    keep = [n for n, t in enumerate(pkgsum) if short(t)]
    texts, targets = [pkgsum[n] for n in keep], [vectors[keep]]
    claims, claim_vectors = scifact_train_claims()
    texts += claims
    targets.append(claim_vectors)
    new = spans(args.spans, tokenizer, POOL_SEED) + extra_pypi(args.extra_pypi, set(pkgsum), POOL_SEED)
    texts += new
    targets.append(teacher(new, args.cache))
    return texts, np.concatenate(targets).astype(np.float32)


def scifact_train_claims() -> tuple[list[str], np.ndarray]:
    """SciFact's train claims (never a test query) and their shared vectors."""
    folder = DATA / "scifact"
    test = {line.split("\t")[0] for line in open(folder / "qrels" / "test.tsv")}
    train = {line.split("\t")[0] for line in open(folder / "qrels" / "train.tsv")} - {"query-id"}
    assert not train & test
    ids = (folder / "queries.ids.txt").read_text().split()
    vectors = np.load(folder / "queries.minilm.f16.npy").astype(np.float32)
    by_id = {json.loads(line)["_id"]: json.loads(line)["text"] for line in open(folder / "queries.jsonl")}
    rows = [n for n, i in enumerate(ids) if i in train]
    return [by_id[ids[n]] for n in rows], vectors[rows]


def spans(count: int, tokenizer, seed: int) -> list[str]:
    """`count` random spans of 4-40 words of the three corpora's documents (titles too), cut to ≤ 64 tokens."""
    rng = random.Random(seed)
    documents = []
    for name in ("scifact", "npl", "cranfield"):
        for line in open(DATA / name / "corpus.jsonl"):
            doc = json.loads(line)
            documents.append(doc["text"].split())
            if doc.get("title"):
                documents.append(doc["title"].split())
    out = []
    for _ in range(count):
        words = rng.choice(documents)
        size = rng.randint(4, 40)
        start = rng.randint(0, max(0, len(words) - size))
        out.append(cut_text(" ".join(words[start : start + size]), tokenizer))
    return [t for t in out if t]


def extra_pypi(count: int, exclude: set[str], seed: int) -> list[str]:
    """`count` PyPI summaries that are neither in pkgsum's corpus nor among its queries."""
    if not count:
        return []
    queries = {line.rstrip("\n").split("\t", 1)[1] for line in open(DATA / "pkgsum" / "queries.tsv")}
    with gzip.open(DATA / "pkgsum" / "all_pypi_summaries.tsv.gz", "rt") as f:
        summaries = [line.rstrip("\n").split("\t", 1)[-1] for line in f]
    fresh = sorted({s for s in summaries if s.strip()} - exclude - queries)
    return random.Random(seed).sample(fresh, count)


def cut_text(text: str, tokenizer) -> str:
    """`text` cut at the end of its last whole token within 64 (with the [CLS] and [SEP] tokens)."""
    encoded = tokenizer(text, truncation=True, max_length=MAX_TOKENS, return_offsets_mapping=True)
    ends = [end for start, end in encoded["offset_mapping"] if end > start]
    return text[: ends[-1]] if ends else ""


def teacher(texts: list[str], cache: Path) -> np.ndarray:
    """The full model's unit vectors of `texts` (onnx fp32, one thread), kept in `cache` by content."""
    import hashlib

    key = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    path = cache / f"teacher-{key}.npy"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        vectors = Encoder(runtime="onnx", threads=1, batch_size=64).encode(texts, progress=True)
        np.save(path, vectors)
    return np.load(path)


if __name__ == "__main__":
    main()

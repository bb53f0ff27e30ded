"""Pseudo-queries from texts (spans) and the drift guard: a query unlike calibration's gets more effort."""

import json

import numpy as np
import pytest

from conftest import load_vectors, shared
from matsearch import Collection
from matsearch.errors import InvalidInputError
from matsearch.tuning import Calibration, Point
from matsearch.tuning.pseudo import spans

RECIPE = "ivf32@d64:d192/pq96x4fs"


@pytest.fixture(scope="module")
def cranfield_tuned(tmp_path_factory):
    """Cranfield (1,400 abstracts with their texts), calibrated on 200 span pseudo-queries; its real queries."""
    folder = shared("cranfield")
    docs = [json.loads(line) for line in (folder / "corpus.jsonl").read_text().splitlines()]
    texts = [f"{d.get('title') or ''} {d['text']}".strip() for d in docs]
    path = tmp_path_factory.mktemp("drift") / "col"
    with Collection.create(path) as col:
        col.add([d["_id"] for d in docs], texts=texts, vectors=load_vectors(folder / "corpus.minilm.f16.npy"))
        col.build(RECIPE)
        calibration = col.tune(sample=200, timed=2)
    return path, load_vectors(folder / "queries.minilm.f16.npy"), calibration


def _recall(found, truth):
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found.tolist(), truth.tolist())]))


def test_spans_are_short_crops_and_deterministic():
    texts = ["One two three. Four five six seven eight nine ten eleven twelve. Thirteen.", "tiny", "a " * 100]
    crops = spans(texts, words=(3, 5), sentences=0.5, seed=1)
    assert crops == spans(texts, words=(3, 5), sentences=0.5, seed=1) != spans(texts, words=(3, 5), sentences=0.5,
                                                                                seed=2)
    assert crops[1] == "tiny" and all(1 <= len(c.split()) <= 5 for c in crops)
    sentences = spans([texts[0]] * 20, words=(3, 5), sentences=1.0, seed=0)
    assert all(any(c in s for s in ("One two three.", "Four five six seven eight nine ten eleven twelve.",
                                    "Thirteen.")) for c in sentences)
    for bad, message in ((dict(words=(5, 3), sentences=0.5), r"1 <= low <= high, got \(5, 3\)"),
                         (dict(words=(3, 5), sentences=2), "sentences must be a share in .0, 1., got 2")):
        with pytest.raises(InvalidInputError, match=message):
            spans(texts, seed=0, **bad)


def test_a_collection_with_texts_calibrates_on_spans_and_records_a_floor(cranfield_tuned):
    *_, calibration = cranfield_tuned
    assert calibration.queries.startswith("pseudo: 200 text spans")
    assert 0 < calibration.top1_floor < 1


def test_pseudo_kind_is_checked(tmp_path):
    vectors = load_vectors(shared("cranfield") / "corpus.minilm.f16.npy")[:50]
    with Collection.create(tmp_path / "c", model=None, transform="none") as col:
        col.add([str(i) for i in range(50)], vectors=vectors)
        with pytest.raises(InvalidInputError, match="pseudo must be one of auto, spans, noise; got 'texts'"):
            col.tune(sample=20, timed=1, pseudo="texts")
        with pytest.raises(InvalidInputError, match="pseudo='spans' needs texts and a model; .* has no model"):
            col.tune(sample=20, timed=1, pseudo="spans")
        assert "moved by noise" in col.tune(sample=20, timed=1).queries  # auto: no text, noise


def test_drifted_queries_are_flagged_and_searched_with_more_effort(cranfield_tuned):
    path, queries, calibration = cranfield_tuned
    far = np.random.default_rng(0).standard_normal((40, queries.shape[1])).astype(np.float32)
    other = load_vectors(shared("pkgsum") / "queries.minilm.f16.npy")[:100]  # another collection's queries
    with Collection.open(path) as col:
        real = col.search(queries, target_recall=0.9)
        assert "drift" not in real.target or int(real.target.split("drift: ")[1].split()[0]) <= 0.02 * len(queries)
        served = col.search(far, target_recall=0.9)
        guard = calibration.guard(0.9).plan
        assert f"drift: 40 of 40 queries scored top-1 below {calibration.top1_floor:.3f}" in served.target
        assert served.plan.endswith(f"; {guard} for 40 drifted") and served.cost.queries == 40
        assert served.cost.multiply_adds > col.search(far, plan=guard).cost.multiply_adds  # both searches count
        plain = col.search(far, plan=calibration.serve(target_recall=0.9)[0])  # the target's dearer plan alone
        truth = col.search(far, k=10, plan="d384").ids
        assert _recall(served.ids, truth) > _recall(plain.ids, truth)
        assert int(col.search(other, target_recall=0.9).target.split("drift: ")[1].split()[0]) > 50
        one = col.search(far[0], target_recall=0.95)  # one query at a time is guarded too
        assert "drift: 1 of 1" in one.target and one.plan.endswith(f"{calibration.guard(0.95).plan} for 1 drifted")
        assert "drift" not in col.search(far[:3], max_ms=100.0).target  # a budget is never exceeded to guard


def test_the_guard_is_the_cheapest_point_whose_worst_tenth_reaches_the_target():
    points = [Point("p8@d192:50>d384", 0.90, 0.5, 0.2, 0.3, 1e5, 1e5),
              Point("p16@d192:50>d384", 0.95, 0.8, 0.3, 0.4, 2e5, 2e5),
              Point("p32@d192:50>d384", 0.99, 0.92, 0.5, 0.6, 4e5, 4e5)]
    calibration = Calibration(points, 10, 1000, "r", "indexes.1", 0, "test", "2026-11-30", top1_floor=0.3)
    assert calibration.guard(0.9).plan == "p32@d192:50>d384" and calibration.guard(0.8).plan == "p16@d192:50>d384"
    assert calibration.guard(0.99).plan == "p32@d192:50>d384"  # none reaches it: the most accurate
    assert calibration.serve(target_recall=0.9)[3] == (0.3, "p32@d192:50>d384")
    older = Calibration(points, 10, 1000, "r", "indexes.1", 0, "test", "2026-11-30")  # a file from before the floor
    assert older.serve(target_recall=0.9)[3] is None


def test_the_effort_histogram_is_a_png(tmp_path):
    from matsearch.tuning.plot import plot_effort

    plot_effort({"p8-128~0.3": np.array([8, 8, 12, 40, 128]), "p16": np.array([16, 16])}, tmp_path / "effort.png",
                what="lists probed", title="t")
    assert (tmp_path / "effort.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(InvalidInputError, match=r"non-empty 1-D arrays .* got {'p8': \(0,\)}"):
        plot_effort({"p8": np.array([])}, tmp_path / "none.png", what="lists probed", title="t")


def test_auto_falls_back_to_noise_when_the_model_cannot_load(tmp_path, caplog):
    folder = shared("cranfield")
    docs = [json.loads(line) for line in (folder / "corpus.jsonl").read_text().splitlines()][:500]
    vectors = load_vectors(folder / "corpus.minilm.f16.npy")[:500]
    with Collection.create(tmp_path / "col", model="no-such/encoder") as col:
        col.add([d["_id"] for d in docs], texts=[d["text"] for d in docs], vectors=vectors)
        col.build("ivf8@d64:d192/pq96x4fs")
        calibration = col.tune(sample=50, timed=2)
        assert "moved by noise" in calibration.queries and "text spans" not in calibration.queries
        assert "cannot load encoder model 'no-such/encoder'" in caplog.text
        with pytest.raises(InvalidInputError, match="cannot load encoder model 'no-such/encoder'"):
            col.tune(sample=50, timed=2, pseudo="spans")

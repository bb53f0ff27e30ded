"""Calibration and targets: the frontier, the plan a target picks, and that it holds on real queries."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import load_vectors, shared
from matsearch import Collection
from matsearch.errors import CollectionError, InvalidInputError
from matsearch.tuning import Calibration, Point
from matsearch.tuning.calibration import LATENCY_HEADROOM

ROWS, RECIPE = 20_000, "ivf128@d64:d192/pq96x4fs"


@pytest.fixture(scope="module")
def pkgsum_tuned(tmp_path_factory):
    """20k pkgsum items with a fast-scan IVF, calibrated on pseudo-queries only; and the real queries."""
    folder = shared("pkgsum")
    corpus = load_vectors(folder / "corpus.minilm.f16.npy")[:ROWS]
    queries = load_vectors(folder / "queries.minilm.f16.npy")
    path = tmp_path_factory.mktemp("tune") / "col"
    with Collection.create(path, model=None) as col:
        col.add([str(i) for i in range(ROWS)], vectors=corpus)
        col.build(RECIPE)
        calibration = col.tune(sample=600, timed=10, seed=3)
    return path, queries, calibration


def _recall(col, queries, result):
    exact = col.search(queries, k=10, plan="d384").ids
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(result.ids.tolist(), exact.tolist())]))


def test_targets_hold_on_real_queries_after_calibrating_on_pseudo_queries(pkgsum_tuned):
    path, queries, _ = pkgsum_tuned
    with Collection.open(path) as col:
        for target in (0.9, 0.95):
            result = col.search(queries, target_recall=target)
            assert result.target.startswith(f"target_recall={target}")
            achieved = _recall(col, queries, result)
            assert target - 0.015 <= achieved <= target + 0.03, (target, achieved, result.plan)


def test_the_frontier_is_pareto_and_covers_every_point(pkgsum_tuned):
    *_, calibration = pkgsum_tuned
    front = calibration.frontier()
    assert [p.ms for p in front] == sorted(p.ms for p in front)
    assert all(a.recall < b.recall for a, b in zip(front, front[1:]))  # no frontier point dominates another
    for p in calibration.points:  # every point is matched or beaten by a frontier point on both axes
        assert any(f.ms <= p.ms and f.recall >= p.recall for f in front), p
    assert any(p.plan.startswith("p") for p in front) and front[-1].recall == pytest.approx(1.0)


def test_plan_choice_is_monotone_in_the_target(pkgsum_tuned):
    *_, calibration = pkgsum_tuned
    chosen = [calibration.choose(target_recall=t) for t in np.linspace(0.5, 1.0, 21)]
    assert all(a.ms <= b.ms and a.recall <= b.recall for a, b in zip(chosen, chosen[1:]))
    budgets = [calibration.choose(max_ms=m) for m in (0.5, 1.0, 5.0, 100.0)]
    assert all(a.recall <= b.recall for a, b in zip(budgets, budgets[1:]))
    assert all(p.ms_p95 <= LATENCY_HEADROOM * m for p, m in zip(budgets, (0.5, 1.0, 5.0, 100.0)))  # with headroom for drift


def test_impossible_and_malformed_targets_name_what_is_reachable():
    points = [Point("p8@d192:50>d384", 0.8, 0.5, 0.2, 0.3, 1e5, 1e5),
              Point("p16@d192:50>d384", 0.9, 0.6, 0.3, 0.4, 2e5, 2e5)]
    calibration = Calibration(points, 10, 1000, "ivf64@d64:d192/pq96x4fs", "indexes.1", 0, "test", "2026-11-30")
    with pytest.raises(InvalidInputError, match=r"target recall 0.95 is out of reach: .*p16@d192:50>d384, reaches 0.9000"):
        calibration.choose(target_recall=0.95)
    with pytest.raises(InvalidInputError, match=r"max_ms 0.1 is out of reach: .*p8@d192:50>d384, needs 0.3 ms .*headroom"):
        calibration.choose(max_ms=0.1)
    with pytest.raises(InvalidInputError, match=r"max_ms 0.3 is out of reach"):  # 0.3 ms, but no room for drift
        calibration.choose(max_ms=0.3)
    assert calibration.choose(max_ms=0.3 / LATENCY_HEADROOM).plan == "p8@d192:50>d384"
    for bad, message in ((dict(target_recall=1.5), "target_recall must be a positive number up to 1, got 1.5"),
                         (dict(target_recall=0.9, max_ms=1.0), "give one target"), ({}, "give one target"),
                         (dict(max_cost=-3), "max_cost must be a positive number, got -3")):
        with pytest.raises(InvalidInputError, match=message):
            calibration.choose(**bad)


def test_pseudo_queries_are_deterministic_for_a_seed(pkgsum_tuned, tmp_path):
    path, *_ = pkgsum_tuned
    from matsearch.tuning.pseudo import noisy

    x = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    np.testing.assert_array_equal(noisy(x, noise=0.8, seed=1), noisy(x, noise=0.8, seed=1))
    assert not np.array_equal(noisy(x, noise=0.8, seed=1), noisy(x, noise=0.8, seed=2))


def test_targets_need_a_fresh_calibration_and_a_calibrated_collection_serves_its_default(tmp_path, pkgsum_tuned):
    _, queries, _ = pkgsum_tuned
    corpus = load_vectors(shared("pkgsum") / "corpus.minilm.f16.npy")[:3000]
    with Collection.create(tmp_path / "c", model=None) as col:
        col.add([str(i) for i in range(2000)], vectors=corpus[:2000])
        assert col.search(queries[:2]).target is None and col.search(queries[:2]).plan == "d384"  # exact, as always
        with pytest.raises(InvalidInputError, match="is not calibrated: run `matsearch tune"):
            col.search(queries[:2], target_recall=0.9)
        col.build("ivf32@d64:d192/pq96x4fs")
        col.tune(sample=200, timed=3)
        default = col.search(queries[:2])
        assert default.target.startswith("target_recall=0.95") and default.plan != "d384"
        with pytest.raises(InvalidInputError, match="a plan or a target"):
            col.search(queries[:2], plan="d384", target_recall=0.9)
        assert col.info()["calibration"]["stale"] is None
        col.add([str(i) for i in range(2000, 3000)], vectors=corpus[2000:])  # +50% rows
        assert "measured 2,000 items" in col.info()["calibration"]["stale"]
        col.build("ivf16@d64:d192/pq96x4fs")
        assert "rebuilt" in col.info()["calibration"]["stale"]
        with pytest.raises(InvalidInputError, match="calibrated on other indexes"):
            col.search(queries[:2], target_recall=0.9)
        assert col.search(queries[:2]).plan == "d384"  # the default falls back to exact search
        (tmp_path / "c" / "calibration.json").write_text("{not json")  # damaged derived data
        assert col.search(queries[:2]).plan == "d384" and "unreadable" in col.info()["calibration"]
        with pytest.raises(CollectionError, match=r"calibration file .*calibration.json is unreadable"):
            col.search(queries[:2], target_recall=0.9)


def test_cli_tune_then_search_and_eval_with_a_target(tmp_path):
    folder = shared("cranfield")
    path = tmp_path / "col"
    run = lambda *a: subprocess.run([sys.executable, "-m", "matsearch", *map(str, a)], capture_output=True,  # noqa: E731
                                    text=True)
    assert run("index", folder, "--collection", path, "--vectors", folder / "corpus.minilm.f16.npy",
               "--recipe", "ivf16@d64:d192/pq96x4fs").returncode == 0
    tuned = run("tune", path, "--sample", "200", "--timed", "3", "--json")
    assert tuned.returncode == 0, tuned.stderr
    data = json.loads(tuned.stdout)
    assert data["frontier"] and set(data["chosen"]) >= {"0.8", "0.9", "0.95"}
    found = run("search", path, "shock wave boundary layer", "--target-recall", "0.9", "--mode", "dense", "--json")
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["target"].startswith("target_recall=0.9")
    scored = run("eval", path, "--beir", folder, "--query-vectors", folder / "queries.minilm.f16.npy",
                 "--target-recall", "0.9", "--json")
    assert scored.returncode == 0, scored.stderr
    metrics = json.loads(scored.stdout)
    assert metrics["target_recall"] == 0.9 and metrics["ann_recall@10"] >= 0.85
    bad = run("search", path, "shock", "--target-recall", "1.5", "--mode", "dense")
    assert bad.returncode != 0 and "target_recall must be a positive number up to 1" in bad.stderr + bad.stdout
    assert "text spans" in data["queries"] and 0 < data["top1_floor"] < 1
    effort = data["effort"]["0.9"]  # the report: who serves the target, and what each query spends
    assert sum(effort["plans"].values()) == 200 and len(effort["multiply_adds"]) == len(effort["lists_probed"]) == 3
    assert effort["multiply_adds"] == sorted(effort["multiply_adds"]) and effort["lists_probed"][0] >= 1
    noisy = run("tune", path, "--sample", "100", "--timed", "2", "--pseudo", "noise", "--plot", tmp_path / "f.png")
    assert noisy.returncode == 0, noisy.stderr
    assert "targets:" in noisy.stdout and "0.95" in noisy.stdout  # the table of targets after the frontier's
    assert (tmp_path / "f.png").stat().st_size > 1000 and (tmp_path / "f.effort.png").stat().st_size > 1000
    noisy = run("tune", path, "--sample", "100", "--timed", "2", "--pseudo", "noise", "--json")
    assert noisy.returncode == 0, noisy.stderr
    assert "moved by noise" in json.loads(noisy.stdout)["queries"]
    info = json.loads(run("info", path, "--json").stdout)["calibration"]
    assert "moved by noise" in info["queries"] and info["drift_floor"] == json.loads(noisy.stdout)["top1_floor"]
    wrong = run("tune", path, "--pseudo", "words")
    assert wrong.returncode != 0 and "pseudo must be one of auto, spans, noise; got 'words'" in wrong.stderr + wrong.stdout


def test_a_recall_target_between_frontier_points_is_met_by_mixing_them():
    points = [Point("p8@d192:50>d384", 0.80, 0.5, 0.2, 0.3, 1e5, 1e5),
              Point("p16@d192:50>d384", 0.90, 0.6, 0.3, 0.4, 2e5, 2e5)]
    calibration = Calibration(points, 10, 1000, "r", "indexes.1", 0, "test", "2026-11-30")
    cheaper, dearer, share = calibration.mix(0.875)
    assert (cheaper.plan, dearer.plan) == ("p8@d192:50>d384", "p16@d192:50>d384") and share == pytest.approx(0.75)
    assert calibration.mix(0.9) == (points[1], points[1], 1.0) and calibration.mix(0.5)[2] == 1.0


def test_a_mix_never_takes_a_frontier_point_under_the_line_between_two_others():
    # SciFact's shape at 0.95: a fixed probe just under the target, between two stopping margins, is on the Pareto
    # frontier (more recall than the cheaper margin) but under their line: sharing queries between the margins
    # gives more recall at its time
    low, fixed, high = (Point("p2-32^0.275@d192:50>d384", 0.945, 0.754, 0.0707, 0.08, 1e5, 1e5),
                        Point("p14@d192:50>d384", 0.946, 0.728, 0.0720, 0.08, 1.4e5, 1e5),
                        Point("p2-32^0.3@d192:50>d384", 0.959, 0.792, 0.0726, 0.08, 1.5e5, 1e5))
    calibration = Calibration([low, fixed, high], 10, 1000, "r", "indexes.1", 0, "test", "2026-11-30")
    assert calibration.frontier() == [low, fixed, high]
    cheaper, dearer, share = calibration.mix(0.95)
    assert (cheaper, dearer) == (low, high) and share == pytest.approx((0.95 - 0.945) / (0.959 - 0.945))
    assert calibration.serve(target_recall=0.95)[0] == high.plan


def test_the_grid_re_ranks_long_shortlists_on_a_middle_prefix_and_the_model_counts_block_reads():
    from matsearch import Plan
    from matsearch.collection.tune import _blocks_reread
    from matsearch.tuning.grid import settings

    nesting = [32, 64, 128, 256, 384]
    plans = settings("ivf256@d64:d192/pq96x4fs", nesting, 100_000, 10)
    assert {"p48@d192:100>d384", "p48@d192:100>d256:20>d384", "p8-128^0.3@d192:100>d256:20>d384"} <= set(plans)
    assert not any("~" in p for p in plans)  # our fast scan stops by the margin instead of a probe's spread
    assert "p8-128~0.3@d192:100>d384" in settings("ivf256@d64:d192/int8", nesting, 100_000, 10)
    assert not any("^" in p for p in settings("ivf256@d64:d192/pq96x4fs", nesting, 100_000, 10, "l2"))
    assert not any("^" in p for p in settings("ivf256@d64:d192/pq96x4fs", nesting, 100_000, 10, stops=False))
    assert "p48@d192:50>d256:20>d384" not in plans  # a short shortlist goes straight to the full dims
    assert not any(">d256:" in p for p in settings("ivf64@d64:d384/pq96x4fs", nesting, 100_000, 10))
    reads = {"p48@d192:100>d384": [100, 100], "p48@d192:100>d256:20>d384": [100, 100, 20],
             "d64:200>d384": [100_000, 200], "g48@d192:32>d384": [32, 32]}
    assert {p: _blocks_reread(Plan.parse(p), nesting, c) for p, c in reads.items()} == {
        "p48@d192:100>d384": 500, "p48@d192:100>d256:20>d384": 420, "d64:200>d384": 600, "g48@d192:32>d384": 160}


def test_a_collection_of_one_prefix_is_calibrated_on_one_stage_plans(tmp_path):
    """A nesting of the full dim alone has nothing shorter to shortlist on: every plan the grid tries is valid."""
    from matsearch.tuning.grid import settings

    for recipe in ("ivf16@d16:d16", "ivf16@d16:d16/pq8x4fs", "hnsw16@d16", "bin64"):
        plans = settings(recipe, [16], 3000, 10)
        assert "d16" in plans and not any(">d16" in p and not p.startswith("h") for p in plans), recipe
    vectors = np.random.default_rng(0).standard_normal((3000, 16)).astype(np.float32)
    with Collection.create(tmp_path / "col", model=None, transform="none") as col:
        col.add([str(i) for i in range(len(vectors))], vectors=vectors)
        col.build("ivf16@d16:d16,hnsw16@d16")
        calibration = col.tune(sample=100, timed=5, pseudo="noise")
    assert calibration.points and all(">" not in p.plan for p in calibration.points)


def test_a_span_is_scored_on_the_items_other_than_the_one_it_was_cut_from():
    from matsearch.collection.tune import _others

    ids = np.array([["a", "b", "c"], ["d", "e", "f"], ["g", "h", "i"]], dtype=object)
    assert _others(ids, None, 2).tolist() == [["a", "b"], ["d", "e"], ["g", "h"]]
    excluded = np.array(["b", None, "x"], dtype=object)  # a span of b's text; a noisy vector; a span whose item is not near
    assert _others(ids, excluded, 2).tolist() == [["a", "c"], ["d", "e"], ["g", "h"]]

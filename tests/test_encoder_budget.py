"""A text query's latency budget counts its encoder: calibration times each sub-model, `encoder="auto"` takes the
full model unless only the fast student leaves a plan room, and an unreachable budget names what it needs."""

import dataclasses
import json

import numpy as np
import pytest

from conftest import load_vectors, shared
from matsearch import Collection
from matsearch.errors import InvalidInputError
from matsearch.tuning import Calibration
from matsearch.tuning.calibration import LATENCY_HEADROOM

ROWS, RECIPE = 2_000, "ivf16@d64:d192/pq96x4fs"


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """2,000 pkgsum summaries (text, their shared vectors) with a fast-scan IVF, calibrated on spans of the texts."""
    folder = shared("pkgsum")
    texts = [line.split("\t", 1)[1] for line in (folder / "corpus.tsv").read_text().splitlines()[:ROWS]]
    path = tmp_path_factory.mktemp("budget") / "col"
    with Collection.create(path) as col:
        col.add([str(i) for i in range(ROWS)], texts=texts,
                vectors=load_vectors(folder / "corpus.minilm.f16.npy")[:ROWS])
        col.build(RECIPE)
        calibration = col.tune(sample=200, timed=10, seed=1)
    return path, calibration


def _with_encoder_ms(path, full: float, fast: float) -> Calibration:
    """The collection's calibration with the encoders' times set (saved: searches read it)."""
    calibration = Calibration.load(path / "calibration.json")
    calibration = dataclasses.replace(calibration, encoder_ms={"full": full, "fast": fast})
    calibration.save(path / "calibration.json")
    return calibration


def _cheapest_p95(calibration: Calibration) -> float:
    return min(p.ms_p95 for p in calibration.points if "^" not in p.plan)


def test_calibration_times_every_encoder_on_query_like_texts(tuned):
    path, calibration = tuned
    assert set(calibration.encoder_ms) == {"full", "fast"}
    assert all(ms > 0 for ms in calibration.encoder_ms.values())
    assert json.loads((path / "calibration.json").read_text())["encoder_ms"] == calibration.encoder_ms


def test_auto_takes_the_full_model_when_the_budget_allows_and_the_student_when_only_it_fits(tuned):
    path, _ = tuned
    calibration = _with_encoder_ms(path, full=50.0, fast=10.0)
    room = _cheapest_p95(calibration) / LATENCY_HEADROOM
    with Collection.open(path) as col:
        roomy = col.search("fast json parser for python", max_ms=50.0 + 2 * room)
        assert roomy.encoder == "full" and "the full encoder" in roomy.target
        tight = col.search("fast json parser for python", max_ms=10.0 + 2 * room, mode="dense")
        assert tight.encoder == "fast" and "the fast encoder" in tight.target
        same = col.search(col.encoder_for("fast").encode(["fast json parser for python"]), k=10, plan=tight.plan)
        assert list(tight.ids[0]) == list(same.ids[0])  # the student's vector, searched with the plan the budget left
        assert col.search("fast json parser for python").encoder == "full"  # no budget: the full model


def test_a_budget_the_encoders_cannot_meet_names_what_they_need(tuned):
    path, _ = tuned
    calibration = _with_encoder_ms(path, full=50.0, fast=10.0)
    room = _cheapest_p95(calibration) / LATENCY_HEADROOM
    with Collection.open(path) as col:
        with pytest.raises(InvalidInputError, match=r"max_ms 5.0 is out of reach for a text query: the fast encoder "
                                                    r"takes 10 ms and the cheapest calibrated plan"):
            col.search("fast json parser for python", max_ms=5.0)
        with pytest.raises(InvalidInputError, match=r"out of reach for a text query: the full encoder takes 50 ms"):
            col.search("fast json parser for python", max_ms=10.0 + 2 * room, encoder="full")
        vector = col.encoder.encode(["fast json parser for python"])
        assert "encoder" not in col.search(vector, max_ms=2 * room).target  # a vector query's budget: the search's
        with pytest.raises(InvalidInputError, match=r"encoder 'quick' is not one of \('auto', 'full', 'fast'\)"):
            col.search("fast json parser for python", encoder="quick")

"""Training pairs, and a MatryoshkaLoss fine-tune of the bundled encoder on tiny real data."""

import subprocess
import sys

import numpy as np
import pytest
from conftest import BUNDLED, shared

from matsearch import InvalidInputError
from matsearch.encoder import Encoder
from matsearch.train.pairs import beir_pairs, corpus_pairs, read_pairs


def test_pairs_are_mined_from_titles_sentences_or_leading_words():
    texts = ["A short title here. The body follows it.", "First sentence of four words. Then the rest.",
             "no punctuation at all in this rather long text about boundary layers and heat transfer rates",
             "Tiny."]
    metadata = [{"title": "A short title here."}, None, None, None]
    assert corpus_pairs(texts, metadata) == [
        ("A short title here.", "The body follows it."),
        ("First sentence of four words.", "Then the rest."),
        ("no punctuation at all in", "this rather long text about boundary layers and heat transfer rates"),
    ]
    with pytest.raises(InvalidInputError, match="no training pairs could be mined"):
        corpus_pairs(["Tiny."], [None])


def test_beir_pairs_come_from_a_training_split_never_the_evaluation_one():
    pairs = beir_pairs(shared("scifact"), "train")
    assert len(pairs) == 919 and all(q and d for q, d in pairs)
    with pytest.raises(InvalidInputError, match="refusing to train on split 'test': it is the evaluation split"):
        beir_pairs(shared("scifact"), "test")
    with pytest.raises(InvalidInputError, match="refusing to train on split 'dev'"):
        beir_pairs(shared("scifact"), "dev", evaluation_split="dev")
    assert len(beir_pairs(BUNDLED / "cranfield", "corpus")) > 1000  # mined, no qrels read


def test_pairs_files_are_checked_line_by_line(tmp_path):
    good = tmp_path / "pairs.tsv"
    good.write_text("what is lift\tLift is the force...\n\nheat flux\tThe heat flux at the wall\n")
    assert read_pairs(good) == [("what is lift", "Lift is the force..."), ("heat flux", "The heat flux at the wall")]
    bad = tmp_path / "bad.tsv"
    bad.write_text("what is lift\tLift is the force\nonly a query\n")
    with pytest.raises(InvalidInputError, match=r"bad.tsv line 2: expected 'query<TAB>document text', got 1 field"):
        read_pairs(bad)
    with pytest.raises(InvalidInputError, match="pairs file .*missing.tsv is missing"):
        read_pairs(tmp_path / "missing.tsv")


def test_a_few_matryoshka_loss_steps_change_the_encoder_and_it_loads_as_one(tmp_path):
    from matsearch.train.finetune import finetune_matryoshka

    pairs = beir_pairs(BUNDLED / "cranfield", "corpus")[:16]
    saved = finetune_matryoshka(pairs, tmp_path / "model", dims=[384, 64, 16], batch_size=8, max_steps=2,
                                learning_rate=1e-4)
    texts = [q for q, _ in pairs[:4]]
    before = Encoder().encode(texts)
    after = Encoder(model=str(saved)).encode(texts)
    assert after.shape == before.shape == (4, 384)
    np.testing.assert_allclose(np.linalg.norm(after, axis=1), 1.0, atol=1e-5)
    assert np.abs(after - before).max() > 1e-3  # the weights moved
    assert np.diag(after @ before.T).min() > 0.9  # two small steps, not a different model


def test_bad_fine_tune_inputs_are_named(tmp_path):
    from matsearch.train.finetune import finetune_matryoshka

    with pytest.raises(InvalidInputError, match="needs at least 2 pairs"):
        finetune_matryoshka([("a", "b")], tmp_path / "m")
    with pytest.raises(InvalidInputError, match=r"dims must be distinct and lie in 1\.\.384, got \[512, 64\]"):
        finetune_matryoshka([("a", "b"), ("c", "d")], tmp_path / "m", dims=[512, 64])
    with pytest.raises(InvalidInputError, match=r"1 weights given for the 2 Matryoshka dims \[384, 64\]"):
        finetune_matryoshka([("a", "b"), ("c", "d")], tmp_path / "m", dims=[384, 64], weights=[2.0])


def test_cli_finetune_refuses_the_evaluation_split(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "matsearch", "finetune", str(BUNDLED / "cranfield"), "--split", "test",
                           "--out", str(tmp_path / "model")], capture_output=True, text=True)
    assert proc.returncode == 1 and not (tmp_path / "model").exists()
    assert "refusing to train on split 'test': it is the evaluation split" in proc.stderr

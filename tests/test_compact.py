"""Compaction drops deleted rows from the store and indexes and changes no search result."""

import shutil
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import assert_same_ranking
from typer.testing import CliRunner

from matsearch import Collection, InvalidInputError
from matsearch.cli import app
from matsearch.collection import compact as compaction
from matsearch.collection.check import check_collection


@pytest.fixture
def deleted(tmp_path, scifact):
    _, docs, _ = scifact
    path = tmp_path / "col"
    with Collection.create(path, nesting=[32, 64, 128, 384]) as col:
        col.add([f"d{i}" for i in range(3000)], vectors=docs[:3000])
        col.build("ivf16@d32:d64,bin32/sign")
        col.delete([f"d{i}" for i in range(0, 3000, 3)])
    return path


def test_compaction_keeps_every_result_and_frees_the_rows(deleted, scifact):
    _, docs, queries = scifact
    plans = ["d384", "d32:300>d384", "p16@d64:5000>d384", "h@b32:3000>d384"]
    with Collection.open(deleted) as reader:
        before = {plan: reader.search(queries[:30], k=10, plan=plan) for plan in plans}
        assert reader.info()["deleted"] == 1000
        with Collection.open(deleted, writable=True) as col:
            assert col.compact() == {"removed": 1000, "count": 2000, "seconds": pytest.approx(0, abs=120)}
            col.add(["new"], vectors=docs[3000:3001])
        for plan in plans:  # the open reader follows: same results, rows renumbered underneath
            after = reader.search(queries[:30], k=10, plan=plan)
            assert_same_ranking(after.ids, after.scores, before[plan].ids, before[plan].scores)
        info = reader.info()
        assert (info["stored_rows"], info["deleted"], info["count"]) == (2001, 0, 2001)
        assert reader.get(["d1", "new"])[0].vector.shape == (384,)
        with pytest.raises(InvalidInputError, match="ids not in the collection"):
            reader.get(["d3"])
    assert check_collection(deleted) == []
    result = CliRunner().invoke(app, ["compact", str(deleted), "--json"])
    assert result.exit_code == 0 and '"removed": 0' in result.output


@pytest.mark.parametrize("crash", ["before the commit", "after the commit", "while removing the moved folder"])
def test_a_crash_leaves_the_old_collection_or_the_compacted_one(deleted, scifact, monkeypatch, crash):
    _, _, queries = scifact
    with Collection.open(deleted) as col:
        before = col.search(queries[:20], k=10)
    with Collection.open(deleted, writable=True) as col:
        if crash == "before the commit":
            monkeypatch.setattr(col._docs, "renumber", lambda epoch: (_ for _ in ()).throw(OSError("disk full")))
        elif crash == "after the commit":
            monkeypatch.setattr(compaction, "roll_forward", lambda path, docs: (_ for _ in ()).throw(OSError("killed")))
        else:  # every file moved into place, the manifest too; killed before the empty folder went
            def rmtree(folder, **kwargs):
                if folder.name == compaction.READY:
                    raise OSError("killed")
                shutil.rmtree(folder, **kwargs)
            monkeypatch.setattr(compaction, "shutil", SimpleNamespace(rmtree=rmtree))
        with pytest.raises(OSError):
            col.compact()
        col._indexes = {}  # as after a crash: nothing of this process is saved on close
    monkeypatch.undo()
    with Collection.open(deleted, writable=True) as col:  # rolls forward or discards
        assert col.info()["deleted"] == (1000 if crash == "before the commit" else 0)
        after = col.search(queries[:20], k=10)
        assert_same_ranking(after.ids, after.scores, before.ids, before.scores)
        assert not (deleted / compaction.READY).exists() and not (deleted / compaction.STAGING).exists()
    assert check_collection(deleted) == []

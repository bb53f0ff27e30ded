"""Damaged files: named in one line, exact search served where the store is intact, found by check, repaired by build."""

import json

import numpy as np
import pytest
from conftest import index_file
from typer.testing import CliRunner

from matsearch import Collection, CollectionError
from matsearch.cli import app
from matsearch.collection.check import check_collection

RECIPE = "ivf16@d32:d64"
DERIVED = ["vectors/prefix-norms.f32", "ids/ids.ends", "ids/ids.utf8", "INDEX/ivf.npz"]
PRIMARY = ["manifest.json", "docs.sqlite", "transform.npy", "vectors/dims-00032-00064.f32"]


@pytest.fixture
def sound(tmp_path, scifact):
    _, docs, _ = scifact
    path = tmp_path / "col"
    with Collection.create(path, nesting=[32, 64, 128, 384]) as col:
        col.add([f"doc{i}" for i in range(1500)], vectors=docs[:1500])
        col.add([f"doc{i}" for i in range(1500, 2000)], vectors=docs[1500:2000])
        col.delete(["doc3", "doc1600"])
        col.build(RECIPE)
    return path


def damage(path, name: str, how: str):
    file = index_file(path, name.split("/")[1]) if name.startswith("INDEX/") else path / name
    if how == "delete":
        file.unlink()
    elif how == "truncate":
        file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    else:
        file.write_bytes(np.random.default_rng(1).bytes(file.stat().st_size))
    return file


def test_a_sound_collection_checks_clean(sound):
    assert check_collection(sound) == []
    result = CliRunner().invoke(app, ["check", str(sound), "--json"])
    assert result.exit_code == 0 and json.loads(result.output)["ok"] is True


@pytest.mark.parametrize("how", ["delete", "truncate", "junk"])
@pytest.mark.parametrize("name", DERIVED)
def test_damaged_derived_files_are_found_and_rebuilt(sound, scifact, name, how):
    _, docs, queries = scifact
    with Collection.open(sound) as col:
        before = col.search(queries[:20], k=10)
    file = damage(sound, name, how)
    problems = check_collection(sound)
    if not (name.startswith("vectors/") and how != "junk"):  # a lost norm file is recomputed in memory
        assert any(str(file).startswith(p.file) or p.file == str(file) for p in problems), problems
    assert all(p.derived for p in problems)
    with Collection.open(sound) as col:  # the store is intact: exact search is served
        found = col.search(queries[:20], k=10)
        if not name.endswith(("ids.ends", "ids.utf8", "prefix-norms.f32")) or how != "junk":
            assert found.ids.tolist() == before.ids.tolist()
    result = CliRunner().invoke(app, ["build", str(sound)])
    assert result.exit_code == 0, result.output
    assert check_collection(sound) == []
    with Collection.open(sound) as col:
        assert col.search(queries[:20], k=10).ids.tolist() == before.ids.tolist()
        assert col.search(queries[:20], k=10, plan="p16@d64:200>d384").ids.shape == (20, 10)


@pytest.mark.parametrize("how", ["delete", "truncate", "junk"])
@pytest.mark.parametrize("name", PRIMARY)
def test_damaged_primary_files_are_named(sound, scifact, name, how):
    _, _, queries = scifact
    file = damage(sound, name, how)
    problems = check_collection(sound)
    assert problems and any(file.name in p.file or file.name in p.problem for p in problems), problems
    assert not problems[0].derived
    result = CliRunner().invoke(app, ["check", str(sound)])
    assert result.exit_code == 1 and file.name in result.output
    try:
        with Collection.open(sound) as col:
            col.search(queries[:5], k=10)
    except CollectionError as exc:  # one line naming the file
        assert file.name in str(exc) and "\n" not in str(exc)
    else:
        assert name == "vectors/dims-00032-00064.f32" and how == "junk", "damage went unnoticed by search"


def test_checksums_locate_the_damaged_block(sound):
    block = sound / "vectors" / "dims-00128-00384.f32"
    data = bytearray(block.read_bytes())
    data[4 * 256 * 1600 : 4 * 256 * 1600 + 8] = np.float32([0.5, -0.5]).tobytes()  # finite, plausible values
    block.write_bytes(bytes(data))
    primary = [p for p in check_collection(sound) if not p.derived]
    assert len(primary) == 1 and primary[0].file == str(block)
    assert "1 appended chunks fail their checksum (first: rows 1500-1999)" in primary[0].problem

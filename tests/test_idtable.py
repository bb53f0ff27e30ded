"""The memory-mapped row → id table: ids of any rows, in any shape; bad rows and bytes are CollectionErrors."""

import numpy as np
import pytest

from matsearch.collection.idtable import IdTable
from matsearch.errors import CollectionError

IDS = ["a", "", "doc-3", "ünïcode-ид", "x" * 300, "last"]


@pytest.fixture
def table(tmp_path):
    written = IdTable.write(tmp_path / "ids", IDS[:3])
    written.append(3, IDS[3:])
    return IdTable(tmp_path / "ids", len(IDS))


def test_ids_of_rows_in_any_order_and_shape(table):
    rows = np.array([[5, 0, 3], [2, 2, 4]])
    got = table.lookup(rows)
    assert got.shape == (2, 3) and got.dtype == object
    assert got.tolist() == [[IDS[r] for r in row] for row in rows.tolist()]
    assert table.lookup(np.zeros(0, dtype=np.int64)).shape == (0,)


@pytest.mark.parametrize("row", [-1, len(IDS)])
def test_a_row_outside_the_table_names_it(table, row):
    with pytest.raises(CollectionError, match=f"row {row} is outside the id table's {len(IDS)} rows"):
        table.lookup(np.array([0, row]))


def test_bytes_that_are_not_utf8_are_reported_as_corrupt(table, tmp_path):
    data = tmp_path / "ids" / "ids.utf8"
    raw = bytearray(data.read_bytes())
    raw[raw.index("и".encode())] = 0xFF
    data.write_bytes(bytes(raw))
    reopened = IdTable(tmp_path / "ids", len(IDS), verified=len(IDS))  # checksums passed: damaged after opening
    with pytest.raises(CollectionError, match=r"ids\.utf8 is corrupt"):
        reopened.lookup(np.array([3]))
    assert reopened.lookup(np.array([2])).tolist() == ["doc-3"]

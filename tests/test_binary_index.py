import numpy as np
import pytest
from conftest import assert_same_ranking, index_file

from matsearch import Collection, CollectionError, InvalidInputError, Plan, run_plan
from matsearch.index import BinaryIndex
from matsearch.recipe import Recipe


def recall(found, truth) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


@pytest.fixture(scope="module")
def coded(elastic_scifact):
    """64-bit codes of elastic SciFact by each method (learned codes train for ~20 s)."""
    store, queries = elastic_scifact
    indexes = {m: BinaryIndex(bits=64, method=m).build(store) for m in ("sign", "itq", "learned")}
    return store, queries, indexes, run_plan(store, queries, Plan.exact(384), 10)


@pytest.mark.parametrize("method", ["sign", "itq", "learned"])
def test_whole_collection_shortlist_is_exact_search(coded, method):
    store, queries, indexes, exact = coded
    found = run_plan(store, queries, Plan.parse(f"h@b64:{store.count}>d384"), 10, index=indexes[method])
    assert_same_ranking(found.ids, found.scores, exact.ids, exact.scores)


def test_codes_shortlist_keeps_recall_and_learned_bits_beat_sign_bits(coded):
    store, queries, indexes, exact = coded
    plan = Plan.parse("h@b64:500>d384")
    got = {m: recall(run_plan(store, queries, plan, 10, index=i).ids, exact.ids) for m, i in indexes.items()}
    assert got["learned"] >= 0.9 and got["itq"] >= 0.9
    assert got["learned"] > got["sign"] + 0.04 and got["itq"] > got["sign"] + 0.04


def test_cost_counts_code_bytes_and_rerank_reads(coded):
    store, queries, indexes, _ = coded
    result = run_plan(store, queries, Plan.parse("h@b64:200>d64:50>d384"), 10, index=indexes["itq"])
    per_query = result.cost.per_query()
    assert per_query["items_scanned"] == store.count
    assert per_query["candidates"] == [200, 200, 50]  # items each stage scored
    norms = (200 + 50) * 4  # each re-rank stage reads its candidates' prefix norms
    assert per_query["bytes_read"] == store.count * 8 + 200 * 64 * 4 + 50 * (384 - 64) * 4 + norms
    assert indexes["sign"].resident_bytes() == store.count * 8 + 64 * 4
    assert 8 < indexes["learned"].resident_bytes() / store.count < 8 + 128 * 65 * 4 / store.count + 1


def test_codes_match_a_sign_bit_reference(coded):
    store, _, indexes, _ = coded
    rows = store.rows(np.arange(100))
    bits = np.unpackbits(indexes["sign"].codes[:100].view(np.uint8), axis=1, bitorder="little")
    np.testing.assert_array_equal(bits.astype(bool), rows[:, :64] > 0)


def test_wrong_code_size_and_missing_index_are_named(coded):
    store, queries, indexes, _ = coded
    with pytest.raises(InvalidInputError, match="these binary codes have 64 bits; the plan asks for b128"):
        run_plan(store, queries, Plan.parse("h@b128:100>d384"), 10, index=indexes["sign"])
    with pytest.raises(InvalidInputError, match="scanned whole, they have no lists to probe \\(h8@b64:100\\)"):
        run_plan(store, queries, Plan.parse("h8@b64:100>d384"), 10, index=indexes["sign"])
    with pytest.raises(InvalidInputError, match="needs binary codes, but none was given"):
        run_plan(store, queries, Plan.parse("h@b64:100>d384"), 10)
    with pytest.raises(InvalidInputError, match="method 'lsh' is not one of"):
        BinaryIndex(bits=64, method="lsh")
    with pytest.raises(InvalidInputError, match="bits must be a positive integer, got 0"):
        BinaryIndex(bits=0)
    with pytest.raises(InvalidInputError, match="512-bit codes need at least 512 dims, the vectors have 384"):
        BinaryIndex(bits=512, method="sign").build(store)


@pytest.mark.parametrize("text, message", [
    ("h@b64>d384", "stage h@b64 needs ':keep'"),
    ("h@b64:100", "binary codes only shortlist; re-rank their candidates on float dims, e.g. 'h@b64:100>d384'"),
    ("h@b64", "binary codes only shortlist; re-rank their candidates on float dims, e.g. 'h@b64:1000>d384'"),
    ("h@d64:100>d384", "'b<bits>' sizes a binary code stage"),
    ("h@b64:100>d384:10", "the last stage returns k items"),
    ("b64:100>d384", "'b<bits>' sizes a binary code stage"),
    ("d32:100>h@b64:50>d384", "only the first stage can use an index"),
])
def test_bad_code_plans_are_refused(text, message):
    with pytest.raises(InvalidInputError, match=message):
        Plan.parse(text)


def test_code_plans_and_recipes_round_trip():
    for text in ("h@b64:1000>d384", "h@b128:2000>d32:300>d384", "h@b256:500>d128", "h@b64:2000>d32/int8:200>d384"):
        assert str(Plan.parse(text)) == text
    for text in ("bin64", "bin128/itq", "bin256/sign", "bin64,ivf16@d32:d64", "bin64/itq+ivf1024@d64",
                 "bin64/itq+ivf64@d32+f16@d32"):
        assert str(Recipe.parse(text)) == text
    assert Recipe.parse("bin64+int8@d8").bytes_per_vector(10**9, [64, 384]) == pytest.approx(16, abs=0.01)
    with pytest.raises(InvalidInputError, match="'bin<bits>\\[/itq\\|/sign\\]\\[\\+ivf<lists>@d<dc>\\]\\[\\+int8\\|\\+f16@d<dim>\\]'"):
        Recipe.parse("bin64/lsh")
    with pytest.raises(InvalidInputError, match="bin512: 512 bits need at least 512 dims, the vectors have 384"):
        Recipe.parse("bin512").check(384, [64, 384])
    assert Recipe.parse("bin128").bytes_per_vector(10**9, [64, 384]) == pytest.approx(16, abs=0.01)


def test_collection_codes_follow_adds_and_deletes_and_persist(tmp_path, scifact):
    ids, docs, queries = scifact
    plan = "h@b64:300>d384"
    with Collection.create(tmp_path / "c") as col:
        col.add(ids[:4000], vectors=docs[:4000])
        col.build("bin64/itq")
        col.add(ids[4000:], vectors=docs[4000:])
        assert col.search(docs[4500], k=1, plan=plan).ids[0, 0] == ids[4500]
        col.delete(ids[:10])
        found = col.search(docs[:10], k=5, plan=plan).ids
        assert not set(found.ravel()) & set(ids[:10])
        before = col.search(queries[:30], k=10, plan=plan)
        info = col.info(plan)
        assert info["in_memory_bytes_per_vector"]["bin64/itq"] == pytest.approx(8 + (64 * 65 * 4) / len(ids), abs=4)
        assert info["resident_bytes_per_vector"] == info["in_memory_bytes_per_vector"]["bin64/itq"]
        assert info["store_bytes_per_vector"] == pytest.approx(384 * 4 + 5 * 4, abs=0.1)  # + a checksum per append
    with Collection.open(tmp_path / "c") as col:
        after = col.search(queries[:30], k=10, plan=plan)
        np.testing.assert_array_equal(after.ids, before.ids)
        exact = col.search(queries[:30], k=10)
        assert recall(after.ids, exact.ids) >= 0.85


def test_deletions_that_empty_the_shortlist_fall_back_to_ranking_every_code(tmp_path, synthetic):
    docs, queries = synthetic
    names = np.array([f"d{i}" for i in range(len(docs))])
    with Collection.create(tmp_path / "c", transform="none", model=None) as col:
        col.add(list(names), vectors=docs)
        col.build("bin32/sign")
        near = col.search(queries[0], k=40, plan="h@b32:40>d64").ids[0]
        col.delete(list(near[:35]))
        found = col.search(queries[0], k=10, plan="h@b32:40>d64")
    live = ~np.isin(names, near[:35])
    with Collection.create(tmp_path / "live", transform="none", model=None) as col:  # never held the deleted rows
        col.add(list(names[live]), vectors=docs[live])
        col.build("bin32/sign")
        fresh = col.search(queries[0], k=10, plan="h@b32:40>d64")
        assert_same_ranking(found.ids, found.scores, fresh.ids, fresh.scores)  # rows sit at other positions


def test_a_corrupt_code_file_is_named(tmp_path, synthetic):
    docs, _ = synthetic
    with Collection.create(tmp_path / "c", transform="none", model=None) as col:
        col.add([f"d{i}" for i in range(len(docs))], vectors=docs)
        col.build("bin32/sign")
    index_file(tmp_path / "c", "codes.npz").write_bytes(b"not a zip")
    with Collection.open(tmp_path / "c") as col, \
            pytest.raises(CollectionError, match="binary code file .*codes.npz is missing or corrupt"):
        col.search(docs[0], plan="h@b32:100>d64")


@pytest.fixture(scope="module")
def binary_ivf(elastic_scifact):
    store, queries = elastic_scifact
    return BinaryIndex(bits=64, method="itq", lists=64, centroid_dim=64).build(store)


def test_binary_ivf_probes_few_lists_and_all_lists_is_exact(coded, binary_ivf):
    store, queries, indexes, exact = coded
    everything = run_plan(store, queries, Plan.parse(f"h64@b64:{store.count}>d384"), 10, index=binary_ivf)
    assert_same_ranking(everything.ids, everything.scores, exact.ids, exact.scores)
    flat = run_plan(store, queries, Plan.parse("h@b64:500>d384"), 10, index=indexes["itq"])
    probed = run_plan(store, queries, Plan.parse("h16@b64:500>d384"), 10, index=binary_ivf)
    assert probed.cost.items_scanned / len(queries) < store.count / 2
    assert probed.cost.lists_probed == 16 * len(queries)
    assert recall(probed.ids, exact.ids) >= recall(flat.ids, exact.ids) - 0.05
    sizes = np.diff(binary_ivf.lists_.offsets)
    assert sizes.sum() == store.count and np.array_equal(np.sort(binary_ivf.lists_.rows), np.arange(store.count))


@pytest.mark.parametrize("recipe, plan, held", [
    ("bin64/itq+ivf32@d32", "h8@b64:300>d384", 8 + 4),  # codes and row numbers in lists
    ("bin64/itq+int8@d32", "h@b64:500>d32/int8:100>d384", 8 + 32),  # codes and a 32-byte prefix copy
])
def test_lists_and_prefix_copies_follow_adds_and_persist(tmp_path, scifact, recipe, plan, held):
    ids, docs, queries = scifact
    with Collection.create(tmp_path / "c") as col:
        col.add(ids[:4000], vectors=docs[:4000])
        col.build(recipe)
        col.add(ids[4000:], vectors=docs[4000:])
        assert col.search(docs[4500], k=1, plan=plan).ids[0, 0] == ids[4500]
        before = col.search(queries[:30], k=10, plan=plan).ids
        assert col.info(plan)["in_memory_bytes_per_vector"][recipe] > held
    with Collection.open(tmp_path / "c") as col:
        np.testing.assert_array_equal(col.search(queries[:30], k=10, plan=plan).ids, before)


def test_bad_binary_ivf_settings_are_named():
    with pytest.raises(InvalidInputError, match="binary IVF needs positive integer lists and centroid_dim together"):
        BinaryIndex(bits=64, lists=16)
    with pytest.raises(InvalidInputError, match="centroid dim 512 exceeds the vectors' 384"):
        Recipe.parse("bin64+ivf16@d512").check(384, [64, 384])


@pytest.fixture(scope="module")
def with_copies(elastic_scifact):
    store, _ = elastic_scifact
    return {codec: BinaryIndex(bits=64, method="itq", copy=(codec, 64)).build(store) for codec in ("int8", "f16")}


def test_a_prefix_copy_in_ram_reranks_the_shortlist_almost_as_the_store_does(coded, with_copies):
    store, queries, _, exact = coded
    from_store = run_plan(store, queries, Plan.parse("h@b64:1000>d64:100>d384"), 10, index=with_copies["int8"])
    for codec, index in with_copies.items():
        in_ram = run_plan(store, queries, Plan.parse(f"h@b64:1000>d64/{codec}:100>d384"), 10, index=index)
        assert recall(in_ram.ids, exact.ids) >= recall(from_store.ids, exact.ids) - (0.02 if codec == "int8" else 0.005)
        width = {"int8": 1, "f16": 2}[codec]
        # the copy, not the store, is read at d64; the last stage then reads all 384 dims of its 100, not 320
        difference = len(queries) * (1000 * 64 * width - 1000 * (64 + 1) * 4 + 100 * 64 * 4)
        assert in_ram.cost.bytes_read - from_store.cost.bytes_read == difference
        assert index.resident_bytes() - index.codes.nbytes >= store.count * 64 * width
    with pytest.raises(InvalidInputError, match="needs a int8 copy of d32 in RAM; these binary codes hold a int8 copy of d64"):
        run_plan(store, queries, Plan.parse("h@b64:500>d32/int8:100>d384"), 10, index=with_copies["int8"])
    with pytest.raises(InvalidInputError, match="these binary codes hold no prefix copy"):
        run_plan(store, queries, Plan.parse("h@b64:500>d64/int8:100>d384"), 10, index=coded[2]["itq"])


@pytest.mark.parametrize("text", ["d32/int8:100>d384", "h@b64:500>d384:100>d32/int8:50>d384", "h@b64:500>d32/f16"])
def test_a_copy_stage_must_follow_a_code_stage_and_not_end_the_plan(text):
    with pytest.raises(InvalidInputError, match="stage re-ranks a binary-code shortlist|last stage returns k"):
        Plan.parse(text)


def test_probed_lists_short_of_k_or_empty_fall_back_to_every_code(tmp_path):
    rng = np.random.default_rng(5)
    from matsearch import BlockStore

    store = BlockStore.create(tmp_path / "v", [32, 64])
    store.append(rng.normal(size=(1000, 64)).astype(np.float32))
    queries = rng.normal(size=(5, 64)).astype(np.float32)
    index = BinaryIndex(bits=32, method="sign", lists=20, centroid_dim=16).build(store)
    exact = run_plan(store, queries, Plan.exact(64), 150)
    found = run_plan(store, queries, Plan.parse("h1@b32:1000>d64"), 150, index=index)  # one list holds < 150
    assert_same_ranking(found.ids, found.scores, exact.ids, exact.scores)
    dead = np.arange(0, store.count, 2)
    found = run_plan(store, queries, Plan.parse("h1@b32:100>d64"), 60, index=index, dead_rows=dead)
    assert found.ids.shape == (5, 60) and not np.isin(found.ids, dead).any()
    duplicates = np.repeat(rng.normal(size=(5, 64)).astype(np.float32), 200, axis=0)  # most lists stay empty
    store = BlockStore.create(tmp_path / "d", [32, 64])
    store.append(duplicates)
    index = BinaryIndex(bits=32, method="sign", lists=32, centroid_dim=32).build(store)
    assert (np.diff(index.lists_.offsets) == 0).any()
    found = run_plan(store, rng.normal(size=(40, 64)).astype(np.float32), Plan.parse("h1@b32:20>d64"), 10, index=index)
    assert found.ids.shape == (40, 10)

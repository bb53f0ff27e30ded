import pytest

from matsearch import InvalidInputError, Plan, Stage
from matsearch.plan import as_plan


@pytest.mark.parametrize("text", ["d384", "d32:400>d384", "d16:2000>d64:200>d128:50>d384", "q@d384:100>d384"])
def test_plan_strings_round_trip(text):
    assert str(Plan.parse(text)) == text


def test_parse_builds_stages_and_tolerates_spaces():
    plan = Plan.parse(" d32:400 > d384 ")
    assert plan.stages == (Stage(32, 400), Stage(384))
    assert str(plan) == "d32:400>d384"


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "non-empty string"),
        ("d32:", "stage 'd32:' is not"),
        ("32:400>d384", "stage '32:400' is not"),
        ("d32:400>>d384", "stage '' is not"),
        ("d0", "stage 'd0' is not"),
        ("d32:0>d64", "stage 'd32:0' is not"),
        ("d32:400", "the last stage returns k items"),
        ("d32>d64", r"stage d32 needs ':keep'"),
        ("d64:400>d32", "stage dims must increase, got 64 then 32"),
        ("d64:400>d64", "stage dims must increase, got 64 then 64"),
        ("d32:100>d64:200>d128", "shortlists must shrink, got 100 then 200"),
    ],
)
def test_malformed_plans_are_rejected_with_the_reason(text, message):
    with pytest.raises(InvalidInputError, match=message):
        Plan.parse(text)


def test_plan_wider_than_vectors_is_rejected():
    with pytest.raises(InvalidInputError, match="uses 512 dims but vectors have 384"):
        as_plan("d32:100>d512", 384)


def test_default_plan_is_exact_at_full_dim():
    assert str(as_plan(None, 384)) == "d384"


def test_keeps_never_drop_below_k_and_never_exceed_n():
    plan = Plan.parse("d32:400>d64:20>d384")
    assert plan.keeps(10, 1000) == [400, 20, 10]
    assert plan.keeps(50, 1000) == [400, 50, 50]
    assert plan.keeps(10, 300) == [300, 20, 10]


@pytest.mark.parametrize("dim, keep, message", [(0, None, "stage dim must be a positive integer, got 0"),
                                                 ("32", None, "stage dim must be a positive integer, got '32'"),
                                                 (32, 0, "stage keep must be a positive integer, got 0")])
def test_stages_built_in_code_are_validated(dim, keep, message):
    with pytest.raises(InvalidInputError, match=message):
        Stage(dim, keep)


def test_adaptive_ivf_probes_round_trip_and_check_their_bounds():
    from matsearch.plan import Plan, Stage
    from matsearch.errors import InvalidInputError

    plan = Plan.parse("p8-64~.3c32@d192:100>d384")
    assert str(plan) == "p8-64~0.3c32@d192:100>d384" and Plan.parse(str(plan)) == plan
    assert (plan.stages[0].least, plan.stages[0].effort, plan.stages[0].spread) == (8, 64, 0.3)
    for bad in ("p8-64@d192:100>d384", "g8-64~0.3@d192:100>d384", "p65-64~0.3@d192:100>d384",
                "p8^0.2@d192:100>d384", "p65-64^0.2@d192:100>d384", "g8-64^0.2@d192:100>d384"):
        with pytest.raises(InvalidInputError, match="an adaptive probe is 'p<least>-<most>~<spread>"):
            Plan.parse(bad)
    with pytest.raises(InvalidInputError, match="spread is a cosine gap in \\(0, 2\\), got 2.5"):
        Plan.parse("p8-64~2.5@d192:100>d384")
    with pytest.raises(InvalidInputError, match="stopping margin is a score gap in \\(-2, 2\\), got 3.0"):
        Plan.parse("p8-64^3.0@d192:100>d384")
    with pytest.raises(InvalidInputError, match="is not 'd<dims>:<keep>'"):  # one adaptive rule per stage
        Plan.parse("p8-64~0.3^0.2@d192:100>d384")
    stop = Plan.parse("p8-128^-.05@d192:100>d256:20>d384")
    assert str(stop) == "p8-128^-0.05@d192:100>d256:20>d384" and Plan.parse(str(stop)) == stop
    assert (stop.stages[0].least, stop.stages[0].effort, stop.stages[0].margin) == (8, 128, -0.05)
    for whole in (0.0, 1.0, -1.0):  # a whole margin or spread is written without a point: it parses back
        stage = Stage(192, 100, "p", 64, least=8, margin=whole)
        assert Plan.parse(f"{stage}>d384").stages[0] == stage
    assert Plan.parse("p8-64~1@d192:100>d384").stages[0].spread == 1.0

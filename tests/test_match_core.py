"""The matching core on hand-made records: comparisons, blocking and the guards that measure the data."""

import pandas as pd
import pytest

from c360_pipelines.config import MatchConfig
from c360_pipelines.core import block, compare, link, score
from c360_pipelines.core.cluster import NEVER_TOGETHER
from c360_pipelines.core.records import MatchInput, build_match_input


def match_input(*people: dict[str, str | None]) -> MatchInput:
    """Records from dicts with first, last, birth_date, line1, postal_code and optionally ssn and email."""
    ids = [f"r{n}" for n in range(len(people))]
    individual = pd.DataFrame({
        "source": "test", "source_record_id": ids,
        "first_name_norm": [p.get("first") for p in people], "last_name_norm": [p.get("last") for p in people],
        "birth_date": [p.get("birth_date") for p in people],
    })
    addresses = pd.DataFrame({"source": "test", "source_record_id": ids, "line1": [p.get("line1") for p in people],
                              "postal_code": [p.get("postal_code") for p in people], "city": "PERTH"})
    with_ssn = [(i, p["ssn"]) for i, p in zip(ids, people, strict=True) if p.get("ssn")]
    identifiers = pd.DataFrame({"source": "test", "source_record_id": [i for i, _ in with_ssn],
                                "identification_type": "ssn", "identifier": [s for _, s in with_ssn]})
    with_email = [(i, p["email"]) for i, p in zip(ids, people, strict=True) if p.get("email")]
    emails = pd.DataFrame({"source": "test", "source_record_id": [i for i, _ in with_email],
                           "email_key": [e for _, e in with_email], "is_valid": True})
    no_phones = pd.DataFrame(columns=["source", "source_record_id", "phone_e164", "is_valid"])
    return build_match_input(individual, emails, no_phones, addresses, identifiers)


def compared_pair(*two: dict[str, str | None]) -> pd.Series:
    return compare.compare_pairs(match_input(*two), pd.DataFrame({"i": [0], "j": [1]})).iloc[0]


def test_the_same_street_with_a_postal_code_one_keystroke_off_is_a_similar_address_not_a_different_one() -> None:
    typo = compared_pair({"line1": "59 BOGAN PL", "postal_code": "2440"}, {"line1": "59 BOGAN PL", "postal_code": "2404"})
    moved = compared_pair({"line1": "59 BOGAN PL", "postal_code": "2440"}, {"line1": "59 BOGAN PL", "postal_code": "3121"})
    assert typo["address"] == 2
    assert moved["address"] == 0


def test_first_and_last_name_exactly_swapped_count_as_the_same_names() -> None:
    swapped = compared_pair({"first": "danny", "last": "stephenson"}, {"first": "stephenson", "last": "danny"})
    near = compared_pair({"first": "danny", "last": "stephenson"}, {"first": "stephensen", "last": "danny"})
    assert (swapped["first_name"], swapped["last_name"]) == (3, 3)
    assert (near["first_name"], near["last_name"]) == (1, 1)


def test_a_glued_street_type_does_not_hide_the_same_street_from_blocking() -> None:
    data = match_input({"first": "joshua", "last": "berry", "line1": "95 LEAHY PL", "postal_code": "6302"},
                       {"first": "zachary", "last": "berry", "line1": "95 LEAHY LPLACE", "postal_code": "6320"})
    assert block.candidate_pairs(data).pairs[["i", "j"]].values.tolist() == [[0, 1]]


def sure_pairs(conflicting: int, agreeing: int) -> pd.DataFrame:
    """Compared pairs that share an identifier and a birth date, `conflicting` of them with other first names."""
    first_name = [0] * conflicting + [3] * agreeing
    return pd.DataFrame({"identifier": 2, "birth_date": 3, "first_name": first_name})


def test_field_conflicts_count_the_sure_pairs_that_still_disagree_on_the_field() -> None:
    counts = score.field_conflicts(sure_pairs(conflicting=30, agreeing=170))
    assert counts["first_name"] == (200, 30)
    assert counts["birth_date"] == (170, 0)  # only pairs whose first names agree can tell about birth dates


@pytest.mark.parametrize(("setting", "conflicts", "in_force"), [
    ("auto", (1000, 170), False),  # one sure pair in six has another first name: the field is noise here
    ("auto", (1000, 5), True),     # customer data: a shared loyalty number almost always has the same name
    ("auto", (40, 20), True),      # too few sure pairs to tell: stay on
    (True, (1000, 170), True),
    (False, (1000, 0), False),
])
def test_the_name_guard_stands_down_only_where_the_data_shows_first_names_are_noise(
        setting: bool | str, conflicts: tuple[int, int], in_force: bool) -> None:
    config = MatchConfig(name_conflict_guard=setting)
    status = link.guard_status(config, {"first_name": conflicts})[link.NAME_CONFLICT]
    assert status.in_force is in_force
    assert ("configuration" in status.reason) is (setting != "auto")


def test_a_guard_that_stands_down_no_longer_vetoes_a_link() -> None:
    data = match_input({"first": "erin", "last": "pernini", "birth_date": "1971-05-27", "line1": "32 LORIMER PL",
                        "postal_code": "5167"},
                       {"first": "elisha", "last": "pernini", "birth_date": "1971-05-27", "line1": "32 LORIMER PL",
                        "postal_code": "5167"})
    compared = compare.compare_pairs(data, pd.DataFrame({"i": [0], "j": [1]}))
    scored = compared[["i", "j"]].assign(probability=0.999, match_weight=10.0,
                                         **{f"w_{name}": 0.0 for name in compare.COMPARISONS})
    config = MatchConfig()
    guarded = link.decide_links(data, compared, scored, config, frozenset({link.NAME_CONFLICT}))
    trusted = link.decide_links(data, compared, scored, config, frozenset())
    assert guarded["guard"].tolist() == [link.NAME_CONFLICT] and not guarded["linked"].iloc[0]
    assert trusted["guard"].isna().all() and trusted["linked"].iloc[0]


def test_the_shipped_default_model_is_exactly_what_the_demo_generator_trains() -> None:
    from c360_pipelines.default_model import DEFAULT_MODEL_PATH, model_json, train_default_model

    assert DEFAULT_MODEL_PATH.read_text(encoding="utf-8") == model_json(train_default_model())


def test_data_too_small_to_learn_from_is_scored_with_the_default_model_and_large_data_with_its_own() -> None:
    from c360_pipelines.default_model import default_model

    tiny = match_input({"first": "ann", "last": "smith", "birth_date": "1980-01-02"},
                       {"first": "ann", "last": "smith", "birth_date": "1980-01-02"})
    compared = compare.compare_pairs(tiny, pd.DataFrame({"i": [0], "j": [1]}))
    borrowed = score.train(tiny, compared, fallback=default_model)
    assert borrowed.learned_from == "default model" and borrowed.m == default_model().m
    assert borrowed.records == 2
    assert score.train(tiny, compared).learned_from == "data"  # without a fallback it learns what it can


def test_a_value_shared_by_two_of_a_handful_of_records_is_still_strong_evidence() -> None:
    from c360_pipelines.default_model import default_model

    model = score.rescaled(default_model(), 4)
    shared_email = pd.DataFrame({name: [compare.MISSING] for name in compare.COMPARISONS}).assign(
        email=2, email_freq=2, phone_freq=0, first_name_freq=0, last_name_freq=0)
    assert score.contributions(model, shared_email)["email"].iloc[0] > 5  # bits: 2 in 4 records would say ~0


@pytest.mark.parametrize(("setting", "conflicts", "threshold"), [
    ("auto", {"first_name": (1000, 170)}, link.NOISY_DATA_CLUSTER_THRESHOLD),  # FEBRL-like corruption
    ("auto", {"first_name": (1000, 5), "birth_date": (1000, 3)}, link.CLEAN_DATA_CLUSTER_THRESHOLD),
    ("auto", {"first_name": (40, 20)}, link.CLEAN_DATA_CLUSTER_THRESHOLD),  # too few sure pairs to call it noisy
    ("auto", {}, link.CLEAN_DATA_CLUSTER_THRESHOLD),
    (0.7, {"first_name": (1000, 170)}, 0.7),
])
def test_the_clustering_loosens_only_on_data_measured_to_be_noisy(
        setting: float | str, conflicts: dict[str, tuple[int, int]], threshold: float) -> None:
    chosen = link.cluster_threshold(MatchConfig(cluster_threshold=setting), conflicts)
    assert chosen.value == threshold
    assert ("configuration" in chosen.reason) is (setting != "auto")


def test_a_cluster_threshold_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ValueError, match="cluster_threshold"):
        MatchConfig(cluster_threshold=1.5)


def test_emails_alike_but_for_their_numbers_are_namesakes_not_a_typo() -> None:
    data = match_input({"first": "maria", "last": "garcia", "email": "maria.garcia51@icloud.com"},
                       {"first": "maria", "last": "garcia", "email": "maria.garcia92@icloud.com"},
                       {"first": "maria", "last": "garcia", "email": "maria.garcia15@icloud.com"},
                       {"first": "maria", "last": "garcia", "email": "maria.garca51@icloud.com"})
    compared = compare.compare_pairs(data, pd.DataFrame({"i": [0, 0, 0], "j": [1, 2, 3]}))
    assert compared["email"].tolist() == [0, 1, 1]  # 51/92: two people; 51/15 and a dropped letter: typos


def test_emails_with_the_same_letters_but_a_number_or_a_dot_more_are_namesakes_not_a_typo() -> None:
    data = match_input({"first": "james", "last": "petty", "email": "jamespetty53@gmail.com"},
                       {"first": "james", "last": "petty", "email": "jamespetty@gmail.com"},
                       {"first": "peter", "last": "graves", "email": "peter.graves@aol.com"},
                       {"first": "peter", "last": "graves", "email": "petergraves@aol.com"},
                       {"first": "peter", "last": "graves", "email": "petergravs@aol.com"})
    compared = compare.compare_pairs(data, pd.DataFrame({"i": [0, 2, 3], "j": [1, 3, 4]}))
    assert compared["email"].tolist() == [0, 0, 1]  # a number more, a dot more: two people; a dropped letter: typo


def test_a_birth_year_more_than_a_keystroke_away_is_another_generation_not_a_typo() -> None:
    data = match_input({"first": "chris", "last": "cohen", "birth_date": "1957-07-26"},
                       {"first": "chris", "last": "cohen", "birth_date": "2000-07-26"},
                       {"first": "chris", "last": "cohen", "birth_date": "1975-07-26"},
                       {"first": "chris", "last": "cohen", "birth_date": "1957-07-29"})
    compared = compare.compare_pairs(data, pd.DataFrame({"i": [0, 0, 0], "j": [1, 2, 3]}))
    assert compared["birth_date"].tolist() == [0, 2, 2]  # 2000: different; 1975 (transposed) and the day: typos


def decided_pair(first: tuple[str, str], birth: tuple[str, str], ssn: tuple[str, str]) -> pd.Series:
    data = match_input(*({"first": f, "last": "doyle", "birth_date": b, "line1": "1912 FRY LN", "postal_code": "48072",
                          "ssn": s} for f, b, s in zip(first, birth, ssn, strict=True)))
    compared = compare.compare_pairs(data, pd.DataFrame({"i": [0], "j": [1]}))
    scored = compared[["i", "j"]].assign(probability=0.9, match_weight=3.0,
                                         **{f"w_{name}": 0.0 for name in compare.COMPARISONS})
    return link.decide_links(data, compared, scored, MatchConfig()).iloc[0]


def test_consecutive_identifiers_do_not_override_the_guards_but_a_shared_one_does() -> None:
    consecutive = decided_pair(("leslie", "roger"), ("1957-06-27", "1984-06-21"), ("LM-702742", "LM-702743"))
    shared = decided_pair(("leslie", "roger"), ("1957-06-27", "1984-06-21"), ("LM-702742", "LM-702742"))
    assert consecutive["guard"] is not None and not consecutive["linked"]
    assert shared["guard"] is None and shared["linked"]


def test_conflicting_birth_dates_can_never_share_a_cluster_while_a_name_conflict_only_stops_the_link() -> None:
    birth_dates = decided_pair(("roger", "roger"), ("1957-06-27", "1984-06-21"), ("", ""))
    first_names = decided_pair(("leslie", "roger"), ("1957-06-27", "1957-06-27"), ("", ""))
    assert birth_dates["guard"] == link.BIRTH_DATE_CONFLICT and birth_dates["link_score"] == NEVER_TOGETHER
    assert first_names["guard"] == link.NAME_CONFLICT and first_names["link_score"] == 0.0


def nelsons() -> MatchInput:
    """A father and son, a mother, all on the family email at one address; the son's own email on two records."""
    home = {"last": "nelson", "line1": "7804 STEVENS RD", "postal_code": "81000"}
    return match_input({**home, "first": "joshua", "birth_date": "1957-05-28", "email": "thenelsons88@outlook.com"},
                       {**home, "first": "mary", "email": "thenelsons88@outlook.com"},
                       {**home, "first": "joshua", "birth_date": "1984-02-11", "email": "josh.nelson@gmail.com"},
                       {**home, "first": "josh", "email": "josh.nelson@gmail.com"})


def test_values_that_records_of_clearly_different_people_hold_are_a_households() -> None:
    households = compare.household_values(nelsons(), ("birth_date", "first_name"))
    assert households["email"] == {"thenelsons88@outlook.com"}  # Joshua and Mary; Josh and Joshua are one name
    assert households["address"] == {"7804 STEVENS RD|81000"}
    assert compare.household_values(nelsons(), ()) == {kind: frozenset() for kind in compare.HOUSEHOLD_KINDS}


def test_only_the_first_names_can_tell_a_household_when_birth_dates_are_not_trusted() -> None:
    households = compare.household_values(nelsons(), ("birth_date",))  # the name guard stood down on noisy data
    assert households["email"] == frozenset()  # the two Joshuas' birth dates are on different emails
    assert households["address"] == {"7804 STEVENS RD|81000"}


def test_a_pair_agrees_on_a_household_value_when_one_holds_it_and_the_other_writes_it_nearly_the_same() -> None:
    home = {"last": "nelson", "postal_code": "81000"}
    data = match_input({**home, "first": "joshua", "birth_date": "1957-05-28", "line1": "7804 STEVENS RD",
                        "email": "thenelsons88@outlook.com"},
                       {**home, "first": "mary", "line1": "7804 STEVENS RD", "email": "thenelsons88@outlook.com"},
                       {**home, "first": "liz", "line1": "7804 STEVENS ROAD", "email": "thenelsons88@outlok.com"},
                       {**home, "first": "anne", "line1": "12 HILL ST", "email": "anne@nelson.me"})
    compared = compare.compare_pairs(data, pd.DataFrame({"i": [0, 0, 3], "j": [1, 2, 2]}))
    shares = compare.household_shares(data, compared, ("birth_date", "first_name"))
    # Joshua and Mary both hold the family's email and place; Liz writes both nearly the same; Anne neither
    assert shares.to_dict("list") == {"email": [True, True, False], "phone": [False, False, False],
                                      "address": [True, True, False]}


def test_a_pair_in_a_household_counts_its_shared_values_address_and_last_name_once() -> None:
    terms = pd.DataFrame({"first_name": [7.7, 7.7], "last_name": [9.0, 9.0], "birth_date": [0.0, 0.0],
                          "email": [11.5, 11.5], "phone": [-3.9, 10.0], "address": [12.5, 12.5], "identifier": [0.0, 0.0]})
    households = pd.DataFrame({"email": [True, False], "phone": [False, False], "address": [False, False]})
    counted = score.count_household_once(terms, households)
    assert counted.iloc[0].to_dict() == {"first_name": 7.7, "last_name": 0.0, "birth_date": 0.0, "email": 0.0,
                                         "phone": -3.9, "address": 12.5, "identifier": 0.0}
    assert counted.iloc[1].to_dict() == terms.iloc[1].to_dict()  # no household value shared: all evidence counts


"""Survivorship: which value of each attribute makes the golden profile, and why (core, no warehouse)."""

from __future__ import annotations

import json

import pandas as pd

from c360_pipelines.core.survive import (
    OK,
    PLACEHOLDER,
    ProfileInput,
    Rule,
    build_profiles,
    choose,
    contact_candidates,
    content_hashes,
    scalar_candidates,
    spelling_population,
)

SOURCES = ["crm", "shop", "support", "loyalty"]


def records(*rows: dict[str, object]) -> pd.DataFrame:
    """Person records of one person (c360_id p1 unless given), with sensible defaults for what a test omits."""
    frame = pd.DataFrame([{"c360_id": "p1", "updated_at": None, "extracted_at": "2024-12-01", "first_name": None,
                           "middle_name": None, "last_name": None, "name_suffix": None, "birth_date": None,
                           "gender": None, **row} for row in rows])
    for name in ("first_name", "last_name"):
        frame[f"{name}_norm"] = frame[name].str.lower()
    frame["updated_at"] = pd.to_datetime(frame["updated_at"])
    frame["extracted_at"] = pd.to_datetime(frame["extracted_at"])
    return frame


def winner(frame: pd.DataFrame, attribute: str, rule: Rule, ignore_empty: bool = True) -> pd.Series:
    chosen = choose(scalar_candidates(frame, attribute), rule, SOURCES, ignore_empty)
    return chosen.set_index("c360_id").loc["p1"]


def test_most_frequent_takes_the_value_most_records_agree_on() -> None:
    frame = records({"source": "crm", "source_record_id": "1", "last_name": "Smith", "updated_at": "2024-01-01"},
                    {"source": "shop", "source_record_id": "2", "last_name": "Smith", "updated_at": "2024-01-02"},
                    {"source": "loyalty", "source_record_id": "3", "last_name": "Smyth", "updated_at": "2024-06-01"})
    chosen = winner(frame, "last_name", Rule("most_frequent"))
    assert chosen["value"] == "Smith"
    assert chosen["rule"] == "most_frequent"
    assert json.loads(chosen["competing"]) == [{"value": "Smyth", "record": "loyalty:3"}]


def test_a_tie_on_frequency_goes_to_the_most_recent_record_and_the_rule_says_so() -> None:
    frame = records({"source": "crm", "source_record_id": "1", "middle_name": "Lee", "updated_at": "2024-01-01"},
                    {"source": "shop", "source_record_id": "2", "middle_name": "Leigh", "updated_at": "2024-03-01"})
    chosen = winner(frame, "middle_name", Rule("most_frequent"))
    assert (chosen["value"], chosen["source"]) == ("Leigh", "shop")
    assert chosen["rule"] == "most_frequent, tie broken by most_recent"


def test_most_recent_ignores_a_source_that_sends_an_older_value_later() -> None:
    # loyalty's batch lands last, but the value it carries was last changed before the CRM's
    frame = records({"source": "crm", "source_record_id": "1", "last_name": "Jones-Smith", "updated_at": "2024-09-01",
                     "extracted_at": "2024-09-02"},
                    {"source": "loyalty", "source_record_id": "9", "last_name": "Smith", "updated_at": "2024-02-01",
                     "extracted_at": "2024-12-24"})
    chosen = winner(frame, "last_name", Rule("most_recent"))
    assert (chosen["value"], chosen["source"]) == ("Jones-Smith", "crm")


def test_most_recent_falls_back_to_batch_time_when_no_record_says_when_it_changed() -> None:
    frame = records({"source": "crm", "source_record_id": "1", "last_name": "Old", "extracted_at": "2024-01-01"},
                    {"source": "shop", "source_record_id": "2", "last_name": "New", "extracted_at": "2024-05-01"})
    chosen = winner(frame, "last_name", Rule("most_recent"))
    assert chosen["value"] == "New"
    assert chosen["rule"] == "most_recent, tie broken by most_recent_batch"


def test_source_priority_trusts_the_listed_sources_in_order_and_the_others_after() -> None:
    frame = records({"source": "crm", "source_record_id": "1", "last_name": "Crm", "updated_at": "2024-09-01"},
                    {"source": "shop", "source_record_id": "2", "last_name": "Shop", "updated_at": "2024-01-01"},
                    {"source": "support", "source_record_id": "3", "last_name": "Support"})
    assert winner(frame, "last_name", Rule("source_priority", ("shop", "crm")))["value"] == "Shop"
    assert winner(frame, "last_name", Rule("source_priority", ("loyalty",)))["value"] == "Crm"  # then SOURCES order


def test_most_complete_takes_the_longest_value() -> None:
    frame = records({"source": "crm", "source_record_id": "1", "middle_name": "J"},
                    {"source": "shop", "source_record_id": "2", "middle_name": "James"},
                    {"source": "support", "source_record_id": "3", "middle_name": "J"})
    assert winner(frame, "middle_name", Rule("most_complete"))["value"] == "James"


def test_empty_values_never_win_unless_ignore_empty_is_off() -> None:
    frame = records({"source": "crm", "source_record_id": "1", "last_name": "Smith", "updated_at": "2024-01-01"},
                    {"source": "shop", "source_record_id": "2", "last_name": "  ", "updated_at": "2024-05-01"},
                    {"source": "support", "source_record_id": "3", "updated_at": "2024-06-01"})
    assert winner(frame, "last_name", Rule("most_recent"))["value"] == "Smith"
    cleared = winner(frame, "last_name", Rule("most_recent"), ignore_empty=False)
    assert cleared["value"] is None and cleared["source"] == "support"


def test_ties_are_broken_the_same_way_whatever_order_the_records_come_in() -> None:
    rows = [{"source": s, "source_record_id": str(i), "middle_name": name}
            for i, (s, name) in enumerate([("shop", "Ann"), ("crm", "Anne"), ("support", "Anna")])]
    results = {winner(records(*order), "middle_name", Rule("most_frequent"))["value"]
               for order in (rows, rows[::-1], [rows[1], rows[2], rows[0]])}
    assert results == {"Anne"}  # equal counts and times: the first source in SOURCES order (crm)


def test_a_nickname_counts_as_a_vote_for_the_full_name_the_person_also_has() -> None:
    frame = records({"source": "crm", "source_record_id": "1", "first_name": "Kim", "updated_at": "2024-05-01"},
                    {"source": "shop", "source_record_id": "2", "first_name": "Kim", "updated_at": "2024-06-01"},
                    {"source": "loyalty", "source_record_id": "3", "first_name": "Kimberly"})
    chosen = winner(frame, "first_name", Rule("most_frequent"))
    assert (chosen["value"], chosen["source"]) == ("Kimberly", "loyalty")


def test_a_name_is_shown_in_its_best_written_form() -> None:
    frame = records({"source": "crm", "source_record_id": "1", "last_name": "O'BRIEN", "updated_at": "2024-06-01"},
                    {"source": "shop", "source_record_id": "2", "last_name": "O'Brien"})
    assert winner(frame, "last_name", Rule("most_recent"))["value"] == "O'Brien"


def test_a_tied_name_goes_to_the_spelling_other_people_share_over_a_one_off_typo() -> None:
    frame = records({"source": "crm", "source_record_id": "1", "first_name": "Katehrine", "updated_at": "2024-06-01"},
                    {"source": "shop", "source_record_id": "2", "first_name": "Katherine", "updated_at": "2024-01-01"},
                    {"c360_id": "p2", "source": "crm", "source_record_id": "7", "first_name": "Katherine"})
    chosen = winner(frame, "first_name", Rule("most_frequent"))
    assert chosen["value"] == "Katherine"
    assert chosen["rule"] == "most_frequent, tie broken by common_spelling"


def test_a_person_built_alone_gets_the_spelling_everyone_shares_when_given_the_population() -> None:
    alone = records({"source": "crm", "source_record_id": "1", "first_name": "Katehrine", "updated_at": "2024-06-01"},
                    {"source": "shop", "source_record_id": "2", "first_name": "Katherine", "updated_at": "2024-01-01"})
    everyone = pd.DataFrame({"attribute": "first_name", "value": ["Katehrine", "Katherine"],
                             "norm": ["katehrine", "katherine"], "records": [1, 40]})
    population = spelling_population(everyone)
    assert population["first_name"].to_dict() == {"katehrine": 1, "katherine": 40}
    chosen = choose(scalar_candidates(alone, "first_name", population), Rule("most_frequent"), SOURCES, True)
    assert chosen.set_index("c360_id").loc["p1", "value"] == "Katherine"
    assert winner(alone, "first_name", Rule("most_frequent"))["value"] == "Katehrine"  # counted alone: the recent one


def contact_input(emails: list[dict[str, object]], addresses: list[dict[str, object]] | None = None) -> ProfileInput:
    base = {"c360_id": "p1", "updated_at": pd.Timestamp("2024-01-01"), "extracted_at": pd.Timestamp("2024-02-01")}
    email_frame = pd.DataFrame([{**base, "email_raw": e["email"], "email_key": e["email"],
                                 "domain": str(e["email"]).split("@")[-1], "is_valid": True, **e} for e in emails])
    address_columns = ["address_raw", "line1", "line2", "city", "region", "postal_code", "country", "is_parsed"]
    address_frame = pd.DataFrame([{**base, **a} for a in addresses or []],
                                 columns=[*base, "source", "source_record_id", *address_columns])
    phones = pd.DataFrame(columns=[*base, "source", "source_record_id", "phone_raw", "phone_e164", "phone_type",
                                   "is_valid"])
    person = records({"source": "crm", "source_record_id": "1", "first_name": "Ann"})
    return ProfileInput(person, email_frame, phones, address_frame)


def test_every_email_is_kept_and_a_placeholder_is_never_primary() -> None:
    data = contact_input([
        {"source": "crm", "source_record_id": "1", "email": "noemail@example.com"},
        {"source": "shop", "source_record_id": "2", "email": "noemail@example.com"},
        {"source": "support", "source_record_id": "3", "email": "ann@example.org"},
        {"source": "support", "source_record_id": "3", "email": "ann@@bad", "is_valid": False},
    ])
    profiles = build_profiles(data, {a: Rule("most_frequent") for a in ("first_name", "middle_name", "last_name",
                                     "name_suffix", "birth_date", "gender", "email", "phone", "address")},
                              SOURCES, placeholders=frozenset({"noemail@example.com"}))
    points = profiles.contact_points.set_index("value")
    assert points.loc["noemail@example.com", "status"] == PLACEHOLDER
    assert points.loc["noemail@example.com", "sources"] == "crm,shop"
    assert points.loc["ann@@bad", "status"] == "invalid"
    assert points.loc["ann@example.org", "is_primary"] and points.loc["ann@example.org", "status"] == OK
    assert profiles.golden.loc[0, "email"] == "ann@example.org"


def test_an_address_with_the_unit_in_line_one_is_the_same_address_as_one_with_it_apart() -> None:
    parts = {"city": "BOSTON", "region": "MA", "postal_code": "02108", "country": "US", "is_parsed": True}
    data = contact_input([], [
        {"source": "crm", "source_record_id": "1", "address_raw": "1 Main St Apt 2", "line1": "1 MAIN ST APT 2",
         "line2": None, **parts},
        {"source": "shop", "source_record_id": "2", "address_raw": "1 Main St, Apt 2", "line1": "1 MAIN ST",
         "line2": "APT 2", **parts},
    ])
    points = contact_candidates(data, "address", frozenset())
    assert points["key"].nunique() == 1


def test_the_content_fingerprint_changes_with_any_attribute_and_only_then() -> None:
    golden = pd.DataFrame({"c360_id": ["p1", "p2"], "email": ["a@x.org", "b@x.org"]})
    empty = pd.DataFrame(columns=["c360_id"])
    before = content_hashes(golden, empty, empty)
    assert before.equals(content_hashes(golden.copy(), empty, empty))
    changed = content_hashes(golden.assign(email=["a@x.org", "c@x.org"]), empty, empty)
    assert changed["p1"] == before["p1"] and changed["p2"] != before["p2"]
    insights = pd.DataFrame({"c360_id": ["p1"], "insight": ["order_count"], "value": ["1"], "number": [1.0]})
    assert content_hashes(golden, empty, insights)["p1"] != before["p1"]


def test_a_profiles_fingerprint_does_not_depend_on_the_profiles_it_is_built_with() -> None:
    golden = pd.DataFrame({"c360_id": ["p1", "p2"], "first_seen": pd.to_datetime(
        ["2024-01-05 00:00:00", "2024-02-01 09:30:00.250000"], format="ISO8601")})
    empty = pd.DataFrame(columns=["c360_id"])
    alone = content_hashes(golden.iloc[:1], empty, empty)["p1"]  # built alone, its time of day is all midnight
    assert content_hashes(golden, empty, empty)["p1"] == alone


def test_a_name_only_ever_written_in_one_case_is_shown_capitalised_as_names_are() -> None:
    frame = records({"source": "crm", "source_record_id": "1", "last_name": "MCDONALD"},
                    {"source": "shop", "source_record_id": "2", "last_name": "mcdonald"})
    assert winner(frame, "last_name", Rule("most_frequent"))["value"] == "McDonald"


def test_a_profile_and_its_contact_points_list_each_source_once_in_name_order() -> None:
    data = contact_input([{"source": "support", "source_record_id": "1", "email": "ann@example.org"},
                          {"source": "crm", "source_record_id": "2", "email": "ann@example.org"},
                          {"source": "support", "source_record_id": "3", "email": "ann@example.org"}])
    data.records = records({"source": "support", "source_record_id": "1", "first_name": "Ann"},
                           {"source": "crm", "source_record_id": "2", "first_name": "Ann"},
                           {"source": "support", "source_record_id": "3", "first_name": "Ann"},
                           {"source": "shop", "source_record_id": "4", "first_name": "Bo", "c360_id": "p2"})
    profiles = build_profiles(data, {a: Rule("most_frequent") for a in ("first_name", "middle_name", "last_name",
                                     "name_suffix", "birth_date", "gender", "email", "phone", "address")}, SOURCES)
    assert profiles.golden.set_index("c360_id")["sources"].to_dict() == {"p1": "crm,support", "p2": "shop"}
    assert profiles.contact_points["sources"].tolist() == ["crm,support"]

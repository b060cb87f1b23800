"""Staging: how a source's rows land in the canonical model through its mapping."""

import datetime as dt
import json

import pandas as pd
import pytest

from c360_pipelines.config import ConfigError, SourceConfig
from c360_pipelines.core.conform import RAW_JSON, ROW_NUMBER, check_mapped_columns, stage_batch

LOADED = dt.datetime(2024, 7, 1, 12, 0)


def rows(*records: dict[str, str]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(records).fillna("").astype("string")
    frame[ROW_NUMBER] = range(1, len(frame) + 1)
    frame[RAW_JSON] = [json.dumps(r) for r in records]
    return frame


def person_source(**fields: object) -> SourceConfig:
    return SourceConfig.model_validate({"name": "crm", "path": "x.csv", "id": "Id", "fields": fields})


def test_each_row_is_one_individual_keyed_by_source_and_record_id() -> None:
    staged = stage_batch(rows({"Id": "1", "F": "ann"}), person_source(first_name="F"), "b1", LOADED)
    individual = staged.tables["individual"]
    assert individual.loc[0, ["source", "source_record_id", "batch_id", "row_number"]].tolist() == ["crm", "1", "b1", 1]
    assert individual.loc[0, ["first_name", "first_name_raw", "first_name_norm"]].tolist() == ["Ann", "ann", "ann"]


def test_a_full_name_is_split_when_first_and_last_are_absent() -> None:
    source = person_source(first_name="F", last_name="L", full_name="Name")
    staged = stage_batch(
        rows({"Id": "1", "F": "", "L": "", "Name": "Smith, John Q"}, {"Id": "2", "F": "Ann", "L": "Lee", "Name": "Annie Lee"}),
        source, "b1", LOADED,
    )
    individual = staged.tables["individual"]
    assert individual[["first_name", "middle_name", "last_name"]].values.tolist() == [["John", "Q", "Smith"], ["Ann", pd.NA, "Lee"]]
    assert individual.loc[0, "full_name_raw"] == "Smith, John Q"


def test_several_email_columns_become_several_contact_points() -> None:
    staged = stage_batch(rows({"Id": "1", "E1": "a@x.com", "E2": "b@y.com"}, {"Id": "2", "E1": "", "E2": "c@z.com"}),
                         person_source(email=["E1", "E2"]), "b1", LOADED)
    emails = staged.tables["contact_point_email"]
    assert emails[["source_record_id", "source_column", "email"]].values.tolist() == [
        ["1", "E1", "a@x.com"], ["1", "E2", "b@y.com"], ["2", "E2", "c@z.com"]]


def test_joined_columns_and_constants_build_one_address() -> None:
    source = person_source(address_line1={"columns": ["No", "Street"], "join": " "}, city="City", postal_code="Zip",
                           country={"value": "US"})
    staged = stage_batch(rows({"Id": "1", "No": "12", "Street": "North Main Street", "City": "Springfield", "Zip": "2134"}),
                         source, "b1", LOADED)
    address = staged.tables["contact_point_address"].iloc[0]
    assert [address.line1, address.city, address.postal_code, address.country] == ["12 N MAIN ST", "SPRINGFIELD", "02134", "US"]
    assert address.address_raw == "12 North Main Street, Springfield, 2134, US"


def test_a_one_line_address_is_parsed_into_parts() -> None:
    staged = stage_batch(rows({"Id": "1", "A": "12 Main Street Apt 4, Springfield, Illinois 62704"}),
                         person_source(address="A"), "b1", LOADED)
    address = staged.tables["contact_point_address"].iloc[0]
    assert [address.line1, address.line2, address.city, address.region, address.postal_code] == [
        "12 MAIN ST", "APT 4", "SPRINGFIELD", "IL", "62704"]


def test_an_unparseable_value_keeps_its_raw_text_and_a_flag_and_the_row_goes_on() -> None:
    source = person_source(birth_date={"column": "DOB", "format": "%Y-%m-%d"}, phone="P")
    staged = stage_batch(rows({"Id": "1", "DOB": "1980-02-30", "P": "12"}), source, "b1", LOADED)
    individual, phone = staged.tables["individual"].iloc[0], staged.tables["contact_point_phone"].iloc[0]
    assert individual.birth_date is None and individual.birth_date_raw == "1980-02-30" and not individual.birth_date_valid
    assert phone.phone_raw == "12" and not phone.is_valid
    assert staged.quarantine.empty


def test_a_row_without_its_key_is_quarantined_with_the_reason_and_its_raw_row() -> None:
    staged = stage_batch(rows({"Id": "1", "F": "Ann"}, {"Id": " ", "F": "Bob"}), person_source(first_name="F"), "b1", LOADED)
    assert staged.tables["individual"]["source_record_id"].tolist() == ["1"]
    quarantined = staged.quarantine.iloc[0]
    assert quarantined.row_number == 2 and "missing record key (column 'Id')" in quarantined.reason
    assert json.loads(quarantined.raw) == {"Id": " ", "F": "Bob"}


def test_a_duplicate_key_in_one_batch_keeps_the_latest_version_and_quarantines_the_other() -> None:
    source = SourceConfig.model_validate({"name": "crm", "path": "x", "id": "Id", "updated_at": "U", "fields": {"first_name": "F"}})
    staged = stage_batch(rows({"Id": "1", "F": "New", "U": "2024-05-01"}, {"Id": "1", "F": "Old", "U": "2024-01-01"}),
                         source, "b1", LOADED)
    assert staged.tables["individual"]["first_name"].tolist() == ["New"]
    assert staged.quarantine.loc[0, "row_number"] == 2
    assert "superseded by row 1" in staged.quarantine.loc[0, "reason"]


def test_identifiers_are_normalised_and_typed() -> None:
    source = SourceConfig.model_validate({"name": "loyalty", "path": "x", "id": "Id", "identifiers": {"loyalty_number": "No"}})
    staged = stage_batch(rows({"Id": "1", "No": "lm-7001 2"}), source, "b1", LOADED)
    identifier = staged.tables["party_identification"].iloc[0]
    assert [identifier.identification_type, identifier.identifier_raw, identifier.identifier] == ["loyalty_number", "lm-7001 2", "LM70012"]


def test_engagements_point_at_their_person_record_and_keep_every_field() -> None:
    source = SourceConfig.model_validate({
        "name": "orders", "kind": "engagement", "of": "shop", "path": "x", "id": "order_id", "person_id": "cid",
        "occurred_at": "at", "fields": {"amount": "total", "currency": "cur", "coupon": "code", "channel": {"value": "Web"}},
    })
    staged = stage_batch(rows({"order_id": "O1", "cid": "C9", "at": "2024-03-01T10:00:00Z", "total": "$1,234.50", "cur": "usd", "code": "X"},
                              {"order_id": "O2", "cid": "", "at": "", "total": "", "cur": "", "code": ""}),
                         source, "b1", LOADED)
    order = staged.tables["engagement"].iloc[0]
    assert [order.engagement_id, order.person_source, order.person_record_id, order.engagement_type] == ["O1", "shop", "C9", "orders"]
    assert order.amount == 1234.5 and order.currency == "USD" and order.channel == "web"
    assert order.occurred_at == pd.Timestamp("2024-03-01 10:00:00")
    assert json.loads(order.attributes)["coupon"] == "X"
    assert "missing person key (column 'cid')" in staged.quarantine.loc[0, "reason"]


def test_a_mapped_column_missing_from_the_data_names_the_source_key_and_column() -> None:
    with pytest.raises(ConfigError, match=r"source 'crm', key 'fields.email': column 'Email' not found in x.csv"):
        check_mapped_columns(person_source(email="Email"), ["Id", "Mail"], "x.csv")


def test_a_large_batch_staged_on_several_cores_equals_the_single_core_result(monkeypatch: pytest.MonkeyPatch) -> None:
    from c360_pipelines.core import conform

    monkeypatch.setattr(conform, "PARALLEL_MIN_ROWS", 10)
    source = person_source(first_name="F", email="E", phone="P", address="A")
    batch = rows(*({"Id": str(i), "F": f"name{i % 7}", "E": f"p{i}@x.com", "P": f"415555{i:04d}",
                    "A": f"{i} Main Street, Springfield, IL 62704"} for i in range(300)))
    single = stage_batch(batch, source, "b1", LOADED, workers=1)
    several = stage_batch(batch, source, "b1", LOADED, workers=3)
    for table in single.tables:
        pd.testing.assert_frame_equal(single.tables[table].reset_index(drop=True),
                                      several.tables[table].reset_index(drop=True), check_dtype=False)
    assert len(several.tables["contact_point_phone"]) == 300

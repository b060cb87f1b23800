"""c360.yaml: the user-facing contract, and errors that name the file, the source and the key."""

from pathlib import Path

import pytest

from c360_pipelines.config import ConfigError, FieldSpec, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c360.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def error_for(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    return str(caught.value)


def test_the_documented_example_loads_with_every_field_form(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            """
warehouse: sqlite:///.c360/warehouse.db
sources:
  - name: crm
    path: data/crm/*.csv
    format: csv
    id: Id
    updated_at: LastModifiedDate
    default_country: US
    fields:
      first_name: FirstName
      full_name: name
      email: [Email, AltEmail]
      address_line1: {columns: [street_number, address_1], join: " "}
      country: {value: US}
      birth_date: {column: Birthdate, format: "%Y-%m-%d"}
    identifiers:
      loyalty_number: member_no
  - name: shop_orders
    kind: engagement
    of: crm
    path: data/shop/orders.csv
    id: order_id
    person_id: customer_id
    occurred_at: ordered_at
    fields: {amount: total_amount, currency: currency, channel: {value: web}}
""",
        )
    )
    crm = config.source("crm")
    assert crm.fields["email"] == FieldSpec(columns=("Email", "AltEmail"))
    assert crm.fields["address_line1"].join == " "
    assert crm.fields["country"].value == "US"
    assert crm.fields["birth_date"].format == ("%Y-%m-%d",)
    assert config.source("shop_orders").of == "crm"
    assert config.warehouse == f"sqlite:///{tmp_path.resolve() / '.c360' / 'warehouse.db'}"


def test_an_unknown_canonical_field_names_the_source_and_the_field(tmp_path: Path) -> None:
    message = error_for(tmp_path, "sources:\n  - name: crm\n    path: a.csv\n    id: Id\n    fields: {emial: Email}\n")
    assert "c360.yaml" in message and "sources[0] (crm)" in message and "emial" in message


def test_a_missing_record_key_is_reported_by_key(tmp_path: Path) -> None:
    message = error_for(tmp_path, "sources:\n  - name: crm\n    path: a.csv\n")
    assert "sources[0] (crm).id: required key is missing" in message


def test_a_misspelt_top_level_key_is_unknown(tmp_path: Path) -> None:
    message = error_for(tmp_path, "warehose: x\nsources:\n  - {name: crm, path: a.csv, id: Id}\n")
    assert "warehose: unknown key" in message


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    message = error_for(tmp_path, "sources: [\n  - name: crm\n")
    assert "malformed YAML" in message and "line 2" in message


def test_a_missing_config_file_says_how_to_point_at_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found.*C360_CONFIG"):
        load_config(tmp_path / "nope.yaml")


def test_source_names_must_be_lowercase_identifiers_and_unique(tmp_path: Path) -> None:
    assert "sources[0] (CRM).name: String should match pattern" in error_for(tmp_path, "sources:\n  - {name: CRM, path: a.csv, id: Id}\n")
    message = error_for(tmp_path, "sources:\n  - {name: crm, path: a.csv, id: Id}\n  - {name: crm, path: b.csv, id: Id}\n")
    assert "repeated: crm" in message


def test_an_engagement_source_must_belong_to_a_person_source(tmp_path: Path) -> None:
    message = error_for(
        tmp_path,
        "sources:\n  - {name: crm, path: a.csv, id: Id}\n"
        "  - {name: orders, kind: engagement, of: shop, path: o.csv, id: order_id, person_id: cid}\n",
    )
    assert "'of: shop' does not name a person source" in message


def test_a_sql_source_needs_a_url_and_a_query_or_table(tmp_path: Path) -> None:
    message = error_for(tmp_path, "sources:\n  - {name: crm, format: sql, url: 'sqlite://', id: Id}\n")
    assert "exactly one of 'query' or 'table'" in message


def test_a_field_mapping_needs_exactly_one_way_to_read_it(tmp_path: Path) -> None:
    message = error_for(
        tmp_path, "sources:\n  - name: crm\n    path: a.csv\n    id: Id\n    fields: {city: {column: C, value: X}}\n"
    )
    assert "fields.city" in message and "exactly one of" in message


def test_the_warehouse_can_be_overridden_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("C360_WAREHOUSE", "postgresql+psycopg://postgres@127.0.0.1/other")
    config = load_config(write(tmp_path, "sources:\n  - {name: crm, path: a.csv, id: Id}\n"))
    assert config.warehouse == "postgresql+psycopg://postgres@127.0.0.1/other"
